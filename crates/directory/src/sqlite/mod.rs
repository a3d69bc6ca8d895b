//! The SQLite backend: the embedded default, one file in the data folder.
//!
//! The file is opened in WAL mode (readers do not block the writer), with a 5 s busy
//! timeout so that the CLI and a running server can share it, and foreign keys on for
//! the tables that later migrations add.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

use crate::credentials::{CredentialDates, LastSignIn};
use crate::defence::{
    ClearTarget, FailureCounts, FailureRecord, GuardQuery, GuardState, LockoutState, Millis,
    Reservation, ReserveQuery, SignInEntry,
};
use crate::mfa::{AppPassword, MfaRecord};
use crate::{Directory, DirectoryError, UserRecord};

mod credentials;
mod defence;
mod mfa;

/// The migrations for SQLite, embedded in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a connection waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool. SQLite serialises writers anyway; a few connections let
/// reads (sign-ins) proceed during a write.
const MAX_CONNECTIONS: u32 = 4;

/// Columns read into a [`UserRecord`], in the order of [`row_to_record`]'s tuple.
type UserRow = (
    String,
    String,
    bool,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn row_to_record(
    (name, password_hash, enabled, maildir, scram_sha256, apop_secret, allowed_networks): UserRow,
) -> UserRecord {
    UserRecord {
        name,
        password_hash,
        enabled,
        maildir,
        scram_sha256,
        apop_secret,
        allowed_networks,
    }
}

/// A [`Directory`] backed by a SQLite file. Cloning shares the connection pool.
#[derive(Clone, Debug)]
pub struct SqliteDirectory {
    pub(crate) pool: SqlitePool,
}

impl SqliteDirectory {
    /// Opens the database at `path`, creating the file if it is missing, and brings its
    /// schema up to date.
    ///
    /// A new file is created with mode 0600 on Unix, because it holds password hashes;
    /// SQLite gives its `-wal` and `-shm` files the same mode. The parent directory must
    /// exist. WAL journal, busy timeout 5 s, foreign keys on.
    pub async fn open(path: &Path) -> Result<Self, DirectoryError> {
        create_private_file(path)?;
        // Two processes opening a new database at once (two `poplar user add`, a server
        // and the CLI) would both switch it to WAL and both create the tables; SQLite
        // answers one of them "database is locked" at once for the journal-mode switch,
        // without waiting out the busy timeout. An exclusive lock on a file beside the
        // database, held from the first connection to the end of the migrations, makes
        // the second wait and then find the file in WAL mode and the migrations applied.
        let lock_path = path.with_extension("db.lock");
        let lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            file.lock()?;
            Ok(file)
        })
        .await
        .map_err(|e| DirectoryError::Unavailable(format!("migration lock: {e}")))?
        .map_err(|e| DirectoryError::Unavailable(format!("migration lock: {e}")))?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // What is deleted or replaced (a revoked app password, a deleted user's
            // hash, the server key moved out) is overwritten with zeros, not left in
            // free space for a copy of the file to show.
            .pragma("secure_delete", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .after_release(|conn, _| Box::pin(async move { Ok(crate::reusable(conn)) }))
            .connect_with(options)
            .await?;
        let migrated = MIGRATOR.run(&pool).await;
        drop(lock);
        migrated?;
        Ok(SqliteDirectory { pool })
    }

    /// Closes the pool, waiting for connections in use to come back (checkpoints WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Creates `path` as an empty file readable by its owner only, unless it exists.
#[cfg(unix)]
fn create_private_file(path: &Path) -> Result<(), DirectoryError> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(DirectoryError::Unavailable(format!(
            "cannot create {}: {e}",
            path.display()
        ))),
    }
}

/// Elsewhere SQLite creates the file itself, with the platform's default permissions.
#[cfg(not(unix))]
fn create_private_file(_path: &Path) -> Result<(), DirectoryError> {
    Ok(())
}

