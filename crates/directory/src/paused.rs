//! A directory that pauses a sign-in's hash upgrade until told to go on, for tests of
//! what happens meanwhile (a password changed while an upgrading sign-in is in flight).
//! Everything else goes straight to the directory it wraps.

use tokio::sync::Notify;

use crate::credentials::{CredentialDates, LastSignIn};
use crate::defence::{
    ClearTarget, FailureCounts, FailureRecord, GuardQuery, GuardState, LockoutState, Millis,
    Reservation, ReserveQuery, SignInEntry,
};
use crate::mfa::{AppPassword, MfaRecord};
use crate::{Directory, DirectoryError, UserRecord};

/// Wraps `D`; [`Directory::upgrade_credentials`] waits for [`PausedUpgrade::go_on`].
#[derive(Debug)]
pub struct PausedUpgrade<D> {
    inner: D,
    reached: Notify,
    proceed: Notify,
}

impl<D> PausedUpgrade<D> {
    /// `inner`, with every hash upgrade held until [`PausedUpgrade::go_on`].
    pub fn new(inner: D) -> Self {
        PausedUpgrade {
            inner,
            reached: Notify::new(),
            proceed: Notify::new(),
        }
    }

    /// Waits until an upgrade is being held.
    pub async fn upgrade_reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the held upgrade (or the next one) go on.
    pub fn go_on(&self) {
        self.proceed.notify_one();
    }
}

