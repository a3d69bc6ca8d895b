//! `poplar directory copy`: every row of one directory into another, empty one, between
//! SQLite and PostgreSQL in either direction.
//!
//! The two schemas have the same tables and columns (migrations/sqlite and
//! migrations/postgres), so the copy goes table by table, column by column, and keeps
//! everything: password hashes, SCRAM keys, sealed APOP and TOTP secrets, recovery code
//! hashes, app passwords (with their ids), allowed networks, policies, the defence state,
//! sign-in history, creation dates, and the shared server secrets that the sealed values
//! and keyed hashes depend on. The source is read in one transaction (a consistent
//! snapshot) and the target written in one (all or nothing).

use sqlx::Row as _;

use crate::{AnyDirectory, DirectoryError};

#[derive(Clone, Copy)]
enum Col {
    Text,
    OptText,
    Int,
    OptInt,
    Bool,
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Col)],
    /// ORDER BY for SQLite and for PostgreSQL (their row-order tie-breaks differ).
    order: (&'static str, &'static str),
}

use Col::{Bool, Int, OptInt, OptText, Text};

/// Every table, parents before children (foreign keys).
const TABLES: &[Table] = &[
    Table {
        name: "users",
        columns: &[
            ("name", Text),
            ("password_hash", Text),
            ("enabled", Bool),
            ("maildir", Text),
            ("created_at", Text),
            ("updated_at", Text),
            ("scram_sha256", OptText),
            ("apop_secret", OptText),
            ("allowed_networks", OptText),
            ("notices", Bool),
            ("password_set_at", OptText),
            ("imported", Bool),
            ("mfa_policy", OptText),
        ],
        order: ("name", "name"),
    },
    Table {
        name: "auth_failures",
        columns: &[
            ("\"user\"", Text),
            ("source", Text),
            ("failures", Int),
            ("last_failure", Int),
            ("recent", Text),
        ],
        order: ("\"user\", source", "\"user\", source"),
    },
    Table {
        name: "account_failures",
        columns: &[("\"user\"", Text), ("failures", Int), ("last_failure", Int)],
        order: ("\"user\"", "\"user\""),
    },
    Table {
        name: "familiar_networks",
        columns: &[
            ("\"user\"", Text),
            ("network", Text),
            ("first_success", Int),
            ("last_success", Int),
        ],
        order: ("\"user\", network", "\"user\", network"),
    },
    Table {
        name: "address_bans",
        columns: &[
            ("source", Text),
            ("banned_at", Int),
            ("banned_until", Int),
            ("accounts", Int),
        ],
        order: ("source", "source"),
    },
    Table {
        name: "sign_in_history",
        columns: &[
            ("\"user\"", Text),
            ("at", Int),
            ("address", Text),
            ("mechanism", Text),
            ("result", Text),
        ],
        order: ("at, rowid", "at, id"),
    },
    Table {
        name: "mfa",
        columns: &[
            ("\"user\"", Text),
            ("totp_secret", Text),
            ("confirmed", Bool),
            ("last_step", Int),
            ("enrolled_at", Int),
        ],
        order: ("\"user\"", "\"user\""),
    },
    Table {
        name: "recovery_codes",
        columns: &[("\"user\"", Text), ("code_hash", Text), ("used_at", OptInt)],
        order: ("\"user\", code_hash", "\"user\", code_hash"),
    },
    Table {
        name: "app_passwords",
        columns: &[
            ("id", Int),
            ("\"user\"", Text),
            ("label", Text),
            ("hash", Text),
            ("created_at", Int),
            ("expires_at", OptInt),
            ("networks", OptText),
            ("read_only", Bool),
            ("last_used_at", OptInt),
            ("last_used_from", OptText),
        ],
        order: ("id", "id"),
    },
    Table {
        name: "server_secrets",
        columns: &[("name", Text), ("value", Text), ("created_at", Text)],
        order: ("name", "name"),
    },
];

/// Tables of the schema that are not copied, and why: what they hold is bound to the
/// running nodes, not to the accounts.
const NOT_COPIED: &[(&str, &str)] = &[
    ("maildrop_leases", "live maildrop locks of running nodes"),
    (
        "_sqlx_migrations",
        "the migrator's own record, made by the target's migration",
    ),
];

