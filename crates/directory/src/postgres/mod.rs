//! The PostgreSQL backend: one directory shared by every node of a cluster.
//!
//! The schema mirrors the SQLite one (`migrations/postgres`, the same tables and
//! columns; SQLite has one migration more, 0010, a change PostgreSQL did not need), so `poplar directory copy` moves rows one to one. Every counter the nodes
//! share (failure counts, account locks, bans, the TOTP replay step, recovery codes,
//! app-password use) changes in a single statement that reads and writes the row
//! together (`INSERT ... ON CONFLICT DO UPDATE ... RETURNING`, `UPDATE ... WHERE`), so
//! two nodes recording at once never lose an update: PostgreSQL serialises the two
//! statements on the row lock, and the second sees the first's result.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::credentials::{CredentialDates, LastSignIn};
use crate::defence::{
    AccountFailures, Ban, ClearTarget, FailureCounts, FailureRecord, GuardQuery, GuardState,
    HISTORY_PER_USER, LockoutState, Millis, RECENT_SEPARATOR, Reservation, ReserveQuery,
    SignInEntry, SourceFailures, remember,
};
use crate::mfa::{AppPassword, MfaRecord};
use crate::{Directory, DirectoryError, UserRecord};

/// The migrations for PostgreSQL, embedded in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per node. Sign-ins are short statements; a node rarely needs more.
const MAX_CONNECTIONS: u32 = 10;

/// How long a node waits for a free connection (or a new one) before answering that
/// the directory is unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// `now` as the users table keeps times: RFC 3339 UTC with milliseconds, like SQLite's
/// `strftime('%Y-%m-%dT%H:%M:%fZ', 'now')`.
const NOW_TEXT: &str =
    "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

const USER_COLUMNS: &str =
    "name, password_hash, enabled, maildir, scram_sha256, apop_secret, allowed_networks";

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

type AppRow = (
    i64,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<String>,
    bool,
    Option<i64>,
    Option<String>,
);

const APP_COLUMNS: &str = "id, \"user\", label, hash, created_at, expires_at, networks, \
                           read_only, last_used_at, last_used_from";