impl Directory for SqliteDirectory {
    async fn find_user(&self, name: &str) -> Result<Option<UserRecord>, DirectoryError> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT name, password_hash, enabled, maildir, scram_sha256, apop_secret, allowed_networks FROM users WHERE name = ?1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(row_to_record))
    }

    async fn add_user(&self, user: &UserRecord) -> Result<(), DirectoryError> {
        self.insert_user(user, false).await
    }

    async fn import_user(&self, user: &UserRecord) -> Result<(), DirectoryError> {
        self.insert_user(user, true).await
    }

    async fn upgrade_credentials(
        &self,
        name: &str,
        verified: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = ?3, scram_sha256 = ?4, \
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
             WHERE name = ?1 AND password_hash = ?2",
        )
        .bind(name)
        .bind(verified)
        .bind(password_hash)
        .bind(scram_sha256)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_credentials(
        &self,
        name: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = ?2, scram_sha256 = ?3, \
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE name = ?1",
        )
        .bind(name)
        .bind(password_hash)
        .bind(scram_sha256)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn change_password(
        &self,
        name: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        self.change_password_impl(name, password_hash, scram_sha256)
            .await
    }

    async fn credential_dates(&self) -> Result<Vec<CredentialDates>, DirectoryError> {
        self.credential_dates_impl().await
    }

    async fn last_sign_ins(&self) -> Result<Vec<LastSignIn>, DirectoryError> {
        self.last_sign_ins_impl().await
    }

    async fn set_apop_secret(
        &self,
        name: &str,
        encrypted: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query(
            "UPDATE users SET apop_secret = ?2, \
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE name = ?1",
        )
        .bind(name)
        .bind(encrypted)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_enabled(&self, name: &str, enabled: bool) -> Result<bool, DirectoryError> {
        let done = sqlx::query(
            "UPDATE users SET enabled = ?2, \
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE name = ?1",
        )
        .bind(name)
        .bind(enabled)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_user(&self, name: &str) -> Result<bool, DirectoryError> {
        let done = sqlx::query("DELETE FROM users WHERE name = ?1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, DirectoryError> {
        let rows: Vec<UserRow> = sqlx::query_as(
            "SELECT name, password_hash, enabled, maildir, scram_sha256, apop_secret, allowed_networks FROM users ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(row_to_record).collect())
    }

    async fn set_allowed_networks(
        &self,
        name: &str,
        networks: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query(
            "UPDATE users SET allowed_networks = ?2, \
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE name = ?1",
        )
        .bind(name)
        .bind(networks)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn guard_state(&self, query: &GuardQuery<'_>) -> Result<GuardState, DirectoryError> {
        self.guard_state_impl(query).await
    }

    async fn reserve_attempt(
        &self,
        query: &ReserveQuery<'_>,
        admit: &(dyn Fn(&GuardState) -> bool + Sync),
    ) -> Result<Reservation, DirectoryError> {
        self.reserve_attempt_impl(query, admit).await
    }

    async fn release_attempt(
        &self,
        user: &str,
        source: &str,
        unfamiliar: bool,
        forget_before: Millis,
    ) -> Result<(), DirectoryError> {
        self.release_attempt_impl(user, source, unfamiliar, forget_before)
            .await
    }

    async fn record_failure(
        &self,
        failure: &FailureRecord<'_>,
    ) -> Result<FailureCounts, DirectoryError> {
        self.record_failure_impl(failure).await
    }

    async fn record_success(
        &self,
        user: &str,
        source: &str,
        network: &str,
        now: Millis,
    ) -> Result<(), DirectoryError> {
        self.record_success_impl(user, source, network, now).await
    }

    async fn ban_source(
        &self,
        source: &str,
        now: Millis,
        until: Millis,
        accounts: u32,
    ) -> Result<(), DirectoryError> {
        self.ban_source_impl(source, now, until, accounts).await
    }

    async fn source_ban(
        &self,
        source: &str,
        now: Millis,
    ) -> Result<Option<Millis>, DirectoryError> {
        self.source_ban_impl(source, now).await
    }

    async fn network_familiar_to_anyone(
        &self,
        network: &str,
        since: Millis,
    ) -> Result<bool, DirectoryError> {
        self.network_familiar_to_anyone_impl(network, since).await
    }

    async fn lockout_state(
        &self,
        now: Millis,
        since: Millis,
    ) -> Result<LockoutState, DirectoryError> {
        self.lockout_state_impl(now, since).await
    }

    async fn clear_lockouts(&self, target: ClearTarget<'_>) -> Result<u64, DirectoryError> {
        self.clear_lockouts_impl(target).await
    }

    async fn record_sign_in(&self, entry: &SignInEntry) -> Result<(), DirectoryError> {
        self.record_sign_in_impl(entry).await
    }

    async fn sign_in_history(
        &self,
        user: &str,
        limit: u32,
    ) -> Result<Vec<SignInEntry>, DirectoryError> {
        self.sign_in_history_impl(user, limit).await
    }

    async fn notices_enabled(&self, user: &str) -> Result<Option<bool>, DirectoryError> {
        Ok(
            sqlx::query_scalar("SELECT notices FROM users WHERE name = ?1")
                .bind(user)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_notices(&self, user: &str, on: bool) -> Result<bool, DirectoryError> {
        let done = sqlx::query("UPDATE users SET notices = ?2 WHERE name = ?1")
            .bind(user)
            .bind(on)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn mfa_policy(&self, user: &str) -> Result<Option<String>, DirectoryError> {
        self.mfa_policy_impl(user).await
    }

    async fn set_mfa_policy(
        &self,
        user: &str,
        policy: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        self.set_mfa_policy_impl(user, policy).await
    }

    async fn mfa(&self, user: &str) -> Result<Option<MfaRecord>, DirectoryError> {
        self.mfa_impl(user).await
    }

    async fn set_mfa(&self, user: &str, record: Option<&MfaRecord>) -> Result<(), DirectoryError> {
        self.set_mfa_impl(user, record).await
    }

    async fn accept_totp_step(&self, user: &str, step: i64) -> Result<bool, DirectoryError> {
        self.accept_totp_step_impl(user, step).await
    }

    async fn set_recovery_codes(
        &self,
        user: &str,
        hashes: &[String],
    ) -> Result<(), DirectoryError> {
        self.set_recovery_codes_impl(user, hashes).await
    }

    async fn use_recovery_code(
        &self,
        user: &str,
        hash: &str,
        now: Millis,
    ) -> Result<bool, DirectoryError> {
        self.use_recovery_code_impl(user, hash, now).await
    }

    async fn recovery_codes_left(&self, user: &str) -> Result<u32, DirectoryError> {
        self.recovery_codes_left_impl(user).await
    }

    async fn add_app_password(&self, app: &AppPassword) -> Result<i64, DirectoryError> {
        self.add_app_password_impl(app).await
    }

    async fn find_app_password(&self, hash: &str) -> Result<Option<AppPassword>, DirectoryError> {
        self.find_app_password_impl(hash).await
    }

    async fn list_app_passwords(&self, user: &str) -> Result<Vec<AppPassword>, DirectoryError> {
        self.list_app_passwords_impl(user).await
    }

    async fn revoke_app_password(&self, user: &str, id: i64) -> Result<bool, DirectoryError> {
        self.revoke_app_password_impl(user, id).await
    }

    async fn touch_app_password(
        &self,
        id: i64,
        at: Millis,
        from: &str,
    ) -> Result<(), DirectoryError> {
        self.touch_app_password_impl(id, at, from).await
    }

    async fn prune_defence(&self, before: Millis) -> Result<u64, DirectoryError> {
        self.prune_defence_impl(before).await
    }

    async fn server_secret(&self, name: &str) -> Result<Option<String>, DirectoryError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = ?1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn ensure_server_secret(
        &self,
        name: &str,
        candidate: &str,
    ) -> Result<String, DirectoryError> {
        sqlx::query(
            "INSERT INTO server_secrets (name, value) VALUES (?1, ?2) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate)
        .execute(&self.pool)
        .await?;
        // Whichever value won (ours, or one stored first by another node).
        self.server_secret(name)
            .await?
            .ok_or_else(|| DirectoryError::Unavailable(format!("server secret {name} vanished")))
    }

    crate::rotation::queries!("?1", "?2", "?3", "user");

    async fn replace_server_secret(
        &self,
        name: &str,
        expected: &str,
        new: &str,
    ) -> Result<bool, DirectoryError> {
        let done =
            sqlx::query("UPDATE server_secrets SET value = ?3 WHERE name = ?1 AND value = ?2")
                .bind(name)
                .bind(expected)
                .bind(new)
                .execute(&self.pool)
                .await?;
        // The old value's page is still in the write-ahead log: copy it back and empty
        // the log, so no file of the directory holds it any more.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn acquire_lease(
        &self,
        maildrop: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<bool, DirectoryError> {
        // One statement: a free or expired lease is taken, a live one of another
        // owner is left alone (the WHERE of the upsert), and the row lock makes two
        // nodes asking at once see each other.
        let done = sqlx::query(
            "INSERT INTO maildrop_leases (maildrop, owner, expires_at) \
             VALUES (?1, ?2, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + ?3) \
             ON CONFLICT (maildrop) DO UPDATE SET owner = excluded.owner, \
             expires_at = excluded.expires_at \
             WHERE maildrop_leases.expires_at <= CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) OR maildrop_leases.owner = excluded.owner",
        )
        .bind(maildrop)
        .bind(owner)
        .bind(ttl_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn renew_lease(
        &self,
        maildrop: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query(
            "UPDATE maildrop_leases SET expires_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) + ?3 \
             WHERE maildrop = ?1 AND owner = ?2",
        )
        .bind(maildrop)
        .bind(owner)
        .bind(ttl_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, maildrop: &str, owner: &str) -> Result<(), DirectoryError> {
        sqlx::query("DELETE FROM maildrop_leases WHERE maildrop = ?1 AND owner = ?2")
            .bind(maildrop)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn break_lease(&self, maildrop: &str) -> Result<bool, DirectoryError> {
        let done = sqlx::query("DELETE FROM maildrop_leases WHERE maildrop = ?1")
            .bind(maildrop)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{conformance, sample_user};

    #[tokio::test]
    async fn sqlite_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDirectory::open(&dir.path().join("poplar.db"))
            .await
            .unwrap();
        conformance(&db).await;
    }

    #[tokio::test]
    async fn data_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("poplar.db");
        {
            let db = SqliteDirectory::open(&path).await.unwrap();
            db.add_user(&sample_user("alice")).await.unwrap();
            db.add_user(&sample_user("bob")).await.unwrap();
            assert!(db.set_enabled("bob", false).await.unwrap());
            db.close().await;
        }
        // Reopening runs the migrator again; it must be a no-op on a current schema.
        let db = SqliteDirectory::open(&path).await.unwrap();
        let users = db.list_users().await.unwrap();
        assert_eq!(
            users,
            vec![sample_user("alice"), {
                let mut bob = sample_user("bob");
                bob.enabled = false;
                bob
            }]
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn new_database_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("poplar.db");
        let _db = SqliteDirectory::open(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn missing_parent_directory_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let err = SqliteDirectory::open(&dir.path().join("nope/poplar.db"))
            .await
            .unwrap_err();
        assert!(matches!(err, DirectoryError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_opens_both_succeed() {
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("poplar.db");
            let (a, b) = tokio::join!(SqliteDirectory::open(&path), SqliteDirectory::open(&path));
            let (a, b) = (a.unwrap(), b.unwrap());
            a.add_user(&sample_user("alice")).await.unwrap();
            assert!(b.find_user("alice").await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn wal_mode_is_on() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDirectory::open(&dir.path().join("poplar.db"))
            .await
            .unwrap();
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
    }
}
