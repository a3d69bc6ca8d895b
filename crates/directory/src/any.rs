//! A directory chosen at run time by URL: `sqlite://PATH` for the embedded default,
//! `postgres://...` for a directory shared by the nodes of a cluster. Callers keep
//! one concrete type ([`AnyDirectory`]) and every method dispatches to the backend.

use std::path::Path;

use crate::credentials::{CredentialDates, LastSignIn};
use crate::defence::{
    ClearTarget, FailureCounts, FailureRecord, GuardQuery, GuardState, LockoutState, Millis,
    Reservation, ReserveQuery, SignInEntry,
};
use crate::mfa::{AppPassword, MfaRecord};
use crate::{Directory, DirectoryError, PgDirectory, SqliteDirectory, UserRecord};

/// Where a directory lives, parsed from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database (the URL as given).
    Postgres(String),
}

impl Location {
    /// Parses `sqlite://PATH` (PATH as written: `sqlite:///var/lib/poplar/poplar.db`
    /// is absolute, `sqlite://poplar.db` relative) or `postgres://...` /
    /// `postgresql://...`.
    pub fn parse(url: &str) -> Result<Self, DirectoryError> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(DirectoryError::Unavailable(
                    "sqlite:// needs a file path, e.g. sqlite:///var/lib/poplar/poplar.db".into(),
                ));
            }
            Ok(Location::Sqlite(path.into()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Location::Postgres(url.to_owned()))
        } else {
            Err(DirectoryError::Unavailable(format!(
                "directory URL must start with sqlite:// or postgres:// (got {:?})",
                redact(url)
            )))
        }
    }
}

/// Why a PostgreSQL URL must not be used to carry the directory's secrets elsewhere
/// (`directory copy`): a password written into it (it would be on the command line,
/// where `ps` shows it: use `PGPASSWORD` or `~/.pgpass`), or a host other than this
/// one reached without verified TLS (`sslmode=verify-full` or `verify-ca`). `None`
/// when neither, and for SQLite.
pub fn transport_problem(url: &str) -> Option<String> {
    let lower = url.to_ascii_lowercase();
    if !lower.starts_with("postgres://") && !lower.starts_with("postgresql://") {
        return None;
    }
    let rest = &url[url.find("://")? + 3..];
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = authority.split('/').next().unwrap_or("");
    let userinfo = authority.rsplit_once('@').map(|(u, _)| u);
    let password_param = query.split('&').any(|kv| {
        kv.split_once('=')
            .is_some_and(|(k, _)| k.eq_ignore_ascii_case("password") || k.contains('%'))
    });
    if userinfo.is_some_and(|u| u.contains(':')) || password_param {
        return Some(
            "the URL holds a password (or an encoded parameter), which the command line shows to every user (`ps`): give the password in PGPASSWORD or ~/.pgpass instead".into(),
        );
    }
    // Where and how the driver itself would connect (its own parsing, the PG*
    // environment variables included): nothing this check reads differently.
    let options = match url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(options) => options,
        Err(e) => return Some(format!("not a PostgreSQL URL: {e}")),
    };
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let verified = matches!(
        options.get_ssl_mode(),
        sqlx::postgres::PgSslMode::VerifyFull | sqlx::postgres::PgSslMode::VerifyCa
    );
    (!local && !verified).then(|| {
        format!(
            "{host} is another host, reached without verified TLS: the directory's password hashes and sealed secrets would cross the network unprotected; add sslmode=verify-full (and sslrootcert=...) to the URL"
        )
    })
}

/// `url` without a password, for messages.
pub fn redact(url: &str) -> String {
    // A `password=` query parameter too (libpq accepts one).
    let url = match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        None => url.to_owned(),
    };
    let url = url.as_str();
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Either backend behind one type.
#[derive(Clone, Debug)]
pub enum AnyDirectory {
    /// The embedded SQLite file.
    Sqlite(SqliteDirectory),
    /// A shared PostgreSQL database.
    Postgres(PgDirectory),
}

