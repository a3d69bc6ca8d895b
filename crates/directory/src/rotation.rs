//! What a key rotation reads and rewrites: the sealed secrets and the keyed hashes. One
//! body for both SQL backends, which differ only in their placeholders (`?1`, `$1`) and
//! in how the `user` column is named (a reserved word in PostgreSQL).

/// The four [`crate::Directory`] methods of a rotation, for a backend with a `pool`.
macro_rules! queries {
    ($p1:literal, $p2:literal, $p3:literal, $user:literal) => {
        async fn sealed_secrets(&self) -> Result<Vec<crate::SealedSecret>, DirectoryError> {
            let rows: Vec<(String, String, String)> = sqlx::query_as(concat!(
                "SELECT name, 'apop', apop_secret FROM users WHERE apop_secret IS NOT NULL ",
                "UNION ALL SELECT ",
                $user,
                ", 'totp', totp_secret FROM mfa ORDER BY 1, 2"
            ))
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(user, kind, value)| crate::SealedSecret {
                    user,
                    kind: if kind == "apop" {
                        crate::SealedKind::Apop
                    } else {
                        crate::SealedKind::Totp
                    },
                    value,
                })
                .collect())
        }

        async fn reseal(
            &self,
            secret: &crate::SealedSecret,
            sealed: &str,
        ) -> Result<bool, DirectoryError> {
            let sql = match secret.kind {
                crate::SealedKind::Apop => concat!(
                    "UPDATE users SET apop_secret = ",
                    $p3,
                    " WHERE name = ",
                    $p1,
                    " AND apop_secret = ",
                    $p2
                ),
                crate::SealedKind::Totp => concat!(
                    "UPDATE mfa SET totp_secret = ",
                    $p3,
                    " WHERE ",
                    $user,
                    " = ",
                    $p1,
                    " AND totp_secret = ",
                    $p2
                ),
            };
            let done = sqlx::query(sql)
                .bind(&secret.user)
                .bind(&secret.value)
                .bind(sealed)
                .execute(&self.pool)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        async fn keyed_hashes(&self) -> Result<Vec<crate::KeyedHash>, DirectoryError> {
            let rows: Vec<(String, Option<i64>, Option<String>, String)> = sqlx::query_as(concat!(
                "SELECT ",
                $user,
                ", id, label, hash FROM app_passwords ",
                "UNION ALL SELECT ",
                $user,
                ", NULL, NULL, code_hash FROM recovery_codes ",
                "WHERE used_at IS NULL ORDER BY 1, 2"
            ))
            .fetch_all(&self.pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(user, id, label, hash)| crate::KeyedHash {
                    user,
                    app_password: id.map(|id| (id, label.unwrap_or_default())),
                    hash,
                })
                .collect())
        }

        async fn rekey_app_password(
            &self,
            id: i64,
            old: &str,
            new: &str,
        ) -> Result<bool, DirectoryError> {
            let done = sqlx::query(concat!(
                "UPDATE app_passwords SET hash = ",
                $p3,
                " WHERE id = ",
                $p1,
                " AND hash = ",
                $p2
            ))
            .bind(id)
            .bind(old)
            .bind(new)
            .execute(&self.pool)
            .await?;
            Ok(done.rows_affected() == 1)
        }
    };
}

pub(crate) use queries;
