//! The directory: the seam over "who is this account and what state is it in".
//!
//! Account state is kept apart from credential verification: this crate stores users and answers questions about them, and never decides whether a sign-in
//! succeeds (that is the `auth` crate's job). Backends implement [`Directory`]; SQLite
//! ([`SqliteDirectory`]) is the embedded default for one machine, PostgreSQL
//! ([`PgDirectory`]) the directory several nodes share. Both pass the same conformance
//! suite (`testing::conformance`, behind the `test-suite` feature), and
//! [`AnyDirectory`] picks one at run time from a URL.
//!
//! User names reach this layer already canonical (SASLprep'd, lowercased, with the
//! default domain applied), so backends compare them byte for byte.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod any;
mod copy;
pub mod credentials;
pub mod defence;
pub mod mfa;
#[cfg(any(test, feature = "test-suite"))]
pub mod paused;
mod postgres;
mod rotation;
mod sqlite;
#[cfg(any(test, feature = "test-suite"))]
pub mod testing;

use std::fmt;
use std::future::Future;

pub use any::{AnyDirectory, Location, redact, transport_problem};
pub use copy::{CopyCounts, check_schema, copy_directory, copy_directory_with_progress};
pub use credentials::{CredentialDates, LastSignIn};
pub use defence::{
    AccountFailures, Ban, ClearTarget, FailureCounts, FailureRecord, GuardQuery, GuardState,
    HISTORY_PER_USER, LockoutState, Millis, Reservation, ReserveQuery, SignInEntry, SourceFailures,
};
pub use mfa::{AppPassword, MfaRecord};
pub use postgres::PgDirectory;
pub use sqlite::SqliteDirectory;

/// One user of the POP3 service, as the directory stores it.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Canonical user name; the key of the record.
    pub name: String,
    /// PHC string of the password hash (argon2id for accounts made by Poplar).
    pub password_hash: String,
    /// Whether the account may sign in.
    pub enabled: bool,
    /// Path of the user's Maildir.
    pub maildir: String,
    /// SCRAM-SHA-256 keys (RFC 5803 form) derived from the same password, if any.
    pub scram_sha256: Option<String>,
    /// The user's APOP secret, encrypted at rest; `None` when APOP is off for them.
    pub apop_secret: Option<String>,
    /// Networks the user may sign in from (comma-separated CIDRs); `None`: anywhere.
    pub allowed_networks: Option<String>,
}

// A hand-written Debug so the password hash never reaches a log line: a hash is an
// offline-cracking target even though it is not the password itself.
impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("enabled", &self.enabled)
            .field("maildir", &self.maildir)
            .field(
                "scram_sha256",
                &self.scram_sha256.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "apop_secret",
                &self.apop_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("allowed_networks", &self.allowed_networks)
            .finish()
    }
}

/// Why a directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A user with this name already exists.
    #[error("user already exists")]
    Exists,
    /// The backing store could not answer (I/O, locking, corruption, migration...).
    ///
    /// The text comes from the database driver; it never holds bound values such as
    /// password hashes.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for DirectoryError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => DirectoryError::Exists,
            _ => DirectoryError::Unavailable(err.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for DirectoryError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        DirectoryError::Unavailable(format!("migration failed: {err}"))
    }
}

