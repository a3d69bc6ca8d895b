//! The defence tables (migration 0004) for SQLite.
//!
//! Writes run in `BEGIN IMMEDIATE` transactions: SQLite answers a read transaction that
//! later tries to write with SQLITE_BUSY at once (no busy wait) when another connection
//! wrote meanwhile, so a read-modify-write must hold the write lock from its start.

use super::SqliteDirectory;
use crate::DirectoryError;
use crate::defence::{
    AccountFailures, Ban, ClearTarget, FailureCounts, FailureRecord, GuardQuery, GuardState,
    LockoutState, Millis, SignInEntry, SourceFailures,
};

/// Separates the keyed hashes in `auth_failures.recent`.
const RECENT_SEPARATOR: char = ' ';

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl SqliteDirectory {
    pub(super) async fn guard_state_impl(
        &self,
        q: &GuardQuery<'_>,
    ) -> Result<GuardState, DirectoryError> {
        // One statement, so one round trip to the database thread: every sign-in
        // begins here.
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
            .fetch_one(&self.pool)
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
        if !repeated {
            failures = failures.saturating_add(1);
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
            if f.unfamiliar {
                sqlx::query(
                    "INSERT INTO account_failures (user, failures, last_failure) \
                     VALUES (?1, 1, ?2) \
                     ON CONFLICT (user) DO UPDATE SET \
                     failures = CASE WHEN last_failure < ?3 THEN 1 ELSE failures + 1 END, \
                     last_failure = excluded.last_failure",
                )
                .bind(f.user)
                .bind(f.now)
                .bind(f.forget_before)
                .execute(&mut *tx)
                .await?;
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
fn remember(recent: &str, attempt: &str, keep: usize) -> String {
    let mut entries: Vec<&str> = recent
        .split(RECENT_SEPARATOR)
        .filter(|e| !e.is_empty())
        .collect();
    entries.push(attempt);
    let skip = entries.len().saturating_sub(keep);
    entries[skip..].join(&RECENT_SEPARATOR.to_string())
}

#[cfg(test)]
mod tests {
    use super::remember;

    #[test]
    fn remember_keeps_the_newest() {
        assert_eq!(remember("", "a", 3), "a");
        assert_eq!(remember("a b c", "d", 3), "b c d");
        assert_eq!(remember("a", "b", 0), "");
    }
}
