//! The mechanisms that do not present a password: SCRAM (keys looked up, proof checked
//! by the `sasl` crate), EXTERNAL (a TLS client certificate) and APOP (an MD5 digest).
//! Each runs between the guard's `admit` and `settle`, as passwords do.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use directory::{Directory, UserRecord};
use sasl::ScramKeys;

use super::{AuthFailure, Authenticator, Identity, Reason, ScramAccount, ScramLookup};

fn identity(record: UserRecord) -> Identity {
    Identity {
        user: record.name,
        maildir: PathBuf::from(record.maildir),
        allowed_networks: record.allowed_networks,
        new_network: false,
        read_only: false,
    }
}

impl<D: Directory> Authenticator<D> {
    /// The SCRAM keys to run an exchange with. An unknown, malformed or keyless user
    /// gets fake keys that look the same from outside and fail only at the proof. What
    /// the client is shown (salt, iteration count) depends on the name alone, never on
    /// the guard: an attempt the guard refuses is shown what any other would be, and
    /// refused at the proof.
    pub async fn scram_lookup(
        &self,
        raw_user: &str,
        source: IpAddr,
    ) -> Result<ScramLookup, AuthFailure> {
        let Some(scram) = &self.scram else {
            return Err(AuthFailure::Unavailable);
        };
        // Fakes are keyed by the name the guard counts under: the canonical one, or
        // (bounded) the name as given when it has none.
        let name = self.guard_name(raw_user);
        let admitted = match self.guard.admit(&name, source).await {
            Ok(ticket) => Ok(ticket),
            Err(AuthFailure::Rejected(reason)) => Err(reason),
            Err(other) => return Err(other),
        };
        let iterations = self.fake_iterations(scram, &name).await;
        let fake = || ScramKeys::fake(&scram.server_secret, &name, iterations);
        let record = match self.policy.canonical(raw_user) {
            Ok(user) => self.lookup(&user).await?,
            Err(_) => None,
        };
        let bad_input = self.policy.canonical(raw_user).is_err();
        let (keys, account, reason) = match record {
            None if bad_input => (fake(), None, Reason::BadInput),
            None => (fake(), None, Reason::UnknownUser),
            Some(record) => match record.scram_sha256.as_deref().and_then(ScramKeys::parse) {
                Some(keys) => (
                    keys,
                    Some(ScramAccount {
                        name: record.name,
                        enabled: record.enabled,
                        maildir: record.maildir,
                        allowed_networks: record.allowed_networks,
                    }),
                    Reason::UnknownUser,
                ),
                // No keys yet (an imported account): the exchange cannot succeed until
                // a plaintext-style sign-in derives them.
                None => (fake(), None, Reason::BadPassword),
            },
        };
        Ok(match admitted {
            Ok(ticket) => ScramLookup {
                keys,
                account,
                reason_if_absent: reason,
                ticket: Some(ticket),
            },
            // Refused by the guard: the same salt and count, and no account to sign in.
            Err(refusal) => ScramLookup {
                keys,
                account: None,
                reason_if_absent: refusal,
                ticket: None,
            },
        })
    }

    /// The iteration count a fake for `name` shows (see `scram_counts`): the
    /// accounts' proportions are read on the first lookup and refreshed in the
    /// background when stale.
    async fn fake_iterations(&self, scram: &super::Scram, name: &str) -> u32 {
        use super::scram_counts::Refresh;
        let counts = &scram.counts;
        match counts.claim_refresh() {
            Refresh::No => {}
            Refresh::First => {
                let _reading = counts.first_read().await;
                // Another lookup may have read them while this one waited.
                if counts.claim_refresh() != Refresh::No {
                    match self.dir.list_users().await {
                        Ok(users) => counts.set(&users, scram.iterations),
                        Err(_) => counts.failed(),
                    }
                }
            }
            Refresh::Background => {
                let (dir, counts, configured) =
                    (Arc::clone(&self.dir), Arc::clone(counts), scram.iterations);
                tokio::spawn(async move {
                    match dir.list_users().await {
                        Ok(users) => counts.set(&users, configured),
                        Err(_) => counts.failed(),
                    }
                });
            }
        }
        counts.for_name(&scram.server_secret, name, scram.iterations)
    }

