//! The mechanisms that do not present a password: SCRAM (keys looked up, proof checked
//! by the `sasl` crate), EXTERNAL (a TLS client certificate) and APOP (an MD5 digest).

use std::path::PathBuf;

use directory::Directory;
use sasl::ScramKeys;

use super::{AuthFailure, Authenticator, Identity, Reason, ScramLookup};

impl<D: Directory> Authenticator<D> {
    /// The SCRAM keys to run an exchange with. An unknown, malformed or keyless user
    /// gets fake keys that look the same from outside, and fails only at the proof.
    pub async fn scram_lookup(&self, raw_user: &str) -> Result<ScramLookup, AuthFailure> {
        let Some(scram) = &self.scram else {
            return Err(AuthFailure::Unavailable);
        };
        let fake = |name: &str| ScramKeys::fake(&scram.server_secret, name, scram.iterations);
        let Ok(user) = self.policy.canonical(raw_user) else {
            return Ok(ScramLookup {
                keys: fake(raw_user),
                account: None,
                reason_if_absent: Reason::BadInput,
            });
        };
        let record = self.lookup(&user).await?;
        let Some(record) = record else {
            return Ok(ScramLookup {
                keys: fake(&user),
                account: None,
                reason_if_absent: Reason::UnknownUser,
            });
        };
        match record.scram_sha256.as_deref().and_then(ScramKeys::parse) {
            Some(keys) => Ok(ScramLookup {
                keys,
                account: Some((record.name, record.enabled, record.maildir)),
                reason_if_absent: Reason::UnknownUser,
            }),
            // No keys yet (an imported account): the exchange cannot succeed until a
            // plaintext-style sign-in derives them.
            None => Ok(ScramLookup {
                keys: fake(&user),
                account: None,
                reason_if_absent: Reason::BadPassword,
            }),
        }
    }

    /// The second half of a SCRAM sign-in: the proof was checked against
    /// `lookup.keys`; decide about the account.
    pub fn scram_confirm(
        &self,
        lookup: ScramLookup,
        authzid: Option<&str>,
        proof_ok: bool,
    ) -> Result<Identity, AuthFailure> {
        let Some((user, enabled, maildir)) = lookup.account else {
            return Err(AuthFailure::Rejected(lookup.reason_if_absent));
        };
        if !proof_ok {
            return Err(AuthFailure::Rejected(Reason::BadPassword));
        }
        if !enabled {
            return Err(AuthFailure::Rejected(Reason::Disabled));
        }
        if !self.authzid_allowed(authzid, &user) {
            return Err(AuthFailure::Rejected(Reason::AuthzidMismatch));
        }
        Ok(Identity {
            user,
            maildir: PathBuf::from(maildir),
        })
    }

    /// EXTERNAL: `cert_user` is the user name the verified TLS client certificate maps
    /// to (by the configured rule). The account must exist and be enabled.
    pub async fn verify_external(
        &self,
        cert_user: &str,
        authzid: Option<&str>,
    ) -> Result<Identity, AuthFailure> {
        let Ok(user) = self.policy.canonical(cert_user) else {
            return Err(AuthFailure::Rejected(Reason::BadInput));
        };
        let record = self.lookup(&user).await?;
        let Some(record) = record else {
            return Err(AuthFailure::Rejected(Reason::UnknownUser));
        };
        if !record.enabled {
            return Err(AuthFailure::Rejected(Reason::Disabled));
        }
        if !self.authzid_allowed(authzid, &record.name) {
            return Err(AuthFailure::Rejected(Reason::AuthzidMismatch));
        }
        Ok(Identity {
            user: record.name,
            maildir: PathBuf::from(record.maildir),
        })
    }

    /// Checks an APOP digest over `timestamp`. Users without an APOP secret fail with
    /// the same public answer as any other failure.
    pub async fn verify_apop(
        &self,
        raw_user: &str,
        timestamp: &str,
        digest: &str,
    ) -> Result<Identity, AuthFailure> {
        let Some(vault) = &self.apop else {
            return Err(AuthFailure::Rejected(Reason::UnknownUser));
        };
        let Ok(user) = self.policy.canonical(raw_user) else {
            return Err(AuthFailure::Rejected(Reason::BadInput));
        };
        let record = self.lookup(&user).await?;
        let Some(record) = record else {
            return Err(AuthFailure::Rejected(Reason::UnknownUser));
        };
        let Some(secret) = record
            .apop_secret
            .as_deref()
            .and_then(|sealed| vault.open(&record.name, sealed))
        else {
            return Err(AuthFailure::Rejected(Reason::NoApopSecret));
        };
        if !crate::apop::digest_matches(timestamp, &secret, digest) {
            return Err(AuthFailure::Rejected(Reason::BadPassword));
        }
        if !record.enabled {
            return Err(AuthFailure::Rejected(Reason::Disabled));
        }
        Ok(Identity {
            user: record.name,
            maildir: PathBuf::from(record.maildir),
        })
    }
}
