//! Password dates and origin (migration 0006) and last sign-ins, for SQLite.

use super::SqliteDirectory;
use crate::credentials::{CredentialDates, LastSignIn};
use crate::{DirectoryError, UserRecord};

impl SqliteDirectory {
    /// Inserts a user: either made here (password set now) or imported (date unknown).
    pub(super) async fn insert_user(
        &self,
        user: &UserRecord,
        imported: bool,
    ) -> Result<(), DirectoryError> {
        // Times as the users table keeps them: RFC 3339 UTC with milliseconds.
        sqlx::query(
            "INSERT INTO users (name, password_hash, enabled, maildir, scram_sha256, apop_secret, \
             allowed_networks, imported, password_set_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
             CASE WHEN ?8 THEN NULL ELSE strftime('%Y-%m-%dT%H:%M:%fZ', 'now') END)",
        )
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

    pub(super) async fn change_password_impl(
        &self,
        name: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        let done = sqlx::query(
            "UPDATE users SET password_hash = ?2, scram_sha256 = ?3, imported = 0, \
             password_set_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), \
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') WHERE name = ?1",
        )
        .bind(name)
        .bind(password_hash)
        .bind(scram_sha256)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub(super) async fn credential_dates_impl(
        &self,
    ) -> Result<Vec<CredentialDates>, DirectoryError> {
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

    pub(super) async fn last_sign_ins_impl(&self) -> Result<Vec<LastSignIn>, DirectoryError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            // Familiar networks keep the time of every network's last success (refreshed
            // hourly); the history has exact times of the newest sign-ins.
            "SELECT user, MAX(at) FROM ( \
                 SELECT user, last_success AS at FROM familiar_networks \
                 UNION ALL \
                 SELECT user, at FROM sign_in_history WHERE result = 'success' \
             ) GROUP BY user ORDER BY user",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(user, at)| LastSignIn { user, at })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Directory as _;
    use crate::testing::sample_user;

    /// Accounts made before migration 0006: those with a legacy hash can only have
    /// come from an import; the others are not known to be imported.
    #[tokio::test]
    async fn migration_marks_existing_legacy_hashes_imported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("poplar.db");
        {
            let db = SqliteDirectory::open(&path).await.unwrap();
            db.add_user(&sample_user("made")).await.unwrap();
            let mut legacy = sample_user("legacy");
            legacy.password_hash = "{SHA512-CRYPT}$6$salt$digest".to_owned();
            db.add_user(&legacy).await.unwrap();
            // Back to the schema before 0006.
            for statement in [
                "ALTER TABLE users DROP COLUMN imported",
                "ALTER TABLE users DROP COLUMN password_set_at",
                "DELETE FROM _sqlx_migrations WHERE version = 6",
            ] {
                sqlx::query(statement).execute(&db.pool).await.unwrap();
            }
            db.close().await;
        }
        let db = SqliteDirectory::open(&path).await.unwrap();
        let dates = db.credential_dates().await.unwrap();
        let got: Vec<(&str, bool, bool)> = dates
            .iter()
            .map(|d| (d.user.as_str(), d.imported, d.password_set_at.is_some()))
            .collect();
        assert_eq!(got, [("legacy", true, false), ("made", false, false)]);
    }
}
