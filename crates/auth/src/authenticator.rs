//! Password sign-in and the administrative paths that set passwords.
//!
//! Timing is kept uniform (DESIGN.md §1, "no user enumeration by text or timing"): every
//! attempt spends one argon2 verification, whether the name was malformed, unknown,
//! disabled or real. Hashing runs on tokio's blocking pool behind a semaphore, so the
//! memory in use is bounded by `memory_kib × max_concurrent_hashes`.

use std::path::PathBuf;
use std::sync::Arc;

use directory::{Directory, DirectoryError, UserRecord};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::{
    Argon2Params, BadInput, InvalidParams, PasswordHasher, UsernamePolicy, prepare_password,
};

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The canonical user name.
    pub user: String,
    /// The user's Maildir.
    pub maildir: PathBuf,
}

/// Why a sign-in failed.
///
/// The server maps every [`AuthFailure::Rejected`] to the same `-ERR [AUTH]` text and
/// [`AuthFailure::Unavailable`] to `-ERR [SYS/TEMP]` (RFC 3206); the [`Reason`] is for
/// the audit log only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The credentials were refused.
    #[error("authentication failed")]
    Rejected(Reason),
    /// The directory or the hashing machinery failed; try again later.
    #[error("authentication temporarily unavailable")]
    Unavailable,
}

/// The private reason behind [`AuthFailure::Rejected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The user name or password was malformed (see [`BadInput`]).
    BadInput,
    /// No such user.
    UnknownUser,
    /// The password did not match.
    BadPassword,
    /// The password matched, but the account is disabled.
    Disabled,
}

impl Reason {
    /// A stable snake_case name for the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadInput => "bad_input",
            Reason::UnknownUser => "unknown_user",
            Reason::BadPassword => "bad_password",
            Reason::Disabled => "disabled",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an administrative operation (CLI) failed. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The user name or password was refused, with the reason.
    #[error("bad input: {0}")]
    BadInput(String),
    /// A user with this name already exists.
    #[error("user already exists")]
    Exists,
    /// There is no such user.
    #[error("no such user")]
    NoSuchUser,
    /// The directory or the hashing machinery failed.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<DirectoryError> for AdminError {
    fn from(err: DirectoryError) -> Self {
        match err {
            DirectoryError::Exists => AdminError::Exists,
            DirectoryError::Unavailable(why) => AdminError::Unavailable(why),
        }
    }
}

fn bad_name(err: BadInput) -> AdminError {
    AdminError::BadInput(format!("user name: {err}"))
}

fn bad_password(err: BadInput) -> AdminError {
    AdminError::BadInput(format!("password: {err}"))
}

/// Decides who someone is, from a user name and a password.
pub struct Authenticator<D> {
    dir: Arc<D>,
    policy: UsernamePolicy,
    hasher: Arc<PasswordHasher>,
    hash_slots: Arc<Semaphore>,
}

// By hand: a derive would demand `D: Clone`, but only the `Arc` is cloned.
impl<D> Clone for Authenticator<D> {
    fn clone(&self) -> Self {
        Authenticator {
            dir: Arc::clone(&self.dir),
            policy: self.policy.clone(),
            hasher: Arc::clone(&self.hasher),
            hash_slots: Arc::clone(&self.hash_slots),
        }
    }
}

impl<D: Directory> Authenticator<D> {
    /// An authenticator over `dir`. At most `max_concurrent_hashes` (at least 1) argon2
    /// computations run at once across all clones.
    ///
    /// Computes the dummy hash, so it blocks for one hash's time; call it at start-up.
    pub fn new(
        dir: Arc<D>,
        policy: UsernamePolicy,
        params: Argon2Params,
        max_concurrent_hashes: usize,
    ) -> Result<Self, InvalidParams> {
        Ok(Authenticator {
            dir,
            policy,
            hasher: Arc::new(PasswordHasher::new(params)?),
            hash_slots: Arc::new(Semaphore::new(max_concurrent_hashes.max(1))),
        })
    }

    /// The user name policy, for callers that need the canonical name first (for
    /// example to derive a Maildir path). Canonicalisation is idempotent.
    pub fn policy(&self) -> &UsernamePolicy {
        &self.policy
    }

    /// The directory behind this authenticator.
    pub fn directory(&self) -> &Arc<D> {
        &self.dir
    }