/// Storage of users, independent of the database behind it.
///
/// Every method takes canonical user names and compares them exactly. Implementations
/// must be cheap to share (`Arc<D>` or an inner pool) and safe to call concurrently.
pub trait Directory: Send + Sync + 'static {
    /// Looks a user up by canonical name; `None` if there is no such user.
    fn find_user(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<UserRecord>, DirectoryError>> + Send;

    /// Adds a new user whose password is set now (its [`CredentialDates`] say so);
    /// [`DirectoryError::Exists`] if the name is taken.
    fn add_user(
        &self,
        user: &UserRecord,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Adds a user brought from another server (`poplar user import`): marked
    /// imported, with the date its password was set unknown, until a new password is
    /// set with [`Directory::change_password`]. [`DirectoryError::Exists`] if the name
    /// is taken.
    fn import_user(
        &self,
        user: &UserRecord,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// [`Directory::set_credentials`] only if the stored hash is still `verified` (the
    /// one a sign-in just checked): an upgrade at sign-in must not overwrite a password
    /// changed meanwhile (by the user or an administrator), or the old password would
    /// work again. `false` if it was changed (or there is no such user).
    fn upgrade_credentials(
        &self,
        name: &str,
        verified: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// Replaces a user's password hash and SCRAM keys together (they derive from one
    /// password, so they change in one statement), for the same password in a new
    /// form (the upgrade at sign-in): when the password was set and whether it was
    /// imported stay as they are. `false` if there is no such user.
    fn set_credentials(
        &self,
        name: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// A new password: replaces the hash and SCRAM keys like
    /// [`Directory::set_credentials`], and records the password as set now and no
    /// longer the imported one. `false` if there is no such user.
    fn change_password(
        &self,
        name: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// When each user's password was set and whether it is still the imported one,
    /// for every user, ordered by name like [`Directory::list_users`].
    fn credential_dates(
        &self,
    ) -> impl Future<Output = Result<Vec<CredentialDates>, DirectoryError>> + Send;

    /// The latest successful sign-in of every user who has one on record (from the
    /// familiar-networks table, which keeps the last success per network), ordered by
    /// name. Users who never signed in are absent.
    fn last_sign_ins(&self)
    -> impl Future<Output = Result<Vec<LastSignIn>, DirectoryError>> + Send;

    /// Sets or clears a user's (encrypted) APOP secret; `false` if there is no such user.
    fn set_apop_secret(
        &self,
        name: &str,
        encrypted: Option<&str>,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// Enables or disables a user; `false` if there is no such user.
    fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// Deletes a user; `false` if there is no such user. The Maildir is left alone.
    fn delete_user(&self, name: &str) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// All users, ordered by name (byte order of the canonical name).
    fn list_users(&self) -> impl Future<Output = Result<Vec<UserRecord>, DirectoryError>> + Send;

    /// Sets or clears the networks a user may sign in from; `false` if no such user.
    fn set_allowed_networks(
        &self,
        name: &str,
        networks: Option<&str>,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// The defence state of one attempt, read before its credential is checked.
    fn guard_state(
        &self,
        query: &GuardQuery<'_>,
    ) -> impl Future<Output = Result<GuardState, DirectoryError>> + Send;

    /// Reads the defence state of one attempt and, if `admit` (the policy's gate) lets
    /// it through, counts it as a failure at `now` in the same transaction, for the
    /// (user, source) and, from an unfamiliar network, for the account. Parallel
    /// attempts are thereby decided as if they came one after another, across every
    /// process sharing the directory. The attempt is then settled with
    /// [`Directory::record_failure`] (`reserved`), [`Directory::release_attempt`] or a
    /// success; one never settled stays counted as a failure.
    ///
    /// A directory that only one process uses (SQLite) may count nothing
    /// ([`Reservation::counted`] false): then the caller decides its attempts in turn
    /// itself and records their outcomes as unreserved.
    fn reserve_attempt(
        &self,
        query: &ReserveQuery<'_>,
        admit: &(dyn Fn(&GuardState) -> bool + Sync),
    ) -> impl Future<Output = Result<Reservation, DirectoryError>> + Send;

    /// Takes back a reservation that turned out not to be a failure (a success, a
    /// directory error, LOGIN-DELAY): one failure less for the (user, source) and, if
    /// `unfamiliar`, for the account, never below zero.
    fn release_attempt(
        &self,
        user: &str,
        source: &str,
        unfamiliar: bool,
        forget_before: Millis,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Counts one failure, atomically: a repeat of a recent wrong secret counts
    /// nothing; counts older than `forget_before` start again.
    fn record_failure(
        &self,
        failure: &FailureRecord<'_>,
    ) -> impl Future<Output = Result<FailureCounts, DirectoryError>> + Send;

    /// A successful sign-in: forgets the (user, source) failures and marks the network
    /// familiar as of `now`. The account's unfamiliar-network failures stay: a user
    /// polling from home must not keep resetting the lock an attacker elsewhere earns.
    fn record_success(
        &self,
        user: &str,
        source: &str,
        network: &str,
        now: Millis,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Bans `source` until `until` (extending an existing ban, never shortening it).
    fn ban_source(
        &self,
        source: &str,
        now: Millis,
        until: Millis,
        accounts: u32,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Until when `source` is banned, if it is at `now`.
    fn source_ban(
        &self,
        source: &str,
        now: Millis,
    ) -> impl Future<Output = Result<Option<Millis>, DirectoryError>> + Send;

    /// Whether some user signed in from `network` since `since` (a shared NAT).
    fn network_familiar_to_anyone(
        &self,
        network: &str,
        since: Millis,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// Failure counts seen since `since` and bans in force at `now`.
    fn lockout_state(
        &self,
        now: Millis,
        since: Millis,
    ) -> impl Future<Output = Result<LockoutState, DirectoryError>> + Send;

    /// Lifts locks, counts and bans; the number of rows removed.
    fn clear_lockouts(
        &self,
        target: ClearTarget<'_>,
    ) -> impl Future<Output = Result<u64, DirectoryError>> + Send;

    /// Adds a sign-in to the user's history (nothing if there is no such user) and
    /// keeps only the newest [`HISTORY_PER_USER`].
    fn record_sign_in(
        &self,
        entry: &SignInEntry,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// The user's most recent sign-ins, newest first.
    fn sign_in_history(
        &self,
        user: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<SignInEntry>, DirectoryError>> + Send;

    /// Whether the user gets security notices; `None` if there is no such user.
    fn notices_enabled(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Option<bool>, DirectoryError>> + Send;

    /// Turns a user's security notices on or off; `false` if there is no such user.
    fn set_notices(
        &self,
        user: &str,
        on: bool,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// The user's two-factor policy (`off`, `optional`, `required`), `None` for the
    /// server default or no such user.
    fn mfa_policy(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Option<String>, DirectoryError>> + Send;

    /// Sets (or with `None` resets to the default) a user's two-factor policy; `false`
    /// if there is no such user.
    fn set_mfa_policy(
        &self,
        user: &str,
        policy: Option<&str>,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// The user's TOTP enrolment, if any.
    fn mfa(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Option<MfaRecord>, DirectoryError>> + Send;

    /// Stores (replacing) or with `None` removes a user's TOTP enrolment and, when
    /// removing, their recovery codes.
    fn set_mfa(
        &self,
        user: &str,
        record: Option<&MfaRecord>,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Accepts time step `step` for the user if it is later than the last accepted one
    /// (atomically: a code is accepted once); `true` if accepted.
    fn accept_totp_step(
        &self,
        user: &str,
        step: i64,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// Replaces the user's recovery codes (keyed hashes).
    fn set_recovery_codes(
        &self,
        user: &str,
        hashes: &[String],
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Uses a recovery code once: `true` if it existed unused and is now used.
    fn use_recovery_code(
        &self,
        user: &str,
        hash: &str,
        now: Millis,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// Unused recovery codes left.
    fn recovery_codes_left(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<u32, DirectoryError>> + Send;

    /// Adds an app password (its `id` is ignored); returns the new id.
    fn add_app_password(
        &self,
        app: &AppPassword,
    ) -> impl Future<Output = Result<i64, DirectoryError>> + Send;

    /// The app password with this keyed hash.
    fn find_app_password(
        &self,
        hash: &str,
    ) -> impl Future<Output = Result<Option<AppPassword>, DirectoryError>> + Send;

    /// A user's app passwords, oldest first.
    fn list_app_passwords(
        &self,
        user: &str,
    ) -> impl Future<Output = Result<Vec<AppPassword>, DirectoryError>> + Send;

    /// Revokes (deletes) an app password of `user`; `false` if there is none with `id`.
    fn revoke_app_password(
        &self,
        user: &str,
        id: i64,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// Records a successful use.
    fn touch_app_password(
        &self,
        id: i64,
        at: Millis,
        from: &str,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Forgets failure counts last seen before `before` and bans over by then.
    fn prune_defence(
        &self,
        before: Millis,
    ) -> impl Future<Output = Result<u64, DirectoryError>> + Send;

    /// The shared server secret `name` (hex text), if one was stored.
    fn server_secret(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<String>, DirectoryError>> + Send;

    /// Stores `candidate` as secret `name` unless one is stored already, and returns
    /// the stored one: nodes starting at once each offer their own and all get the
    /// first.
    fn ensure_server_secret(
        &self,
        name: &str,
        candidate: &str,
    ) -> impl Future<Output = Result<String, DirectoryError>> + Send;

    /// Every secret sealed under the server's key ring (APOP secrets, TOTP keys), for
    /// re-sealing under a new key.
    fn sealed_secrets(
        &self,
    ) -> impl Future<Output = Result<Vec<SealedSecret>, DirectoryError>> + Send;

    /// Replaces `secret`'s value by `sealed` if it is still the one read (compare and
    /// set); `true` if replaced.
    fn reseal(
        &self,
        secret: &SealedSecret,
        sealed: &str,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// Every keyed hash still in use: app passwords and unused recovery codes (which
    /// key made each is in the hash's form; used recovery codes no longer matter).
    fn keyed_hashes(&self) -> impl Future<Output = Result<Vec<KeyedHash>, DirectoryError>> + Send;

    /// Replaces app password `id`'s hash if it is still `old` (re-keyed at its use
    /// after a rotation); `true` if replaced.
    fn rekey_app_password(
        &self,
        id: i64,
        old: &str,
        new: &str,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// Replaces secret `name` by `new` if it still holds `expected` (compare and set);
    /// `true` if it was replaced. Moving the server key out of the directory leaves a
    /// marker in its place this way, so two nodes doing it at once cannot both win.
    fn replace_server_secret(
        &self,
        name: &str,
        expected: &str,
        new: &str,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// Takes the lease on `maildrop` for `owner` for `ttl_ms` on the database's clock,
    /// if nobody else holds an unexpired one (atomically: of two nodes asking at once,
    /// one gets it). `true` if `owner` holds it now.
    fn acquire_lease(
        &self,
        maildrop: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// Extends `owner`'s lease to `ttl_ms` from now; `false` if `owner` no longer holds
    /// it (it expired and another took it).
    fn renew_lease(
        &self,
        maildrop: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;

    /// Gives up `owner`'s lease (nothing if it holds none).
    fn release_lease(
        &self,
        maildrop: &str,
        owner: &str,
    ) -> impl Future<Output = Result<(), DirectoryError>> + Send;

    /// Takes away the lease on `maildrop` whoever holds it (an account disabled or
    /// deleted): the holding session finds it gone at its next renewal and is ended.
    /// `false` if none was held.
    fn break_lease(
        &self,
        maildrop: &str,
    ) -> impl Future<Output = Result<bool, DirectoryError>> + Send;
}

/// Whether a connection going back to the pool may serve again: not if it is still in
/// a transaction. A COMMIT that fails (a full disk: SQLITE_FULL) can leave one open, and
/// every later `BEGIN` on that connection would fail ("non-zero transaction depth")
/// long after the disk has room again; such a connection is closed instead.
pub(crate) fn reusable<C: sqlx::Connection>(conn: &mut C) -> bool {
    !conn.is_in_transaction()
}

/// Which kind of sealed secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedKind {
    /// A user's APOP secret (`users.apop_secret`).
    Apop,
    /// A TOTP key (`mfa.totp_secret`).
    Totp,
}

/// A secret sealed under the server's key ring, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSecret {
    /// Whose.
    pub user: String,
    /// Which kind (and so which column).
    pub kind: SealedKind,
    /// The sealed form (never the secret).
    pub value: String,
}

/// A keyed hash as stored: an app password's, or an unused recovery code's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedHash {
    /// Whose.
    pub user: String,
    /// The app password's id and label; `None` for a recovery code.
    pub app_password: Option<(i64, String)>,
    /// The stored hash (names the key that made it).
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_password_hash() {
        let user = testing::sample_user("alice");
        let shown = format!("{user:?}");
        assert!(shown.contains("alice"));
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("argon2"), "{shown}");
    }
}