fn app(row: AppRow) -> AppPassword {
    let (
        id,
        user,
        label,
        hash,
        created_at,
        expires_at,
        networks,
        read_only,
        last_used_at,
        last_used_from,
    ) = row;
    AppPassword {
        id,
        user,
        label,
        hash,
        created_at,
        expires_at,
        networks,
        read_only,
        last_used_at,
        last_used_from,
    }
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

fn sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

/// A [`Directory`] in a PostgreSQL database. Cloning shares the connection pool.
#[derive(Clone, Debug)]
pub struct PgDirectory {
    pool: PgPool,
}

impl PgDirectory {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`,
    /// with `?sslmode=verify-full` and the other libpq parameters sqlx knows) and
    /// brings its schema up to date. Nodes starting together are safe: the migrator
    /// holds a PostgreSQL advisory lock while it runs.
    pub async fn connect(url: &str) -> Result<Self, DirectoryError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| DirectoryError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_release(|conn, _| Box::pin(async move { Ok(crate::reusable(conn)) }))
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PgDirectory { pool })
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The connection pool, for the tables the cluster keeps beside the directory
    /// (server secrets, maildrop leases) and for `poplar directory copy`.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn insert_user(&self, user: &UserRecord, imported: bool) -> Result<(), DirectoryError> {
        sqlx::query(sql(format!(
            "INSERT INTO users (name, password_hash, enabled, maildir, scram_sha256, \
             apop_secret, allowed_networks, imported, password_set_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
             CASE WHEN $8 THEN NULL ELSE {NOW_TEXT} END)"
        )))
        .bind(&user.name)
        .bind(&user.password_hash)
        .bind(user.enabled)
        .bind(&user.maildir)
        .bind(&user.scram_sha256)
        .bind(&user.apop_secret)
        .bind(&user.allowed_networks)
        .bind(imported)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// `UPDATE users SET <set>, updated_at = now WHERE name = $1`, binding `$2...`.
    async fn update_user_text(
        &self,
        set: &str,
        name: &str,
        value: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query(sql(format!(
            "UPDATE users SET {set}, updated_at = {NOW_TEXT} WHERE name = $1"
        )))
        .bind(name)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Directory for PgDirectory {
    async fn find_user(&self, name: &str) -> Result<Option<UserRecord>, DirectoryError> {
        let row: Option<UserRow> = sqlx::query_as(sql(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE name = $1"
        )))
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
        let done = sqlx::query(sql(format!(
            "UPDATE users SET password_hash = $3, scram_sha256 = $4, \
             updated_at = {NOW_TEXT} WHERE name = $1 AND password_hash = $2"
        )))
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
        let done = sqlx::query(sql(format!(
            "UPDATE users SET password_hash = $2, scram_sha256 = $3, \
             updated_at = {NOW_TEXT} WHERE name = $1"
        )))
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
        let done = sqlx::query(sql(format!(
            "UPDATE users SET password_hash = $2, scram_sha256 = $3, imported = FALSE, \
             password_set_at = {NOW_TEXT}, updated_at = {NOW_TEXT} WHERE name = $1"
        )))
        .bind(name)
        .bind(password_hash)
        .bind(scram_sha256)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn credential_dates(&self) -> Result<Vec<CredentialDates>, DirectoryError> {
        let rows: Vec<(String, String, Option<String>, bool)> = sqlx::query_as(
            "SELECT name, created_at, password_set_at, imported FROM users ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(user, created_at, password_set_at, imported)| CredentialDates {
                    user,
                    created_at,
                    password_set_at,
                    imported,
                },
            )
            .collect())
    }

    async fn last_sign_ins(&self) -> Result<Vec<LastSignIn>, DirectoryError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT u, MAX(at) FROM ( \
                 SELECT \"user\" AS u, last_success AS at FROM familiar_networks \
                 UNION ALL \
                 SELECT \"user\", at FROM sign_in_history WHERE result = 'success' \
             ) AS s GROUP BY u ORDER BY u",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(user, at)| LastSignIn { user, at })
            .collect())
    }

    async fn set_apop_secret(
        &self,
        name: &str,
        encrypted: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        self.update_user_text("apop_secret = $2", name, encrypted)
            .await
    }

    async fn set_enabled(&self, name: &str, enabled: bool) -> Result<bool, DirectoryError> {
        let done = sqlx::query(sql(format!(
            "UPDATE users SET enabled = $2, updated_at = {NOW_TEXT} WHERE name = $1"
        )))
        .bind(name)
        .bind(enabled)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_user(&self, name: &str) -> Result<bool, DirectoryError> {
        let done = sqlx::query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, DirectoryError> {
        let rows: Vec<UserRow> = sqlx::query_as(sql(format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY name"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(row_to_record).collect())
    }

    async fn set_allowed_networks(
        &self,
        name: &str,
        networks: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        self.update_user_text("allowed_networks = $2", name, networks)
            .await
    }

    async fn guard_state(&self, q: &GuardQuery<'_>) -> Result<GuardState, DirectoryError> {
        let mut conn = self.pool.acquire().await?;
        read_state(&mut conn, q).await
    }

    async fn reserve_attempt(
        &self,
        r: &ReserveQuery<'_>,
        admit: &(dyn Fn(&GuardState) -> bool + Sync),
    ) -> Result<Reservation, DirectoryError> {
        let q = &r.query;
        let mut tx = self.pool.begin().await?;
        // Every attempt on one user name, on every node, is decided in turn: the
        // account's count and each (user, source) count belong to the name.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(ADVISORY_RESERVE)
            .bind(q.user)
            .execute(&mut *tx)
            .await?;
        let state = read_state(&mut tx, q).await?;
        let unfamiliar = r.count_account
            && state
                .network_last_success
                .is_none_or(|t| t < r.familiar_since);
        let reserved = admit(&state);
        if reserved {
            sqlx::query(
                "INSERT INTO auth_failures AS a (\"user\", source, failures, last_failure, recent) \
                 VALUES ($1, $2, 1, $3, '') \
                 ON CONFLICT (\"user\", source) DO UPDATE SET \
                 failures = CASE WHEN a.last_failure < $4 THEN 1 ELSE a.failures + 1 END, \
                 recent = CASE WHEN a.last_failure < $4 THEN '' ELSE a.recent END, \
                 last_failure = $3",
            )
            .bind(q.user)
            .bind(q.source)
            .bind(q.now)
            .bind(q.forget_before)
            .execute(&mut *tx)
            .await?;
            if unfamiliar {
                count_account_failure(&mut tx, q.user, q.now, q.forget_before).await?;
            }
        }
        tx.commit().await?;
        Ok(Reservation {
            state,
            reserved,
            unfamiliar,
            counted: true,
        })
    }

    async fn release_attempt(
        &self,
        user: &str,
        source: &str,
        unfamiliar: bool,
        forget_before: Millis,
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE auth_failures SET failures = GREATEST(failures - 1, 0) \
             WHERE \"user\" = $1 AND source = $2 AND last_failure >= $3",
        )
        .bind(user)
        .bind(source)
        .bind(forget_before)
        .execute(&mut *tx)
        .await?;
        if unfamiliar {
            sqlx::query(
                "UPDATE account_failures SET failures = GREATEST(failures - 1, 0) \
                 WHERE \"user\" = $1 AND last_failure >= $2",
            )
            .bind(user)
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_failure(&self, f: &FailureRecord<'_>) -> Result<FailureCounts, DirectoryError> {
        if f.reserved
            && let Some(counts) = self.settle_reserved_failure(f).await?
        {
            return Ok(counts);
        }
        let keep = i64::try_from(f.remember).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        // One statement reads and writes the (user, source) row under its lock: a stale
        // count starts again; a repeat of a recent wrong secret (the WHERE clause)
        // leaves the row as it is and returns nothing; otherwise the count goes up by
        // one and the attempt joins the newest `keep` remembered ones.
        let counted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO auth_failures AS a (\"user\", source, failures, last_failure, recent) \
             VALUES ($1, $2, 1, $3, CASE WHEN $4::text IS NULL OR $6 <= 0 THEN '' ELSE $4 END) \
             ON CONFLICT (\"user\", source) DO UPDATE SET \
             failures = CASE WHEN a.last_failure < $5 THEN 1 ELSE a.failures + 1 END, \
             last_failure = $3, \
             recent = CASE \
                 WHEN $4::text IS NULL THEN \
                     CASE WHEN a.last_failure < $5 THEN '' ELSE a.recent END \
                 ELSE array_to_string( \
                     (string_to_array(CASE WHEN a.last_failure < $5 THEN '' ELSE a.recent END, ' ') \
                      || $4::text)[GREATEST(cardinality( \
                         string_to_array(CASE WHEN a.last_failure < $5 THEN '' ELSE a.recent END, ' ') \
                      ) + 2 - $6, 1)::int:], ' ') \
                 END \
             WHERE NOT (a.last_failure >= $5 AND $4::text IS NOT NULL \
                        AND $4::text = ANY (string_to_array(a.recent, ' '))) \
             RETURNING failures",
        )
        .bind(f.user)
        .bind(f.source)
        .bind(f.now)
        .bind(f.attempt)
        .bind(f.forget_before)
        .bind(keep)
        .fetch_optional(&mut *tx)
        .await?;
        let repeated = counted.is_none();
        let failures = match counted {
            Some(n) => count(n),
            None => sqlx::query_scalar::<_, i64>(
                "SELECT failures FROM auth_failures \
                 WHERE \"user\" = $1 AND source = $2 AND last_failure >= $3",
            )
            .bind(f.user)
            .bind(f.source)
            .bind(f.forget_before)
            .fetch_optional(&mut *tx)
            .await?
            .map_or(0, count),
        };
        let account: Option<i64> = if !repeated && f.unfamiliar {
            Some(
                sqlx::query_scalar(
                    "INSERT INTO account_failures AS a (\"user\", failures, last_failure) \
                     VALUES ($1, 1, $2) \
                     ON CONFLICT (\"user\") DO UPDATE SET \
                     failures = CASE WHEN a.last_failure < $3 THEN 1 ELSE a.failures + 1 END, \
                     last_failure = $2 \
                     RETURNING failures",
                )
                .bind(f.user)
                .bind(f.now)
                .bind(f.forget_before)
                .fetch_one(&mut *tx)
                .await?,
            )
        } else {
            sqlx::query_scalar(
                "SELECT failures FROM account_failures \
                 WHERE \"user\" = $1 AND last_failure >= $2",
            )
            .bind(f.user)
            .bind(f.forget_before)
            .fetch_optional(&mut *tx)
            .await?
        };
        let accounts_from_source: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM auth_failures WHERE source = $1 AND last_failure >= $2",
        )
        .bind(f.source)
        .bind(f.spray_since)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(FailureCounts {
            repeated,
            failures,
            account_failures: account.map_or(0, count),
            accounts_from_source: count(accounts_from_source),
        })
    }

    async fn record_success(
        &self,
        user: &str,
        source: &str,
        network: &str,
        now: Millis,
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM auth_failures WHERE \"user\" = $1 AND source = $2")
            .bind(user)
            .bind(source)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO familiar_networks AS f (\"user\", network, first_success, last_success) \
             VALUES ($1, $2, $3, $3) \
             ON CONFLICT (\"user\", network) DO UPDATE SET \
             last_success = GREATEST(f.last_success, EXCLUDED.last_success)",
        )
        .bind(user)
        .bind(network)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn ban_source(
        &self,
        source: &str,
        now: Millis,
        until: Millis,
        accounts: u32,
    ) -> Result<(), DirectoryError> {
        sqlx::query(
            "INSERT INTO address_bans AS b (source, banned_at, banned_until, accounts) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (source) DO UPDATE SET \
             banned_at = CASE WHEN b.banned_until <= EXCLUDED.banned_at \
                 THEN EXCLUDED.banned_at ELSE b.banned_at END, \
             banned_until = GREATEST(b.banned_until, EXCLUDED.banned_until), \
             accounts = GREATEST(b.accounts, EXCLUDED.accounts)",
        )
        .bind(source)
        .bind(now)
        .bind(until)
        .bind(i64::from(accounts))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn source_ban(
        &self,
        source: &str,
        now: Millis,
    ) -> Result<Option<Millis>, DirectoryError> {
        Ok(sqlx::query_scalar(
            "SELECT banned_until FROM address_bans WHERE source = $1 AND banned_until > $2",
        )
        .bind(source)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn network_familiar_to_anyone(
        &self,
        network: &str,
        since: Millis,
    ) -> Result<bool, DirectoryError> {
        let found: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM familiar_networks WHERE network = $1 AND last_success >= $2 LIMIT 1",
        )
        .bind(network)
        .bind(since)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    async fn lockout_state(
        &self,
        now: Millis,
        since: Millis,
    ) -> Result<LockoutState, DirectoryError> {
        let sources: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT \"user\", source, failures, last_failure FROM auth_failures \
             WHERE last_failure >= $1 ORDER BY last_failure DESC, \"user\", source",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let accounts: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT \"user\", failures, last_failure FROM account_failures \
             WHERE last_failure >= $1 ORDER BY last_failure DESC, \"user\"",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let bans: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT source, banned_at, banned_until, accounts FROM address_bans \
             WHERE banned_until > $1 ORDER BY banned_at DESC, source",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(LockoutState {
            sources: sources
                .into_iter()
                .map(|(user, source, failures, last_failure)| SourceFailures {
                    user,
                    source,
                    failures: count(failures),
                    last_failure,
                })
                .collect(),
            accounts: accounts
                .into_iter()
                .map(|(user, failures, last_failure)| AccountFailures {
                    user,
                    failures: count(failures),
                    last_failure,
                })
                .collect(),
            bans: bans
                .into_iter()
                .map(|(source, banned_at, banned_until, accounts)| Ban {
                    source,
                    banned_at,
                    banned_until,
                    accounts: count(accounts),
                })
                .collect(),
        })
    }

    async fn clear_lockouts(&self, target: ClearTarget<'_>) -> Result<u64, DirectoryError> {
        let mut tx = self.pool.begin().await?;
        let statements: &[&'static str] = match target {
            ClearTarget::User(_) => &[
                "DELETE FROM auth_failures WHERE \"user\" = $1",
                "DELETE FROM account_failures WHERE \"user\" = $1",
            ],
            ClearTarget::Source(_) => &[
                "DELETE FROM auth_failures WHERE source = $1",
                "DELETE FROM address_bans WHERE source = $1",
            ],
            ClearTarget::All => &[
                "DELETE FROM auth_failures",
                "DELETE FROM account_failures",
                "DELETE FROM address_bans",
            ],
        };
        let mut removed = 0;
        for statement in statements {
            let mut query = sqlx::query(*statement);
            if let ClearTarget::User(key) | ClearTarget::Source(key) = target {
                query = query.bind(key);
            }
            removed += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn record_sign_in(&self, e: &SignInEntry) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await?;
        let added = sqlx::query(
            "INSERT INTO sign_in_history (\"user\", at, address, mechanism, result) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM users WHERE name = $1)",
        )
        .bind(&e.user)
        .bind(e.at)
        .bind(&e.address)
        .bind(&e.mechanism)
        .bind(&e.result)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if added > 0 {
            sqlx::query(
                "DELETE FROM sign_in_history WHERE \"user\" = $1 AND id NOT IN \
                 (SELECT id FROM sign_in_history WHERE \"user\" = $1 \
                  ORDER BY at DESC, id DESC LIMIT $2)",
            )
            .bind(&e.user)
            .bind(HISTORY_PER_USER)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn sign_in_history(
        &self,
        user: &str,
        limit: u32,
    ) -> Result<Vec<SignInEntry>, DirectoryError> {
        let rows: Vec<(String, i64, String, String, String)> = sqlx::query_as(
            "SELECT \"user\", at, address, mechanism, result FROM sign_in_history \
             WHERE \"user\" = $1 ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(user)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(user, at, address, mechanism, result)| SignInEntry {
                user,
                at,
                address,
                mechanism,
                result,
            })
            .collect())
    }

    async fn notices_enabled(&self, user: &str) -> Result<Option<bool>, DirectoryError> {
        Ok(
            sqlx::query_scalar("SELECT notices FROM users WHERE name = $1")
                .bind(user)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn set_notices(&self, user: &str, on: bool) -> Result<bool, DirectoryError> {
        let done = sqlx::query("UPDATE users SET notices = $2 WHERE name = $1")
            .bind(user)
            .bind(on)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn mfa_policy(&self, user: &str) -> Result<Option<String>, DirectoryError> {
        Ok(
            sqlx::query_scalar::<_, Option<String>>("SELECT mfa_policy FROM users WHERE name = $1")
                .bind(user)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    async fn set_mfa_policy(
        &self,
        user: &str,
        policy: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query("UPDATE users SET mfa_policy = $2 WHERE name = $1")
            .bind(user)
            .bind(policy)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn mfa(&self, user: &str) -> Result<Option<MfaRecord>, DirectoryError> {
        let row: Option<(String, bool, i64, i64)> = sqlx::query_as(
            "SELECT totp_secret, confirmed, last_step, enrolled_at FROM mfa WHERE \"user\" = $1",
        )
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(totp_secret, confirmed, last_step, enrolled_at)| MfaRecord {
                totp_secret,
                confirmed,
                last_step,
                enrolled_at,
            },
        ))
    }

    async fn set_mfa(&self, user: &str, record: Option<&MfaRecord>) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await?;
        match record {
            Some(r) => {
                sqlx::query(
                    "INSERT INTO mfa (\"user\", totp_secret, confirmed, last_step, enrolled_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (\"user\") DO UPDATE SET \
                     totp_secret = EXCLUDED.totp_secret, confirmed = EXCLUDED.confirmed, \
                     last_step = EXCLUDED.last_step, enrolled_at = EXCLUDED.enrolled_at",
                )
                .bind(user)
                .bind(&r.totp_secret)
                .bind(r.confirmed)
                .bind(r.last_step)
                .bind(r.enrolled_at)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                for statement in [
                    "DELETE FROM mfa WHERE \"user\" = $1",
                    "DELETE FROM recovery_codes WHERE \"user\" = $1",
                ] {
                    sqlx::query(statement).bind(user).execute(&mut *tx).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn accept_totp_step(&self, user: &str, step: i64) -> Result<bool, DirectoryError> {
        let done =
            sqlx::query("UPDATE mfa SET last_step = $2 WHERE \"user\" = $1 AND last_step < $2")
                .bind(user)
                .bind(step)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_recovery_codes(
        &self,
        user: &str,
        hashes: &[String],
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM recovery_codes WHERE \"user\" = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        for hash in hashes {
            sqlx::query("INSERT INTO recovery_codes (\"user\", code_hash) VALUES ($1, $2)")
                .bind(user)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn use_recovery_code(
        &self,
        user: &str,
        hash: &str,
        now: Millis,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query(
            "UPDATE recovery_codes SET used_at = $3 \
             WHERE \"user\" = $1 AND code_hash = $2 AND used_at IS NULL",
        )
        .bind(user)
        .bind(hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn recovery_codes_left(&self, user: &str) -> Result<u32, DirectoryError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE \"user\" = $1 AND used_at IS NULL",
        )
        .bind(user)
        .fetch_one(&self.pool)
        .await?;
        Ok(count(n))
    }

    async fn add_app_password(&self, a: &AppPassword) -> Result<i64, DirectoryError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO app_passwords (\"user\", label, hash, created_at, expires_at, \
             networks, read_only) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(&a.user)
        .bind(&a.label)
        .bind(&a.hash)
        .bind(a.created_at)
        .bind(a.expires_at)
        .bind(&a.networks)
        .bind(a.read_only)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    async fn find_app_password(&self, hash: &str) -> Result<Option<AppPassword>, DirectoryError> {
        let row: Option<AppRow> = sqlx::query_as(sql(format!(
            "SELECT {APP_COLUMNS} FROM app_passwords WHERE hash = $1"
        )))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(app))
    }

    async fn list_app_passwords(&self, user: &str) -> Result<Vec<AppPassword>, DirectoryError> {
        let rows: Vec<AppRow> = sqlx::query_as(sql(format!(
            "SELECT {APP_COLUMNS} FROM app_passwords WHERE \"user\" = $1 ORDER BY id"
        )))
        .bind(user)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(app).collect())
    }

    async fn revoke_app_password(&self, user: &str, id: i64) -> Result<bool, DirectoryError> {
        let done = sqlx::query("DELETE FROM app_passwords WHERE \"user\" = $1 AND id = $2")
            .bind(user)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn touch_app_password(
        &self,
        id: i64,
        at: Millis,
        from: &str,
    ) -> Result<(), DirectoryError> {
        sqlx::query(
            "UPDATE app_passwords SET last_used_at = $2, last_used_from = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(at)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn prune_defence(&self, before: Millis) -> Result<u64, DirectoryError> {
        let mut tx = self.pool.begin().await?;
        let mut removed = 0;
        for statement in [
            "DELETE FROM auth_failures WHERE last_failure < $1",
            "DELETE FROM account_failures WHERE last_failure < $1",
            "DELETE FROM address_bans WHERE banned_until < $1",
        ] {
            removed += sqlx::query(statement)
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }

    async fn server_secret(&self, name: &str) -> Result<Option<String>, DirectoryError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM server_secrets WHERE name = $1")
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
            "INSERT INTO server_secrets (name, value) VALUES ($1, $2) \
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

    crate::rotation::queries!("$1", "$2", "$3", "\"user\"");

    async fn replace_server_secret(
        &self,
        name: &str,
        expected: &str,
        new: &str,
    ) -> Result<bool, DirectoryError> {
        let done =
            sqlx::query("UPDATE server_secrets SET value = $3 WHERE name = $1 AND value = $2")
                .bind(name)
                .bind(expected)
                .bind(new)
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
            "INSERT INTO maildrop_leases AS l (maildrop, owner, expires_at) \
             VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $3) \
             ON CONFLICT (maildrop) DO UPDATE SET owner = excluded.owner, \
             expires_at = excluded.expires_at \
             WHERE l.expires_at <= (extract(epoch FROM clock_timestamp()) * 1000)::bigint OR l.owner = excluded.owner",
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
            "UPDATE maildrop_leases SET expires_at = (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $3 \
             WHERE maildrop = $1 AND owner = $2",
        )
        .bind(maildrop)
        .bind(owner)
        .bind(ttl_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_lease(&self, maildrop: &str, owner: &str) -> Result<(), DirectoryError> {
        sqlx::query("DELETE FROM maildrop_leases WHERE maildrop = $1 AND owner = $2")
            .bind(maildrop)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn break_lease(&self, maildrop: &str) -> Result<bool, DirectoryError> {
        let done = sqlx::query("DELETE FROM maildrop_leases WHERE maildrop = $1")
            .bind(maildrop)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl PgDirectory {
    /// A reserved attempt turned out a failure: it is counted already, so only a
    /// repeat of a recent wrong secret changes the counts (taking the reservation
    /// back); otherwise the secret joins the recent ones. None if a success wiped the
    /// (user, source) row meanwhile: then it is counted like an unreserved failure.
    async fn settle_reserved_failure(
        &self,
        f: &FailureRecord<'_>,
    ) -> Result<Option<FailureCounts>, DirectoryError> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT failures, recent FROM auth_failures \
             WHERE \"user\" = $1 AND source = $2 AND last_failure >= $3 FOR UPDATE",
        )
        .bind(f.user)
        .bind(f.source)
        .bind(f.forget_before)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((failures, recent)) = row else {
            return Ok(None);
        };
        let repeated = f
            .attempt
            .is_some_and(|a| recent.split(RECENT_SEPARATOR).any(|r| r == a));
        let failures = if repeated {
            sqlx::query(
                "UPDATE auth_failures SET failures = GREATEST(failures - 1, 0) \
                 WHERE \"user\" = $1 AND source = $2",
            )
            .bind(f.user)
            .bind(f.source)
            .execute(&mut *tx)
            .await?;
            if f.unfamiliar {
                sqlx::query(
                    "UPDATE account_failures SET failures = GREATEST(failures - 1, 0) \
                     WHERE \"user\" = $1 AND last_failure >= $2",
                )
                .bind(f.user)
                .bind(f.forget_before)
                .execute(&mut *tx)
                .await?;
            }
            (failures - 1).max(0)
        } else {
            if let Some(attempt) = f.attempt {
                sqlx::query(
                    "UPDATE auth_failures SET recent = $3, last_failure = GREATEST(last_failure, $4) \
                     WHERE \"user\" = $1 AND source = $2",
                )
                .bind(f.user)
                .bind(f.source)
                .bind(remember(&recent, attempt, f.remember))
                .bind(f.now)
                .execute(&mut *tx)
                .await?;
            }
            failures
        };
        let account: Option<i64> = sqlx::query_scalar(
            "SELECT failures FROM account_failures WHERE \"user\" = $1 AND last_failure >= $2",
        )
        .bind(f.user)
        .bind(f.forget_before)
        .fetch_optional(&mut *tx)
        .await?;
        let accounts_from_source: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM auth_failures WHERE source = $1 AND last_failure >= $2",
        )
        .bind(f.source)
        .bind(f.spray_since)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(FailureCounts {
            repeated,
            failures: count(failures),
            account_failures: account.map_or(0, count),
            accounts_from_source: count(accounts_from_source),
        }))
    }
}

/// The defence state of one attempt.
async fn read_state(
    conn: &mut sqlx::PgConnection,
    q: &GuardQuery<'_>,
) -> Result<GuardState, DirectoryError> {
    let mut state = GuardState::default();
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT failures, last_failure FROM auth_failures \
         WHERE \"user\" = $1 AND source = $2 AND last_failure >= $3",
    )
    .bind(q.user)
    .bind(q.source)
    .bind(q.forget_before)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((failures, last)) = row {
        state.failures = count(failures);
        state.last_failure = Some(last);
    }
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT failures, last_failure FROM account_failures \
         WHERE \"user\" = $1 AND last_failure >= $2",
    )
    .bind(q.user)
    .bind(q.forget_before)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((failures, last)) = row {
        state.account_failures = count(failures);
        state.account_last_failure = Some(last);
    }
    let (network, any): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT MAX(CASE WHEN network = $2 THEN last_success END), MAX(last_success) \
         FROM familiar_networks WHERE \"user\" = $1",
    )
    .bind(q.user)
    .bind(q.network)
    .fetch_one(&mut *conn)
    .await?;
    state.network_last_success = network;
    state.last_success = any;
    state.source_banned_until = sqlx::query_scalar(
        "SELECT banned_until FROM address_bans WHERE source = $1 AND banned_until > $2",
    )
    .bind(q.source)
    .bind(q.now)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(state)
}

/// The advisory lock class of sign-in reservations (the second key is the user name's
/// hash).
const ADVISORY_RESERVE: i32 = 0x706f_7072; // "popr"

/// One more failure from an unfamiliar network for the account (a stale count starts
/// again); its new count.
async fn count_account_failure(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user: &str,
    now: Millis,
    forget_before: Millis,
) -> Result<i64, DirectoryError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO account_failures AS a (\"user\", failures, last_failure) \
         VALUES ($1, 1, $2) \
         ON CONFLICT (\"user\") DO UPDATE SET \
         failures = CASE WHEN a.last_failure < $3 THEN 1 ELSE a.failures + 1 END, \
         last_failure = $2 \
         RETURNING failures",
    )
    .bind(user)
    .bind(now)
    .bind(forget_before)
    .fetch_one(&mut **tx)
    .await?)
}

#[cfg(test)]
mod tests;
