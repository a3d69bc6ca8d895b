//! The defence tables (migration 0004) for SQLite.
//!
//! Writes run in `BEGIN IMMEDIATE` transactions: SQLite answers a read transaction that
//! later tries to write with SQLITE_BUSY at once (no busy wait) when another connection
//! wrote meanwhile, so a read-modify-write must hold the write lock from its start.

use super::SqliteDirectory;
use crate::DirectoryError;
use crate::defence::{
    AccountFailures, Ban, ClearTarget, FailureCounts, FailureRecord, GuardQuery, GuardState,
    LockoutState, Millis, Reservation, ReserveQuery, SignInEntry, SourceFailures,
};

use crate::defence::{RECENT_SEPARATOR, remember};

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl SqliteDirectory {
    pub(super) async fn guard_state_impl(
        &self,
        q: &GuardQuery<'_>,
    ) -> Result<GuardState, DirectoryError> {
        read_state(&self.pool, q).await
    }

    pub(super) async fn reserve_attempt_impl(
        &self,
        r: &ReserveQuery<'_>,
        admit: &(dyn Fn(&GuardState) -> bool + Sync),
    ) -> Result<Reservation, DirectoryError> {
        // One process owns a SQLite directory: it decides its attempts in turn itself
        // (`auth`'s guard), so a reservation is a read, and only outcomes are written.
        // A write per attempt here halved the sign-ins a second (every commit waits for
        // the write lock and the disk).
        let state = read_state(&self.pool, &r.query).await?;
        let unfamiliar = r.count_account
            && state
                .network_last_success
                .is_none_or(|t| t < r.familiar_since);
        Ok(Reservation {
            state,
            reserved: admit(&state),
            unfamiliar,
            counted: false,
        })
    }

    pub(super) async fn release_attempt_impl(
        &self,
        user: &str,
        source: &str,
        unfamiliar: bool,
        forget_before: Millis,
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "UPDATE auth_failures SET failures = MAX(failures - 1, 0) \
             WHERE user = ?1 AND source = ?2 AND last_failure >= ?3",
        )
        .bind(user)
        .bind(source)
        .bind(forget_before)
        .execute(&mut *tx)
        .await?;
        if unfamiliar {
            sqlx::query(
                "UPDATE account_failures SET failures = MAX(failures - 1, 0) \
                 WHERE user = ?1 AND last_failure >= ?2",
            )
            .bind(user)
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn record_failure_impl(
        &self,
        f: &FailureRecord<'_>,
    ) -> Result<FailureCounts, DirectoryError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row: Option<(i64, i64, String)> = sqlx::query_as(
            "SELECT failures, last_failure, recent FROM auth_failures \
             WHERE user = ?1 AND source = ?2",
        )
        .bind(f.user)
        .bind(f.source)
        .fetch_optional(&mut *tx)
        .await?;
        // A reservation is counted already, unless a success wiped its row meanwhile.
        let reserved = f.reserved && matches!(row, Some((_, last, _)) if last >= f.forget_before);
        let (mut failures, mut recent) = match row {
            Some((n, last, recent)) if last >= f.forget_before => (count(n), recent),
            _ => (0, String::new()),
        };
        let repeated = f
            .attempt
            .is_some_and(|a| recent.split(RECENT_SEPARATOR).any(|r| r == a));
        let mut counts = FailureCounts {
            repeated,
            ..FailureCounts::default()
        };
        if repeated && reserved {
            // A client retrying a stale secret counts once: the reservation goes back.
            failures = failures.saturating_sub(1);
            sqlx::query("UPDATE auth_failures SET failures = ?3 WHERE user = ?1 AND source = ?2")
                .bind(f.user)
                .bind(f.source)
                .bind(i64::from(failures))
                .execute(&mut *tx)
                .await?;
            if f.unfamiliar {
                sqlx::query(
                    "UPDATE account_failures SET failures = MAX(failures - 1, 0) \
                     WHERE user = ?1 AND last_failure >= ?2",
                )
                .bind(f.user)
                .bind(f.forget_before)
                .execute(&mut *tx)
                .await?;
            }
        }
        if !repeated {
            if !reserved {
                failures = failures.saturating_add(1);
            }
            if let Some(attempt) = f.attempt {
                recent = remember(&recent, attempt, f.remember);
            }
            sqlx::query(
                "INSERT INTO auth_failures (user, source, failures, last_failure, recent) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (user, source) DO UPDATE SET failures = excluded.failures, \
                 last_failure = excluded.last_failure, recent = excluded.recent",
            )
            .bind(f.user)
            .bind(f.source)
            .bind(i64::from(failures))
            .bind(f.now)
            .bind(&recent)
            .execute(&mut *tx)
            .await?;
            if f.unfamiliar && !reserved {
                count_account_failure(&mut tx, f.user, f.now, f.forget_before).await?;
            }
        }
        counts.failures = failures;
        counts.account_failures = sqlx::query_scalar::<_, i64>(
            "SELECT failures FROM account_failures WHERE user = ?1 AND last_failure >= ?2",
        )
        .bind(f.user)
        .bind(f.forget_before)
        .fetch_optional(&mut *tx)
        .await?
        .map_or(0, count);
        counts.accounts_from_source = count(
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM auth_failures WHERE source = ?1 AND last_failure >= ?2",
            )
            .bind(f.source)
            .bind(f.spray_since)
            .fetch_one(&mut *tx)
            .await?,
        );
        tx.commit().await?;
        Ok(counts)
    }

    pub(super) async fn record_success_impl(
        &self,
        user: &str,
        source: &str,
        network: &str,
        now: Millis,
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM auth_failures WHERE user = ?1 AND source = ?2")
            .bind(user)
            .bind(source)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO familiar_networks (user, network, first_success, last_success) \
             VALUES (?1, ?2, ?3, ?3) \
             ON CONFLICT (user, network) DO UPDATE SET \
             last_success = MAX(last_success, excluded.last_success)",
        )
        .bind(user)
        .bind(network)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn ban_source_impl(
        &self,
        source: &str,
        now: Millis,
        until: Millis,
        accounts: u32,
    ) -> Result<(), DirectoryError> {
        sqlx::query(
            "INSERT INTO address_bans (source, banned_at, banned_until, accounts) \
             VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (source) DO UPDATE SET \
             banned_at = CASE WHEN banned_until <= excluded.banned_at \
                 THEN excluded.banned_at ELSE banned_at END, \
             banned_until = MAX(banned_until, excluded.banned_until), \
             accounts = MAX(accounts, excluded.accounts)",
        )
        .bind(source)
        .bind(now)
        .bind(until)
        .bind(i64::from(accounts))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn source_ban_impl(
        &self,
        source: &str,
        now: Millis,
    ) -> Result<Option<Millis>, DirectoryError> {
        Ok(sqlx::query_scalar(
            "SELECT banned_until FROM address_bans WHERE source = ?1 AND banned_until > ?2",
        )
        .bind(source)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub(super) async fn network_familiar_to_anyone_impl(
        &self,
        network: &str,
        since: Millis,
    ) -> Result<bool, DirectoryError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM familiar_networks WHERE network = ?1 AND last_success >= ?2 LIMIT 1",
        )
        .bind(network)
        .bind(since)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    pub(super) async fn lockout_state_impl(
        &self,
        now: Millis,
        since: Millis,
    ) -> Result<LockoutState, DirectoryError> {
        let sources: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT user, source, failures, last_failure FROM auth_failures \
             WHERE last_failure >= ?1 ORDER BY last_failure DESC, user, source",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let accounts: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT user, failures, last_failure FROM account_failures \
             WHERE last_failure >= ?1 ORDER BY last_failure DESC, user",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        let bans: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT source, banned_at, banned_until, accounts FROM address_bans \
             WHERE banned_until > ?1 ORDER BY banned_at DESC, source",
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

    pub(super) async fn clear_lockouts_impl(
        &self,
        target: ClearTarget<'_>,
    ) -> Result<u64, DirectoryError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let statements: &[&'static str] = match target {
            ClearTarget::User(_) => &[
                "DELETE FROM auth_failures WHERE user = ?1",
                "DELETE FROM account_failures WHERE user = ?1",
            ],
            ClearTarget::Source(_) => &[
                "DELETE FROM auth_failures WHERE source = ?1",
                "DELETE FROM address_bans WHERE source = ?1",
            ],
            ClearTarget::All => &[
                "DELETE FROM auth_failures",
                "DELETE FROM account_failures",
                "DELETE FROM address_bans",
            ],
        };
        let key = match target {
            ClearTarget::User(k) | ClearTarget::Source(k) => k,
            ClearTarget::All => "",
        };
        let mut removed = 0;
        for statement in statements {
            let mut query = sqlx::query(*statement);
            if !matches!(target, ClearTarget::All) {
                query = query.bind(key);
            }
            removed += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }

    pub(super) async fn record_sign_in_impl(&self, e: &SignInEntry) -> Result<(), DirectoryError> {
        // The trigger of migration 0010 keeps the newest HISTORY_PER_USER entries.
        sqlx::query(
            "INSERT INTO sign_in_history (user, at, address, mechanism, result) \
             SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM users WHERE name = ?1)",
        )
        .bind(&e.user)
        .bind(e.at)
        .bind(&e.address)
        .bind(&e.mechanism)
        .bind(&e.result)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn sign_in_history_impl(
        &self,
        user: &str,
        limit: u32,
    ) -> Result<Vec<SignInEntry>, DirectoryError> {
        let rows: Vec<(String, i64, String, String, String)> = sqlx::query_as(
            "SELECT user, at, address, mechanism, result FROM sign_in_history \
             WHERE user = ?1 ORDER BY at DESC, rowid DESC LIMIT ?2",
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

    pub(super) async fn prune_defence_impl(&self, before: Millis) -> Result<u64, DirectoryError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut removed = 0;
        for statement in [
            "DELETE FROM auth_failures WHERE last_failure < ?1",
            "DELETE FROM account_failures WHERE last_failure < ?1",
            "DELETE FROM address_bans WHERE banned_until < ?1",
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
}

/// `recent` with `attempt` appended, keeping the newest `keep` entries.
/// The defence state of one attempt, in one statement (one round trip to the database
/// thread: every sign-in begins here).
async fn read_state<'e, E>(ex: E, q: &GuardQuery<'_>) -> Result<GuardState, DirectoryError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    type Row = (
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    );
    let (failures, last, account_failures, account_last, network, any, banned): Row =
        sqlx::query_as(
            "SELECT \
             (SELECT failures FROM auth_failures \
               WHERE user = ?1 AND source = ?2 AND last_failure >= ?3), \
             (SELECT last_failure FROM auth_failures \
               WHERE user = ?1 AND source = ?2 AND last_failure >= ?3), \
             (SELECT failures FROM account_failures WHERE user = ?1 AND last_failure >= ?3), \
             (SELECT last_failure FROM account_failures WHERE user = ?1 AND last_failure >= ?3), \
             (SELECT MAX(CASE WHEN network = ?4 THEN last_success END) \
               FROM familiar_networks WHERE user = ?1), \
             (SELECT MAX(last_success) FROM familiar_networks WHERE user = ?1), \
             (SELECT banned_until FROM address_bans WHERE source = ?2 AND banned_until > ?5)",
        )
        .bind(q.user)
        .bind(q.source)
        .bind(q.forget_before)
        .bind(q.network)
        .bind(q.now)
        .fetch_one(ex)
        .await?;
    let mut state = GuardState::default();
    if let (Some(failures), Some(last)) = (failures, last) {
        state.failures = count(failures);
        state.last_failure = Some(last);
    }
    if let (Some(failures), Some(last)) = (account_failures, account_last) {
        state.account_failures = count(failures);
        state.account_last_failure = Some(last);
    }
    state.network_last_success = network;
    state.last_success = any;
    state.source_banned_until = banned;
    Ok(state)
}

/// One more failure from an unfamiliar network for the account (a stale count starts
/// again).
async fn count_account_failure(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    user: &str,
    now: Millis,
    forget_before: Millis,
) -> Result<(), DirectoryError> {
    sqlx::query(
        "INSERT INTO account_failures (user, failures, last_failure) \
         VALUES (?1, 1, ?2) \
         ON CONFLICT (user) DO UPDATE SET \
         failures = CASE WHEN last_failure < ?3 THEN 1 ELSE failures + 1 END, \
         last_failure = excluded.last_failure",
    )
    .bind(user)
    .bind(now)
    .bind(forget_before)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