impl AnyDirectory {
    /// Opens (creating if needed) the SQLite directory at `path`.
    pub async fn open(path: &Path) -> Result<Self, DirectoryError> {
        Ok(AnyDirectory::Sqlite(SqliteDirectory::open(path).await?))
    }

    /// Opens the directory at `location`, bringing its schema up to date.
    pub async fn connect(location: &Location) -> Result<Self, DirectoryError> {
        Ok(match location {
            Location::Sqlite(path) => AnyDirectory::Sqlite(SqliteDirectory::open(path).await?),
            Location::Postgres(url) => AnyDirectory::Postgres(PgDirectory::connect(url).await?),
        })
    }

    /// Closes the connection pool.
    pub async fn close(&self) {
        match self {
            AnyDirectory::Sqlite(d) => d.close().await,
            AnyDirectory::Postgres(d) => d.close().await,
        }
    }

    /// `sqlite` or `postgres`, for logs and `config check`.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyDirectory::Sqlite(_) => "sqlite",
            AnyDirectory::Postgres(_) => "postgres",
        }
    }
}

macro_rules! dispatch {
    ($self:ident, $d:ident => $call:expr) => {
        match $self {
            AnyDirectory::Sqlite($d) => $call.await,
            AnyDirectory::Postgres($d) => $call.await,
        }
    };
}