/// Columns of copied tables that are not copied, and why.
const COLUMNS_NOT_COPIED: &[(&str, &str, &str)] = &[(
    "sign_in_history",
    "id",
    "PostgreSQL's row number (ALWAYS generated): made again in the copy's order",
)];

/// Checks that every table and column of `dir`'s schema is either copied or listed as
/// not copied (and why): a column added by a later migration and forgotten here would
/// otherwise be dropped silently by `directory copy` and `poplar backup`.
pub async fn check_schema(dir: &AnyDirectory) -> Result<(), DirectoryError> {
    let columns: Vec<(String, String)> = match dir {
        AnyDirectory::Sqlite(d) => {
            sqlx::query_as(
                "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p \
                 WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY 1, p.cid",
            )
            .fetch_all(&d.pool)
            .await?
        }
        AnyDirectory::Postgres(d) => {
            sqlx::query_as(
                "SELECT table_name::text, column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() ORDER BY 1, ordinal_position",
            )
            .fetch_all(d.pool())
            .await?
        }
    };
    let mut missing = Vec::new();
    for (table, column) in &columns {
        if NOT_COPIED.iter().any(|(t, _)| t == table) {
            continue;
        }
        let Some(t) = TABLES.iter().find(|t| t.name == table) else {
            if !missing.contains(table) {
                missing.push(table.clone());
            }
            continue;
        };
        let known = t.columns.iter().any(|(c, _)| c.trim_matches('"') == column)
            || COLUMNS_NOT_COPIED
                .iter()
                .any(|(t, c, _)| t == table && c == column);
        if !known {
            missing.push(format!("{table}.{column}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DirectoryError::Unavailable(format!(
            "the schema has what the copy does not know: {} (this version of poplar cannot copy or back up this directory whole)",
            missing.join(", ")
        )))
    }
}

enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Bool(bool),
}

/// Rows copied per table, in copy order.
pub type CopyCounts = Vec<(&'static str, u64)>;

macro_rules! read_rows {
    ($rows:expr, $table:expr) => {{
        let mut out = Vec::with_capacity($rows.len());
        for row in &$rows {
            let mut values = Vec::with_capacity($table.columns.len());
            for (i, (_, col)) in $table.columns.iter().enumerate() {
                values.push(match col {
                    Text | OptText => Value::Text(row.try_get::<Option<String>, _>(i)?),
                    Int | OptInt => Value::Int(row.try_get::<Option<i64>, _>(i)?),
                    Bool => Value::Bool(row.try_get::<bool, _>(i)?),
                });
            }
            out.push(values);
        }
        out
    }};
}

macro_rules! bind_values {
    ($query:expr, $values:expr) => {{
        let mut q = $query;
        for v in $values {
            q = match v {
                Value::Text(t) => q.bind(t.clone()),
                Value::Int(i) => q.bind(*i),
                Value::Bool(b) => q.bind(*b),
            };
        }
        q
    }};
}

fn select(table: &Table, postgres: bool) -> sqlx::AssertSqlSafe<String> {
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let order = if postgres {
        table.order.1
    } else {
        table.order.0
    };
    sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM {} ORDER BY {order}",
        columns.join(", "),
        table.name
    ))
}

fn insert(table: &Table, postgres: bool) -> sqlx::AssertSqlSafe<String> {
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let marks: Vec<String> = (1..=columns.len())
        .map(|i| {
            if postgres {
                format!("${i}")
            } else {
                format!("?{i}")
            }
        })
        .collect();
    sqlx::AssertSqlSafe(format!(
        "INSERT INTO {} ({}) VALUES ({})",
        table.name,
        columns.join(", "),
        marks.join(", ")
    ))
}

/// Copies every row of `from` into `to`, which must be empty (no row in any table).
pub async fn copy_directory(
    from: &AnyDirectory,
    to: &AnyDirectory,
) -> Result<CopyCounts, DirectoryError> {
    copy_directory_with_progress(from, to, |_, _| {}).await
}