    /// Checks a user name and password, as USER/PASS, PLAIN and LOGIN present them.
    ///
    /// Every outcome spends one argon2 verification, so the time taken does not say
    /// which [`Reason`] applied. A password that does not match a disabled account is
    /// reported as [`Reason::BadPassword`]; [`Reason::Disabled`] means the password was
    /// right. On success, a hash with outdated parameters is replaced (best effort).
    pub async fn verify_password(
        &self,
        raw_user: &str,
        raw_password: &[u8],
    ) -> Result<Identity, AuthFailure> {
        let (user, password) = match (
            self.policy.canonical(raw_user),
            prepare_password(raw_password),
        ) {
            (Ok(user), Ok(password)) => (user, password),
            (_, password) => {
                // Spend a verification anyway, so malformed input is not a fast oracle.
                let password = password.unwrap_or_else(|_| Zeroizing::new(String::new()));
                let _ = self.hashing(move |h| h.verify_dummy(&password)).await;
                return Err(AuthFailure::Rejected(Reason::BadInput));
            }
        };

        let record = match self.dir.find_user(&user).await {
            Ok(record) => record,
            Err(err) => {
                tracing::warn!(error = %err, "directory lookup failed during sign-in");
                return Err(AuthFailure::Unavailable);
            }
        };
        let Some(record) = record else {
            self.hashing(move |h| h.verify_dummy(&password))
                .await
                .ok_or(AuthFailure::Unavailable)?;
            return Err(AuthFailure::Rejected(Reason::UnknownUser));
        };

        let UserRecord {
            name,
            password_hash,
            enabled,
            maildir,
        } = record;
        let (matched, stale, password) = self
            .hashing(move |h| {
                let matched = h.verify(&password_hash, &password);
                (matched, matched && h.needs_rehash(&password_hash), password)
            })
            .await
            .ok_or(AuthFailure::Unavailable)?;
        if !matched {
            return Err(AuthFailure::Rejected(Reason::BadPassword));
        }
        if !enabled {
            return Err(AuthFailure::Rejected(Reason::Disabled));
        }
        if stale {
            self.rehash(&name, password).await;
        }
        Ok(Identity {
            user: name,
            maildir: PathBuf::from(maildir),
        })
    }

    /// Sets a user's password (CLI `user passwd`). `false` if there is no such user.
    ///
    /// The name goes through the policy again, which leaves a canonical name unchanged.
    pub async fn set_password(
        &self,
        canonical_user: &str,
        raw_password: &[u8],
    ) -> Result<bool, AdminError> {
        let user = self.policy.canonical(canonical_user).map_err(bad_name)?;
        let password = prepare_password(raw_password).map_err(bad_password)?;
        let hash = self.hash(password).await?;
        Ok(self.dir.set_password_hash(&user, &hash).await?)
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
        let password_hash = self.hash(password).await?;
        let record = UserRecord {
            name,
            password_hash,
            enabled: true,
            maildir,
        };
        self.dir.add_user(&record).await?;
        Ok(record.name)
    }

    async fn hash(&self, password: Zeroizing<String>) -> Result<String, AdminError> {
        self.hashing(move |h| h.hash(&password))
            .await
            .ok_or_else(|| AdminError::Unavailable("password hashing failed".into()))
    }

    /// Replaces an outdated hash after a successful sign-in; failures only cost the
    /// upgrade, never the sign-in.
    async fn rehash(&self, user: &str, password: Zeroizing<String>) {
        let Some(hash) = self.hashing(move |h| h.hash(&password)).await else {
            return;
        };
        if let Err(err) = self.dir.set_password_hash(user, &hash).await {
            tracing::warn!(error = %err, "could not store an upgraded password hash");
        }
    }

    /// Runs `work` on the blocking pool once a hashing slot is free. `None` if the task
    /// panicked (it holds no secret in its panic message) or the runtime is shutting down.
    async fn hashing<T, F>(&self, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&PasswordHasher) -> T + Send + 'static,
    {
        let permit = Arc::clone(&self.hash_slots).acquire_owned().await.ok()?;
        let hasher = Arc::clone(&self.hasher);
        // The permit moves into the task: if the caller is cancelled mid-hash, the slot
        // stays taken until the computation really ends, so the memory bound holds.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&hasher)
        })
        .await
        .ok()
    }
}
