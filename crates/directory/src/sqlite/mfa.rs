//! The two-factor and app-password tables (migration 0007) for SQLite.

use super::SqliteDirectory;
use crate::mfa::{AppPassword, MfaRecord};
use crate::{DirectoryError, Millis};

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

const APP_COLUMNS: &str = "id, user, label, hash, created_at, expires_at, networks, read_only, \
                           last_used_at, last_used_from";

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

impl SqliteDirectory {
    pub(super) async fn mfa_policy_impl(
        &self,
        user: &str,
    ) -> Result<Option<String>, DirectoryError> {
        Ok(
            sqlx::query_scalar::<_, Option<String>>("SELECT mfa_policy FROM users WHERE name = ?1")
                .bind(user)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    pub(super) async fn set_mfa_policy_impl(
        &self,
        user: &str,
        policy: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query("UPDATE users SET mfa_policy = ?2 WHERE name = ?1")
            .bind(user)
            .bind(policy)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn mfa_impl(&self, user: &str) -> Result<Option<MfaRecord>, DirectoryError> {
        let row: Option<(String, bool, i64, i64)> = sqlx::query_as(
            "SELECT totp_secret, confirmed, last_step, enrolled_at FROM mfa WHERE user = ?1",
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

    pub(super) async fn set_mfa_impl(
        &self,
        user: &str,
        record: Option<&MfaRecord>,
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        match record {
            Some(r) => {
                sqlx::query(
                    "INSERT INTO mfa (user, totp_secret, confirmed, last_step, enrolled_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (user) DO UPDATE SET \
                     totp_secret = excluded.totp_secret, confirmed = excluded.confirmed, \
                     last_step = excluded.last_step, enrolled_at = excluded.enrolled_at",
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
                    "DELETE FROM mfa WHERE user = ?1",
                    "DELETE FROM recovery_codes WHERE user = ?1",
                ] {
                    sqlx::query(statement).bind(user).execute(&mut *tx).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn accept_totp_step_impl(
        &self,
        user: &str,
        step: i64,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query("UPDATE mfa SET last_step = ?2 WHERE user = ?1 AND last_step < ?2")
            .bind(user)
            .bind(step)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn set_recovery_codes_impl(
        &self,
        user: &str,
        hashes: &[String],
    ) -> Result<(), DirectoryError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user = ?1")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        for hash in hashes {
            sqlx::query("INSERT INTO recovery_codes (user, code_hash) VALUES (?1, ?2)")
                .bind(user)
                .bind(hash)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn use_recovery_code_impl(
        &self,
        user: &str,
        hash: &str,
        now: Millis,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query(
            "UPDATE recovery_codes SET used_at = ?3 \
             WHERE user = ?1 AND code_hash = ?2 AND used_at IS NULL",
        )
        .bind(user)
        .bind(hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn recovery_codes_left_impl(&self, user: &str) -> Result<u32, DirectoryError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE user = ?1 AND used_at IS NULL",
        )
        .bind(user)
        .fetch_one(&self.pool)
        .await?;
        Ok(u32::try_from(n).unwrap_or(0))
    }

    pub(super) async fn add_app_password_impl(
        &self,
        a: &AppPassword,
    ) -> Result<i64, DirectoryError> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO app_passwords (user, label, hash, created_at, expires_at, networks, \
             read_only) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
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

    pub(super) async fn find_app_password_impl(
        &self,
        hash: &str,
    ) -> Result<Option<AppPassword>, DirectoryError> {
        let sql = format!("SELECT {APP_COLUMNS} FROM app_passwords WHERE hash = ?1");
        let row: Option<AppRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(app))
    }

    pub(super) async fn list_app_passwords_impl(
        &self,
        user: &str,
    ) -> Result<Vec<AppPassword>, DirectoryError> {
        let sql = format!("SELECT {APP_COLUMNS} FROM app_passwords WHERE user = ?1 ORDER BY id");
        let rows: Vec<AppRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(app).collect())
    }

    pub(super) async fn revoke_app_password_impl(
        &self,
        user: &str,
        id: i64,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query("DELETE FROM app_passwords WHERE user = ?1 AND id = ?2")
            .bind(user)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn touch_app_password_impl(
        &self,
        id: i64,
        at: Millis,
        from: &str,
    ) -> Result<(), DirectoryError> {
        sqlx::query(
            "UPDATE app_passwords SET last_used_at = ?2, last_used_from = ?3 WHERE id = ?1",
        )
        .bind(id)
        .bind(at)
        .bind(from)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