/// [`copy_directory`], telling `progress` the rows written so far and the rows to
/// write in all, after every row.
pub async fn copy_directory_with_progress(
    from: &AnyDirectory,
    to: &AnyDirectory,
    mut progress: impl FnMut(u64, u64) + Send,
) -> Result<CopyCounts, DirectoryError> {
    // Nothing of the source left behind unknowingly.
    check_schema(from).await?;
    // Read everything first, in one snapshot.
    let mut data: Vec<Vec<Vec<Value>>> = Vec::with_capacity(TABLES.len());
    match from {
        AnyDirectory::Sqlite(d) => {
            let mut tx = d.pool.begin().await?;
            for table in TABLES {
                let rows = sqlx::query(select(table, false))
                    .fetch_all(&mut *tx)
                    .await?;
                data.push(read_rows!(rows, table));
            }
            tx.commit().await?;
        }
        AnyDirectory::Postgres(d) => {
            let mut tx = d.pool().begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
            for table in TABLES {
                let rows = sqlx::query(select(table, true)).fetch_all(&mut *tx).await?;
                data.push(read_rows!(rows, table));
            }
            tx.commit().await?;
        }
    }
    let mut counts = CopyCounts::new();
    let total: u64 = data.iter().map(|rows| rows.len() as u64).sum();
    let mut written = 0u64;
    progress(0, total);
    match to {
        AnyDirectory::Sqlite(d) => {
            let mut tx = d.pool.begin_with("BEGIN IMMEDIATE").await?;
            for (table, rows) in TABLES.iter().zip(&data) {
                let existing: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM {}",
                    table.name
                )))
                .fetch_one(&mut *tx)
                .await?;
                if existing > 0 {
                    return Err(not_empty(table.name));
                }
                for values in rows {
                    bind_values!(sqlx::query(insert(table, false)), values)
                        .execute(&mut *tx)
                        .await?;
                    written += 1;
                    progress(written, total);
                }
                counts.push((table.name, rows.len() as u64));
            }
            tx.commit().await?;
        }
        AnyDirectory::Postgres(d) => {
            let mut tx = d.pool().begin().await?;
            for (table, rows) in TABLES.iter().zip(&data) {
                // Locks out a second copy (or a node) writing meanwhile.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "LOCK TABLE {} IN EXCLUSIVE MODE",
                    table.name
                )))
                .execute(&mut *tx)
                .await?;
                let existing: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT COUNT(*) FROM {}",
                    table.name
                )))
                .fetch_one(&mut *tx)
                .await?;
                if existing > 0 {
                    return Err(not_empty(table.name));
                }
                for values in rows {
                    bind_values!(sqlx::query(insert(table, true)), values)
                        .execute(&mut *tx)
                        .await?;
                    written += 1;
                    progress(written, total);
                }
                counts.push((table.name, rows.len() as u64));
            }
            // New app passwords continue after the copied ids.
            sqlx::query(
                "SELECT setval(pg_get_serial_sequence('app_passwords', 'id'), \
                 COALESCE(MAX(id), 0) + 1, false) FROM app_passwords",
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
    }
    Ok(counts)
}