impl Directory for AnyDirectory {
    async fn find_user(&self, name: &str) -> Result<Option<UserRecord>, DirectoryError> {
        dispatch!(self, d => d.find_user(name))
    }
    async fn add_user(&self, user: &UserRecord) -> Result<(), DirectoryError> {
        dispatch!(self, d => d.add_user(user))
    }
    async fn import_user(&self, user: &UserRecord) -> Result<(), DirectoryError> {
        dispatch!(self, d => d.import_user(user))
    }
    async fn upgrade_credentials(
        &self,
        name: &str,
        verified: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.upgrade_credentials(name, verified, password_hash, scram_sha256))
    }
    async fn set_credentials(
        &self,
        name: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.set_credentials(name, password_hash, scram_sha256))
    }
    async fn change_password(
        &self,
        name: &str,
        password_hash: &str,
        scram_sha256: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.change_password(name, password_hash, scram_sha256))
    }
    async fn credential_dates(&self) -> Result<Vec<CredentialDates>, DirectoryError> {
        dispatch!(self, d => d.credential_dates())
    }
    async fn last_sign_ins(&self) -> Result<Vec<LastSignIn>, DirectoryError> {
        dispatch!(self, d => d.last_sign_ins())
    }
    async fn set_apop_secret(
        &self,
        name: &str,
        encrypted: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.set_apop_secret(name, encrypted))
    }
    async fn set_enabled(&self, name: &str, enabled: bool) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.set_enabled(name, enabled))
    }
    async fn delete_user(&self, name: &str) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.delete_user(name))
    }
    async fn list_users(&self) -> Result<Vec<UserRecord>, DirectoryError> {
        dispatch!(self, d => d.list_users())
    }
    async fn set_allowed_networks(
        &self,
        name: &str,
        networks: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.set_allowed_networks(name, networks))
    }
    async fn guard_state(&self, query: &GuardQuery<'_>) -> Result<GuardState, DirectoryError> {
        dispatch!(self, d => d.guard_state(query))
    }
    async fn reserve_attempt(
        &self,
        query: &ReserveQuery<'_>,
        admit: &(dyn Fn(&GuardState) -> bool + Sync),
    ) -> Result<Reservation, DirectoryError> {
        dispatch!(self, d => d.reserve_attempt(query, admit))
    }
    async fn release_attempt(
        &self,
        user: &str,
        source: &str,
        unfamiliar: bool,
        forget_before: Millis,
    ) -> Result<(), DirectoryError> {
        dispatch!(self, d => d.release_attempt(user, source, unfamiliar, forget_before))
    }
    async fn record_failure(
        &self,
        failure: &FailureRecord<'_>,
    ) -> Result<FailureCounts, DirectoryError> {
        dispatch!(self, d => d.record_failure(failure))
    }
    async fn record_success(
        &self,
        user: &str,
        source: &str,
        network: &str,
        now: Millis,
    ) -> Result<(), DirectoryError> {
        dispatch!(self, d => d.record_success(user, source, network, now))
    }
    async fn ban_source(
        &self,
        source: &str,
        now: Millis,
        until: Millis,
        accounts: u32,
    ) -> Result<(), DirectoryError> {
        dispatch!(self, d => d.ban_source(source, now, until, accounts))
    }
    async fn source_ban(
        &self,
        source: &str,
        now: Millis,
    ) -> Result<Option<Millis>, DirectoryError> {
        dispatch!(self, d => d.source_ban(source, now))
    }
    async fn network_familiar_to_anyone(
        &self,
        network: &str,
        since: Millis,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.network_familiar_to_anyone(network, since))
    }
    async fn lockout_state(
        &self,
        now: Millis,
        since: Millis,
    ) -> Result<LockoutState, DirectoryError> {
        dispatch!(self, d => d.lockout_state(now, since))
    }
    async fn clear_lockouts(&self, target: ClearTarget<'_>) -> Result<u64, DirectoryError> {
        dispatch!(self, d => d.clear_lockouts(target))
    }
    async fn record_sign_in(&self, entry: &SignInEntry) -> Result<(), DirectoryError> {
        dispatch!(self, d => d.record_sign_in(entry))
    }
    async fn sign_in_history(
        &self,
        user: &str,
        limit: u32,
    ) -> Result<Vec<SignInEntry>, DirectoryError> {
        dispatch!(self, d => d.sign_in_history(user, limit))
    }
    async fn notices_enabled(&self, user: &str) -> Result<Option<bool>, DirectoryError> {
        dispatch!(self, d => d.notices_enabled(user))
    }
    async fn set_notices(&self, user: &str, on: bool) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.set_notices(user, on))
    }
    async fn mfa_policy(&self, user: &str) -> Result<Option<String>, DirectoryError> {
        dispatch!(self, d => d.mfa_policy(user))
    }
    async fn set_mfa_policy(
        &self,
        user: &str,
        policy: Option<&str>,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.set_mfa_policy(user, policy))
    }
    async fn mfa(&self, user: &str) -> Result<Option<MfaRecord>, DirectoryError> {
        dispatch!(self, d => d.mfa(user))
    }
    async fn set_mfa(&self, user: &str, record: Option<&MfaRecord>) -> Result<(), DirectoryError> {
        dispatch!(self, d => d.set_mfa(user, record))
    }
    async fn accept_totp_step(&self, user: &str, step: i64) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.accept_totp_step(user, step))
    }
    async fn set_recovery_codes(
        &self,
        user: &str,
        hashes: &[String],
    ) -> Result<(), DirectoryError> {
        dispatch!(self, d => d.set_recovery_codes(user, hashes))
    }
    async fn use_recovery_code(
        &self,
        user: &str,
        hash: &str,
        now: Millis,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.use_recovery_code(user, hash, now))
    }
    async fn recovery_codes_left(&self, user: &str) -> Result<u32, DirectoryError> {
        dispatch!(self, d => d.recovery_codes_left(user))
    }
    async fn add_app_password(&self, app: &AppPassword) -> Result<i64, DirectoryError> {
        dispatch!(self, d => d.add_app_password(app))
    }
    async fn find_app_password(&self, hash: &str) -> Result<Option<AppPassword>, DirectoryError> {
        dispatch!(self, d => d.find_app_password(hash))
    }
    async fn list_app_passwords(&self, user: &str) -> Result<Vec<AppPassword>, DirectoryError> {
        dispatch!(self, d => d.list_app_passwords(user))
    }
    async fn revoke_app_password(&self, user: &str, id: i64) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.revoke_app_password(user, id))
    }
    async fn touch_app_password(
        &self,
        id: i64,
        at: Millis,
        from: &str,
    ) -> Result<(), DirectoryError> {
        dispatch!(self, d => d.touch_app_password(id, at, from))
    }
    async fn prune_defence(&self, before: Millis) -> Result<u64, DirectoryError> {
        dispatch!(self, d => d.prune_defence(before))
    }
    async fn server_secret(&self, name: &str) -> Result<Option<String>, DirectoryError> {
        dispatch!(self, d => d.server_secret(name))
    }
    async fn ensure_server_secret(
        &self,
        name: &str,
        candidate: &str,
    ) -> Result<String, DirectoryError> {
        dispatch!(self, d => d.ensure_server_secret(name, candidate))
    }
    async fn sealed_secrets(&self) -> Result<Vec<crate::SealedSecret>, DirectoryError> {
        dispatch!(self, d => d.sealed_secrets())
    }
    async fn reseal(
        &self,
        secret: &crate::SealedSecret,
        sealed: &str,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.reseal(secret, sealed))
    }
    async fn keyed_hashes(&self) -> Result<Vec<crate::KeyedHash>, DirectoryError> {
        dispatch!(self, d => d.keyed_hashes())
    }
    async fn rekey_app_password(
        &self,
        id: i64,
        old: &str,
        new: &str,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.rekey_app_password(id, old, new))
    }
    async fn replace_server_secret(
        &self,
        name: &str,
        expected: &str,
        new: &str,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.replace_server_secret(name, expected, new))
    }
    async fn acquire_lease(
        &self,
        maildrop: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.acquire_lease(maildrop, owner, ttl_ms))
    }
    async fn renew_lease(
        &self,
        maildrop: &str,
        owner: &str,
        ttl_ms: i64,
    ) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.renew_lease(maildrop, owner, ttl_ms))
    }
    async fn release_lease(&self, maildrop: &str, owner: &str) -> Result<(), DirectoryError> {
        dispatch!(self, d => d.release_lease(maildrop, owner))
    }
    async fn break_lease(&self, maildrop: &str) -> Result<bool, DirectoryError> {
        dispatch!(self, d => d.break_lease(maildrop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_carried_only_without_a_password_in_the_url_and_over_verified_tls() {
        for ok in [
            "sqlite:///var/lib/poplar/poplar.db",
            "postgres://poplar@localhost/poplar",
            "postgres://poplar@127.0.0.1:5432/poplar",
            "postgres://poplar@[::1]:5432/poplar",
            "postgres:///poplar?host=/run/postgresql",
            "postgres://poplar@db.example.org/poplar?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        ] {
            assert_eq!(transport_problem(ok), None, "{ok}");
        }
        for (bad, says) in [
            ("postgres://poplar:hunter2@localhost/poplar", "PGPASSWORD"),
            (
                "postgres://poplar@localhost/poplar?password=secret",
                "PGPASSWORD",
            ),
            ("postgres://poplar@db.example.org/poplar", "verify-full"),
            (
                "postgres://poplar@db.example.org/poplar?sslmode=require",
                "verify-full",
            ),
            (
                "postgres://poplar@10.0.0.5:5432/poplar?sslmode=prefer",
                "10.0.0.5",
            ),
        ] {
            let problem = transport_problem(bad).unwrap_or_default();
            assert!(problem.contains(says), "{bad}: {problem}");
            assert!(!problem.contains("hunter2"), "{problem}");
        }
    }

    #[test]
    fn urls_choose_the_backend() {
        assert_eq!(
            Location::parse("sqlite:///var/lib/poplar/poplar.db").unwrap(),
            Location::Sqlite("/var/lib/poplar/poplar.db".into())
        );
        assert_eq!(
            Location::parse("postgres://u:p@db/poplar").unwrap(),
            Location::Postgres("postgres://u:p@db/poplar".into())
        );
        assert!(Location::parse("sqlite://").is_err());
        let err = Location::parse("mysql://u:secret@db/x")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite:///x"), "sqlite:///x");
        assert_eq!(
            redact("postgres://u@h/db?sslmode=verify-full&password=hunter2"),
            "postgres://u@h/db?sslmode=verify-full&password=***"
        );
    }

    #[tokio::test]
    async fn sqlite_through_any_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let db = AnyDirectory::connect(&Location::Sqlite(dir.path().join("p.db")))
            .await
            .unwrap();
        assert_eq!(db.backend(), "sqlite");
        crate::testing::conformance(&db).await;
    }
}