    /// The second half of a SCRAM sign-in: the proof was checked against
    /// `lookup.keys`; decide about the account and record the outcome.
    pub async fn scram_confirm(
        &self,
        lookup: ScramLookup,
        authzid: Option<&str>,
        proof_ok: bool,
    ) -> Result<Identity, AuthFailure> {
        let ScramLookup {
            account,
            reason_if_absent,
            ticket,
            ..
        } = lookup;
        let result = match account {
            None => Err(AuthFailure::Rejected(reason_if_absent)),
            Some(_) if !proof_ok => Err(AuthFailure::Rejected(Reason::BadPassword)),
            Some(a) if !a.enabled => Err(AuthFailure::Rejected(Reason::Disabled)),
            Some(a) if !self.authzid_allowed(authzid, &a.name) => {
                Err(AuthFailure::Rejected(Reason::AuthzidMismatch))
            }
            // SCRAM proves the account password: with two factors on, that alone is not
            // enough.
            Some(a) if self.two_factor_on(&a.name).await? => {
                Err(AuthFailure::Rejected(Reason::MfaRequired))
            }
            Some(a) => Ok(Identity {
                user: a.name,
                maildir: PathBuf::from(a.maildir),
                allowed_networks: a.allowed_networks,
                new_network: false,
                read_only: false,
            }),
        };
        match ticket {
            // A SCRAM proof changes with every nonce: no attempt hash to compare.
            Some(ticket) => self.guard.settle(ticket, result, None).await,
            // Refused by the guard at lookup: nothing to record.
            None => result,
        }
    }

    /// EXTERNAL: `cert_user` is the user name the verified TLS client certificate maps
    /// to (by the configured rule). The account must exist and be enabled.
    pub async fn verify_external(
        &self,
        cert_user: &str,
        authzid: Option<&str>,
        source: IpAddr,
    ) -> Result<Identity, AuthFailure> {
        // A client certificate cannot be guessed: judged even during an account lock.
        let ticket = self
            .guard
            .admit_past_lock(&self.guard_name(cert_user), source)
            .await?;
        let result = self.check_external(cert_user, authzid).await;
        self.guard.settle(ticket, result, None).await
    }

    async fn check_external(
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
        Ok(identity(record))
    }

    /// Checks an APOP digest over `timestamp`. Users without an APOP secret fail with
    /// the same public answer as any other failure.
    pub async fn verify_apop(
        &self,
        raw_user: &str,
        timestamp: &str,
        digest: &str,
        source: IpAddr,
    ) -> Result<Identity, AuthFailure> {
        let ticket = self.guard.admit(&self.guard_name(raw_user), source).await?;
        let result = self.check_apop(raw_user, timestamp, digest).await;
        // The digest covers a fresh timestamp each time: nothing to compare.
        self.guard.settle(ticket, result, None).await
    }

    async fn check_apop(
        &self,
        raw_user: &str,
        timestamp: &str,
        digest: &str,
    ) -> Result<Identity, AuthFailure> {
        if !self.apop {
            return Err(AuthFailure::Rejected(Reason::UnknownUser));
        }
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
            .and_then(|sealed| self.open_sealed(&record.name, sealed, |k| &k.apop))
        else {
            return Err(AuthFailure::Rejected(Reason::NoApopSecret));
        };
        if !crate::apop::digest_matches(timestamp, &secret, digest) {
            return Err(AuthFailure::Rejected(Reason::BadPassword));
        }
        if !record.enabled {
            return Err(AuthFailure::Rejected(Reason::Disabled));
        }
        // The APOP secret is a password too: not enough alone with two factors on.
        if self.two_factor_on(&record.name).await? {
            return Err(AuthFailure::Rejected(Reason::MfaRequired));
        }
        Ok(identity(record))
    }
}