fn not_empty(table: &str) -> DirectoryError {
    DirectoryError::Unavailable(format!(
        "the target directory is not empty (table {table} has rows); copy only into a new, empty directory"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{postgres_test_database, sample_user};
    use crate::{
        AppPassword, Directory as _, FailureRecord, Location, MfaRecord, SignInEntry,
        SqliteDirectory,
    };

    async fn seed(dir: &AnyDirectory) {
        let mut alice = sample_user("alice");
        alice.scram_sha256 = Some("SCRAM-SHA-256$4096:c2FsdA==$AAAA:BBBB".into());
        alice.apop_secret = Some("sealed-apop".into());
        alice.allowed_networks = Some("192.0.2.0/24".into());
        dir.add_user(&alice).await.unwrap();
        let mut bob = sample_user("bob");
        bob.enabled = false;
        dir.import_user(&bob).await.unwrap();
        dir.set_notices("bob", false).await.unwrap();
        dir.set_mfa_policy("alice", Some("required")).await.unwrap();
        dir.set_mfa(
            "alice",
            Some(&MfaRecord {
                totp_secret: "sealed-totp".into(),
                confirmed: true,
                last_step: 77,
                enrolled_at: 5,
            }),
        )
        .await
        .unwrap();
        dir.set_recovery_codes("alice", &["r1".into(), "r2".into()])
            .await
            .unwrap();
        assert!(dir.use_recovery_code("alice", "r1", 9).await.unwrap());
        for label in ["phone", "laptop"] {
            dir.add_app_password(&AppPassword {
                id: 0,
                user: "alice".into(),
                label: label.into(),
                hash: format!("h-{label}"),
                created_at: 1,
                expires_at: Some(99),
                networks: Some("198.51.100.0/24".into()),
                read_only: label == "phone",
                last_used_at: None,
                last_used_from: None,
            })
            .await
            .unwrap();
        }
        dir.record_failure(&FailureRecord {
            user: "alice",
            source: "203.0.113.1",
            attempt: Some("x"),
            unfamiliar: true,
            now: 1_000,
            forget_before: 0,
            remember: 3,
            spray_since: 0,
            reserved: false,
        })
        .await
        .unwrap();
        dir.record_success("alice", "192.0.2.1", "192.0.2.0/24", 2_000)
            .await
            .unwrap();
        dir.ban_source("203.0.113.9", 1_000, 9_000_000_000_000, 7)
            .await
            .unwrap();
        dir.record_sign_in(&SignInEntry {
            user: "alice".into(),
            at: 2_000,
            address: "192.0.2.1".into(),
            mechanism: "USER".into(),
            result: "success".into(),
        })
        .await
        .unwrap();
        dir.ensure_server_secret("server_key", "ab".repeat(32).as_str())
            .await
            .unwrap();
    }

    /// Everything a directory answers, for comparing two of them.
    async fn view(dir: &AnyDirectory) -> String {
        let mut out = format!("{:?}\n", dir.list_users().await.unwrap());
        for u in dir.list_users().await.unwrap() {
            out += &format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {:?}\n",
                dir.find_user(&u.name).await.unwrap().map(|u| (
                    u.password_hash,
                    u.scram_sha256,
                    u.apop_secret
                )),
                dir.notices_enabled(&u.name).await.unwrap(),
                dir.mfa_policy(&u.name).await.unwrap(),
                dir.mfa(&u.name).await.unwrap().map(|m| (
                    m.totp_secret,
                    m.confirmed,
                    m.last_step,
                    m.enrolled_at
                )),
                dir.recovery_codes_left(&u.name).await.unwrap(),
                dir.list_app_passwords(&u.name).await.unwrap(),
                dir.sign_in_history(&u.name, 10).await.unwrap(),
            );
        }
        out += &format!("{:?}\n", dir.credential_dates().await.unwrap());
        out += &format!("{:?}\n", dir.last_sign_ins().await.unwrap());
        out += &format!("{:?}\n", dir.lockout_state(1_500, 0).await.unwrap());
        out += &format!("{:?}\n", dir.server_secret("server_key").await.unwrap());
        out
    }

    #[tokio::test]
    async fn sqlite_to_postgres_and_back_keeps_everything() {
        let Some(url) = postgres_test_database().await else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let source = AnyDirectory::Sqlite(
            SqliteDirectory::open(&tmp.path().join("a.db"))
                .await
                .unwrap(),
        );
        seed(&source).await;
        let before = view(&source).await;
        let pg = AnyDirectory::connect(&Location::Postgres(url))
            .await
            .unwrap();
        let counts = copy_directory(&source, &pg).await.unwrap();
        assert!(counts.iter().all(|(_, n)| *n > 0), "{counts:?}");
        assert_eq!(view(&pg).await, before);
        // The used recovery code stays used; the unused one works once.
        assert!(!pg.use_recovery_code("alice", "r1", 10).await.unwrap());
        assert!(pg.use_recovery_code("alice", "r2", 10).await.unwrap());
        // New app passwords continue after the copied ids.
        let new_id = pg
            .add_app_password(&AppPassword {
                id: 0,
                user: "alice".into(),
                label: "new".into(),
                hash: "h-new".into(),
                created_at: 3,
                expires_at: None,
                networks: None,
                read_only: false,
                last_used_at: None,
                last_used_from: None,
            })
            .await
            .unwrap();
        assert_eq!(new_id, 3);
        assert!(pg.revoke_app_password("alice", new_id).await.unwrap());
        assert!(
            pg.set_recovery_codes("alice", &["r1".into(), "r2".into()])
                .await
                .is_ok()
        );
        assert!(pg.use_recovery_code("alice", "r1", 9).await.unwrap());

        let back = AnyDirectory::Sqlite(
            SqliteDirectory::open(&tmp.path().join("b.db"))
                .await
                .unwrap(),
        );
        copy_directory(&pg, &back).await.unwrap();
        assert_eq!(view(&back).await, before);
        // A second copy into a directory with rows is refused, and changes nothing.
        let err = copy_directory(&pg, &back).await.unwrap_err().to_string();
        assert!(err.contains("not empty"), "{err}");
        assert_eq!(view(&back).await, before);
    }

    /// Every table and column of both schemas is copied or listed as not copied; a
    /// column a later migration adds and the copy does not know stops the copy, naming
    /// it, instead of being dropped.
    async fn the_schema_is_checked_whole(dir: AnyDirectory, alter: &str) {
        check_schema(&dir).await.unwrap();
        let empty = tempfile::tempdir().unwrap();
        let to = AnyDirectory::connect(&Location::Sqlite(empty.path().join("to.db")))
            .await
            .unwrap();
        match &dir {
            AnyDirectory::Sqlite(d) => {
                sqlx::query(sqlx::AssertSqlSafe(alter.to_owned()))
                    .execute(&d.pool)
                    .await
                    .unwrap();
            }
            AnyDirectory::Postgres(d) => {
                sqlx::query(sqlx::AssertSqlSafe(alter.to_owned()))
                    .execute(d.pool())
                    .await
                    .unwrap();
            }
        }
        let err = check_schema(&dir).await.unwrap_err().to_string();
        assert!(err.contains("users.nickname"), "{err}");
        let err = copy_directory(&dir, &to).await.unwrap_err().to_string();
        assert!(err.contains("users.nickname"), "{err}");
    }

    #[tokio::test]
    async fn a_column_the_copy_does_not_know_stops_it_sqlite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = AnyDirectory::connect(&Location::Sqlite(tmp.path().join("d.db")))
            .await
            .unwrap();
        the_schema_is_checked_whole(dir, "ALTER TABLE users ADD COLUMN nickname TEXT").await;
    }

    #[tokio::test]
    async fn a_column_the_copy_does_not_know_stops_it_postgres() {
        let Some(url) = postgres_test_database().await else {
            return;
        };
        let dir = AnyDirectory::connect(&Location::Postgres(url))
            .await
            .unwrap();
        the_schema_is_checked_whole(dir, "ALTER TABLE users ADD COLUMN nickname TEXT").await;
    }

    #[tokio::test]
    async fn sqlite_to_sqlite_keeps_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let a = AnyDirectory::Sqlite(
            SqliteDirectory::open(&tmp.path().join("a.db"))
                .await
                .unwrap(),
        );
        seed(&a).await;
        let b = AnyDirectory::Sqlite(
            SqliteDirectory::open(&tmp.path().join("b.db"))
                .await
                .unwrap(),
        );
        let mut seen = Vec::new();
        let counts = copy_directory_with_progress(&a, &b, |done, total| seen.push((done, total)))
            .await
            .unwrap();
        assert_eq!(view(&b).await, view(&a).await);
        // Told from 0 to every row, one row at a time.
        let total: u64 = counts.iter().map(|(_, n)| n).sum();
        assert!(total > 0);
        assert_eq!(seen.first(), Some(&(0, total)));
        assert_eq!(seen.last(), Some(&(total, total)));
        assert_eq!(seen.len() as u64, total + 1);
    }
}
