//! Administrative paths (CLI): set passwords and APOP secrets, add and import users,
//! and the limits on what imported hashes may cost.

use std::sync::Arc;

use directory::{Directory, UserRecord};

use super::{AdminError, Authenticator, bad_name, bad_password};
use crate::import::{CostlyHashes, HashLimits, ImportError, Imported};
use crate::legacy::{HashBounds, Parsed};
use crate::prepare_password;

impl<D: Directory> Authenticator<D> {
    /// Sets the import bounds and the hashing pool's memory budget.
    pub fn with_hash_limits(mut self, limits: HashLimits) -> Self {
        self.hasher = Arc::new((*self.hasher).clone().with_import_bounds(limits.import));
        if let Some(budget) = limits.memory_budget_kib {
            self.pool.set_budget_kib(budget);
        }
        self
    }

    /// The bounds [`Authenticator::import_user`] holds hashes to.
    pub fn import_bounds(&self) -> HashBounds {
        self.hasher.import_bounds()
    }

    /// Sets a user's password (CLI `user passwd`). `false` if there is no such user.
    ///
    /// The name goes through the policy again, which leaves a canonical name unchanged.
    /// The directory records the password as set now and no longer the imported one.
    pub async fn set_password(
        &self,
        canonical_user: &str,
        raw_password: &[u8],
    ) -> Result<bool, AdminError> {
        let user = self.policy.canonical(canonical_user).map_err(bad_name)?;
        let password = prepare_password(raw_password).map_err(bad_password)?;
        let (hash, scram) = self.credentials(password).await?;
        Ok(self
            .dir
            .change_password(&user, &hash, scram.as_deref())
            .await?)
    }

    /// Adds an enabled user (CLI `user add`) and returns its canonical name.
    pub async fn add_user(
        &self,
        raw_user: &str,
        raw_password: &[u8],
        maildir: String,
    ) -> Result<String, AdminError> {
        let name = self.policy.canonical(raw_user).map_err(bad_name)?;
        let password = prepare_password(raw_password).map_err(bad_password)?;
        let (password_hash, scram_sha256) = self.credentials(password).await?;
        self.insert(name, password_hash, scram_sha256, maildir, false)
            .await
    }

    /// Adds a user brought from another server (CLI `user import`). A legacy hash is
    /// stored as it is, to be upgraded to argon2id (with SCRAM keys) at the first
    /// successful sign-in; a cleartext entry is hashed now and never stored as given.
    /// Either way the account is marked imported (its password was chosen elsewhere,
    /// at a time unknown) until a new password is set.
    ///
    /// A hash whose memory or estimated time is above the import bounds
    /// ([`Authenticator::import_bounds`]) is refused unless `costly` allows it; sign-in
    /// checks whatever import took.
    pub async fn import_user(
        &self,
        raw_user: &str,
        credential: Parsed,
        maildir: String,
        costly: CostlyHashes,
    ) -> Result<Imported, ImportError> {
        let name = self.policy.canonical(raw_user).map_err(bad_name)?;
        let mut above_bounds = None;
        let (password_hash, scram_sha256) = match credential {
            Parsed::Hash(stored) => {
                if let Err(exceeds) = stored.check_bounds(&self.hasher.import_bounds()) {
                    if costly == CostlyHashes::Refuse {
                        return Err(ImportError::Costly(exceeds));
                    }
                    above_bounds = Some(exceeds);
                }
                (stored.as_stored().to_owned(), None)
            }
            Parsed::Cleartext(plain) => {
                let password = prepare_password(plain.as_bytes()).map_err(bad_password)?;
                self.credentials(password).await?
            }
        };
        let name = self
            .insert(name, password_hash, scram_sha256, maildir, true)
            .await?;
        Ok(Imported { name, above_bounds })
    }

    /// Sets (or with `None` clears) a user's APOP secret (CLI `user apop-secret`).
    /// `false` if there is no such user.
    pub async fn set_apop_secret(
        &self,
        canonical_user: &str,
        raw_secret: Option<&[u8]>,
    ) -> Result<bool, AdminError> {
        let user = self.policy.canonical(canonical_user).map_err(bad_name)?;
        let sealed = match raw_secret {
            None => None,
            Some(raw) => {
                if !self.apop {
                    return Err(AdminError::Unavailable("APOP is not enabled".into()));
                }
                let keys = self.keys.current();
                // Kept exactly as typed (no SASLprep): APOP clients hash the raw bytes.
                let secret = std::str::from_utf8(raw)
                    .ok()
                    .filter(|s| !s.is_empty() && s.len() <= crate::MAX_PASSWORD_BYTES)
                    .ok_or_else(|| {
                        AdminError::BadInput("APOP secret: empty, too long or not UTF-8".into())
                    })?;
                Some(
                    keys.apop
                        .seal(&user, secret)
                        .ok_or_else(|| AdminError::Unavailable("encryption failed".into()))?,
                )
            }
        };
        Ok(self.dir.set_apop_secret(&user, sealed.as_deref()).await?)
    }

    /// Stores a new, enabled user (made here, or `imported`); returns the canonical name.
    async fn insert(
        &self,
        name: String,
        password_hash: String,
        scram_sha256: Option<String>,
        maildir: String,
        imported: bool,
    ) -> Result<String, AdminError> {
        let record = UserRecord {
            name,
            password_hash,
            enabled: true,
            maildir,
            scram_sha256,
            apop_secret: None,
            allowed_networks: None,
        };
        if imported {
            self.dir.import_user(&record).await?;
        } else {
            self.dir.add_user(&record).await?;
        }
        Ok(record.name)
    }
}