impl<D: Directory> Directory for PausedUpgrade<D> {
    async fn find_user(&self, name: &str) -> Result<Option<UserRecord>, DirectoryError> {
        self.inner.find_user(name).await
    }
    async fn add_user(&self, user: &UserRecord) -> Result<(), DirectoryError> {
        self.inner.add_user(user).await
    }
    async fn import_user(&self, user: &UserRecord) -> Result<(), DirectoryError> {
        self.inner.import_user(user).await
    }
    async fn upgrade_credentials(
        &self,
        name: &str,
        verified: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        self.reached.notify_one();
        self.proceed.notified().await;
        self.inner
            .upgrade_credentials(name, verified, password_hash, scram_sha256)
            .await
    }
    async fn set_credentials(
        &self,
        name: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        self.inner
            .set_credentials(name, password_hash, scram_sha256)
            .await
    }
    async fn change_password(
        &self,
        name: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        self.inner
            .change_password(name, password_hash, scram_sha256)
            .await
    }
    async fn credential_dates(&self) -> Result<Vec<CredentialDates>, DirectoryError> {
        self.inner.credential_dates().await
    }
    async fn last_sign_ins(&self) -> Result<Vec<LastSignIn>, DirectoryError> {
        self.inner.last_sign_ins().await
    }
    async fn set_apop_secret(
        &self,
        name: &str,
        encrypted: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        self.inner.set_apop_secret(name, encrypted).await
    }
    async fn set_enabled(&self, name: &str, enabled: bool) -> Result<bool, DirectoryError> {
        self.inner.set_enabled(name, enabled).await
    }
    async fn delete_user(&self, name: &str) -> Result<bool, DirectoryError> {
        self.inner.delete_user(name).await
    }
    async fn list_users(&self) -> Result<Vec<UserRecord>, DirectoryError> {
        self.inner.list_users().await
    }
    async fn set_allowed_networks(
        &self,
        name: &str,
        networks: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        self.inner.set_allowed_networks(name, networks).await
    }
    async fn guard_state(&self, query: &GuardQuery<'_>) -> Result<GuardState, DirectoryError> {
        self.inner.guard_state(query).await
    }
    async fn reserve_attempt(
        &self,
        query: &ReserveQuery<'_>,
        admit: &(dyn Fn(&GuardState) -> bool + Sync),
    ) -> Result<Reservation, DirectoryError> {
        self.inner.reserve_attempt(query, admit).await
    }
    async fn release_attempt(
        &self,
        user: &str,
        source: &str,
        unfamiliar: bool,
        forget_before: Millis,
    ) -> Result<(), DirectoryError> {
        self.inner
            .release_attempt(user, source, unfamiliar, forget_before)
            .await
    }
    async fn record_failure(
        &self,
        failure: &FailureRecord<'_>,
    ) -> Result<FailureCounts, DirectoryError> {
        self.inner.record_failure(failure).await
    }
    async fn record_success(
        &self,
        user: &str,
        source: &str,
        network: &str,
        now: Millis,
    ) -> Result<(), DirectoryError> {
        self.inner.record_success(user, source, network, now).await
    }
    async fn ban_source(
        &self,
        source: &str,
        now: Millis,
        until: Millis,
        accounts: u32,
    ) -> Result<(), DirectoryError> {
        self.inner.ban_source(source, now, until, accounts).await
    }
    async fn source_ban(
        &self,
        source: &str,
        now: Millis,
    ) -> Result<Option<Millis>, DirectoryError> {
        self.inner.source_ban(source, now).await
    }
    async fn network_familiar_to_anyone(
        &self,
        network: &str,
        since: Millis,
    ) -> Result<bool, DirectoryError> {
        self.inner.network_familiar_to_anyone(network, since).await
    }
    async fn lockout_state(
        &self,
        now: Millis,
        since: Millis,
    ) -> Result<LockoutState, DirectoryError> {
        self.inner.lockout_state(now, since).await
    }
    async fn clear_lockouts(&self, target: ClearTarget<'_>) -> Result<u64, DirectoryError> {
        self.inner.clear_lockouts(target).await
    }
    async fn record_sign_in(&self, entry: &SignInEntry) -> Result<(), DirectoryError> {
        self.inner.record_sign_in(entry).await
    }
    async fn sign_in_history(
        &self,
        user: &str,
        limit: u32,
    ) -> Result<Vec<SignInEntry>, DirectoryError> {
        self.inner.sign_in_history(user, limit).await
    }
    async fn notices_enabled(&self, user: &str) -> Result<Option<bool>, DirectoryError> {
        self.inner.notices_enabled(user).await
    }
    async fn set_notices(&self, user: &str, on: bool) -> Result<bool, DirectoryError> {
        self.inner.set_notices(user, on).await
    }
    async fn mfa_policy(&self, user: &str) -> Result<Option<String>, DirectoryError> {
        self.inner.mfa_policy(user).await
    }
    async fn set_mfa_policy(
        &self,
        user: &str,
        policy: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        self.inner.set_mfa_policy(user, policy).await
    }
    async fn mfa(&self, user: &str) -> Result<Option<MfaRecord>, DirectoryError> {
        self.inner.mfa(user).await
    }
    async fn set_mfa(&self, user: &str, record: Option<&MfaRecord>) -> Result<(), DirectoryError> {
        self.inner.set_mfa(user, record).await
    }
    async fn accept_totp_step(&self, user: &str, step: i64) -> Result<bool, DirectoryError> {
        self.inner.accept_totp_step(user, step).await
    }
    async fn set_recovery_codes(
        &self,
        user: &str,
        hashes: &[String],
    ) -> Result<(), DirectoryError> {
        self.inner.set_recovery_codes(user, hashes).await
    }
    async fn use_recovery_code(
        &self,
        user: &str,
        hash: &str,
        now: Millis,
    ) -> Result<bool, DirectoryError> {
        self.inner.use_recovery_code(user, hash, now).await
    }
    async fn recovery_codes_left(&self, user: &str) -> Result<u32, DirectoryError> {
        self.inner.recovery_codes_left(user).await
    }
    async fn add_app_password(&self, app: &AppPassword) -> Result<i64, DirectoryError> {
        self.inner.add_app_password(app).await
    }
    async fn find_app_password(&self, hash: &str) -> Result<Option<AppPassword>, DirectoryError> {
        self.inner.find_app_password(hash).await
    }
    async fn list_app_passwords(&self, user: &str) -> Result<Vec<AppPassword>, DirectoryError> {
        self.inner.list_app_passwords(user).await
    }
    async fn revoke_app_password(&self, user: &str, id: i64) -> Result<bool, DirectoryError> {
        self.inner.revoke_app_password(user, id).await
    }
    async fn touch_app_password(
        &self,
        id: i64,
        at: Millis,
        from: &str,
    ) -> Result<(), DirectoryError> {
        self.inner.touch_app_password(id, at, from).await
    }
    async fn prune_defence(&self, before: Millis) -> Result<u64, DirectoryError> {
        self.inner.prune_defence(before).await
    }
    async fn server_secret(&self, name: &str) -> Result<Option<String>, DirectoryError> {
        self.inner.server_secret(name).await
    }
    async fn ensure_server_secret(
        &self,
        name: &str,
        candidate: &str,
    ) -> Result<String, DirectoryError> {
        self.inner.ensure_server_secret(name, candidate).await
    }
    async fn sealed_secrets(&self) -> Result<Vec<crate::SealedSecret>, DirectoryError> {
        self.inner.sealed_secrets().await
    }
    async fn reseal(
        &self,
        secret: &crate::SealedSecret,
        sealed: &str,
    ) -> Result<bool, DirectoryError> {
        self.inner.reseal(secret, sealed).await
    }
    async fn keyed_hashes(&self) -> Result<Vec<crate::KeyedHash>, DirectoryError> {
        self.inner.keyed_hashes().await
    }
    async fn rekey_app_password(
        &self,
        id: i64,
        old: &str,
        new: &str,
    ) -> Result<bool, DirectoryError> {
        self.inner.rekey_app_password(id, old, new).await
    }
    async fn replace_server_secret(
        &self,
        name: &str,
        expected: &str,
        new: &str,
    ) -> Result<bool, DirectoryError> {
        self.inner.replace_server_secret(name, expected, new).await
    }
    async fn acquire_lease(
        &self,
        maildrop: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<bool, DirectoryError> {
        self.inner.acquire_lease(maildrop, owner, ttl_ms).await
    }
    async fn renew_lease(
        &self,
        maildrop: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<bool, DirectoryError> {
        self.inner.renew_lease(maildrop, owner, ttl_ms).await
    }
    async fn release_lease(&self, maildrop: &str, owner: &str) -> Result<(), DirectoryError> {
        self.inner.release_lease(maildrop, owner).await
    }
    async fn break_lease(&self, maildrop: &str) -> Result<bool, DirectoryError> {
        self.inner.break_lease(maildrop).await
    }
}
