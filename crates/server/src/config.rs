//! Poplar's configuration: one typed struct, read from one TOML file.
//!
//! Every field has a documented default (see `poplar.example.toml` at the repository
//! root), so `poplar serve` with no file (no `--config`, `POPLAR_CONFIG` or
//! `/etc/poplar/poplar.toml`) runs the embedded default: a data folder in the
//! working directory, loopback listeners on ports that need no root, a self-signed
//! certificate made on first start. Unknown keys are an error, so a typo never silently
//! turns a security setting off.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Holds `poplar.db`, `tls/` and (by default) `mail/`. Relative paths are relative
    /// to the working directory.
    pub data_dir: PathBuf,
    /// The server's host name: in the self-signed certificate and the greeting.
    pub hostname: String,
    /// Listening sockets.
    pub listen: Listen,
    /// The user and group to run as once the sockets are bound.
    pub process: crate::process::Process,
    /// Certificate and key.
    pub tls: Tls,
    /// Sign-in rules.
    pub auth: Auth,
    /// Time and size limits.
    pub limits: Limits,
    /// Mail storage.
    pub store: Store,
    /// SASL mechanisms.
    pub sasl: Sasl,
    /// APOP (RFC 1939 section 7), the legacy digest sign-in.
    pub apop: Apop,
    /// Throttling, smart lockout, bans and LOGIN-DELAY.
    pub defence: Defence,
    /// Which addresses may connect at all.
    pub access: Access,
    /// The audit log.
    pub audit: Audit,
    /// Security notices to users.
    pub notices: Notices,
    /// Two-factor sign-in.
    pub mfa: Mfa,
    /// The policy for new passwords.
    pub passwords: Passwords,
    /// The Prometheus metrics and health HTTP listener.
    pub metrics: Metrics,
    /// The self-service security page.
    pub web: Web,
    /// OAuth 2.0 issuers whose bearer tokens sign in (OAUTHBEARER, XOAUTH2).
    pub oauth: oauth::OAuthConfig,
    /// Where users, credentials and the shared defence state live.
    pub directory: DirectorySettings,
    /// Load balancers that send the PROXY protocol header.
    pub proxy: Proxy,
    /// The server's own log (standard error).
    pub log: Log,
    /// Where the server's key ring is.
    pub keys: Keys,
}

/// Where the key ring that seals the directory's secrets is kept: never in the
/// directory, nor by default in the data folder, so that a copy of either opens nothing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Keys {
    /// The key file (relative paths are in `data_dir`). Unset: `server.key` beside the
    /// configuration file (`/etc/poplar/server.key` for `/etc/poplar/poplar.toml`), or
    /// in the data folder for the embedded default. A systemd credential named
    /// `poplar-keys` (`LoadCredential=`) or the `POPLAR_KEYS` environment variable, when
    /// present, is used instead.
    pub file: Option<PathBuf>,
}

/// The server's own log, on standard error (the journal under systemd).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// What is logged: a level (`error`, `warn`, `info`, `debug`, `trace`), optionally
    /// with per-module levels (`info,server::conn=debug`), as `RUST_LOG` takes them.
    /// The `POPLAR_LOG` environment variable, when set, takes its place.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
        }
    }
}

/// The self-service security page (HTTPS, with the POP3 certificates): users sign in
/// with their password and a second factor, enrol an authenticator, manage app
/// passwords, change their password and see their recent sign-ins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Web {
    /// Address to listen on (HTTPS only), e.g. `0.0.0.0:8443`; an empty string for
    /// none. Loopback by default, like the POP3 listeners.
    #[serde(with = "optional_addr")]
    pub listen: Option<SocketAddr>,
    /// A signed-in session ends after this long without a request.
    pub session_idle_secs: u64,
    /// A signed-in session ends this long after sign-in, whatever happens.
    pub session_max_secs: u64,
    /// Time to type the second factor after the password.
    pub code_timeout_secs: u64,
    /// Signed-in sessions kept at once (the oldest idle ones go first).
    pub max_sessions: usize,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 8443))),
            session_idle_secs: 900,
            session_max_secs: 8 * 3600,
            code_timeout_secs: 300,
            max_sessions: 10_000,
        }
    }
}

/// The PROXY protocol (v1 and v2) from trusted load balancers. A connection from a
/// trusted address must begin with a PROXY header, and the client address it names is
/// the one throttling, access rules, bans and the audit log see; a connection from a
/// trusted address without a valid header is closed. Connections from other addresses
/// are served as direct clients, and a PROXY header from one of them is refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Proxy {
    /// Addresses or networks of the load balancers (e.g. `["10.0.0.5/32"]`). Empty
    /// (the default): no PROXY protocol at all.
    pub trusted: Vec<IpNet>,
    /// How long a trusted proxy has to send its whole header.
    pub header_timeout_secs: u64,
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy {
            trusted: Vec::new(),
            header_timeout_secs: 5,
        }
    }
}

impl Proxy {
    /// Whether connections from `peer` must carry a PROXY header.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.trusted.iter().any(|n| n.contains(&peer))
    }
}

/// The directory's location. One machine keeps the embedded SQLite file; the nodes of
/// a cluster share one PostgreSQL database (docs/cluster.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectorySettings {
    /// `sqlite://PATH` (a relative PATH is under `data_dir`) or
    /// `postgres://USER@HOST:PORT/DB?sslmode=verify-full`. Empty: the SQLite file
    /// `poplar.db` in `data_dir`. Keep the password out of this file: libpq's
    /// `PGPASSWORD` or a `~/.pgpass` file (`PGPASSFILE`) supply it.
    pub url: String,
    /// With a PostgreSQL directory, a session holds a lease on its maildrop there (the
    /// `[IN-USE]` lock across nodes), renewed every third of this; a node that dies
    /// leaves its maildrops locked for at most this long.
    pub maildrop_lease_secs: u64,
}

impl Default for DirectorySettings {
    fn default() -> Self {
        DirectorySettings {
            url: String::new(),
            maildrop_lease_secs: 60,
        }
    }
}

/// The HTTP listener for `/metrics` (Prometheus), `/healthz` and `/readyz`: a port of
/// its own, never a POP3 port, on loopback by default since it asks no password.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Address to listen on, e.g. `127.0.0.1:9110`; an empty string for none.
    #[serde(with = "optional_addr")]
    pub listen: Option<SocketAddr>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9110))),
        }
    }
}

/// An optional socket address written as a string, `""` meaning none (TOML has no null).
mod optional_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(addr: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
        match addr {
            Some(a) => s.collect_str(a),
            None => s.serialize_str(""),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is not an address with a port, like \"127.0.0.1:9110\" (or \"\" for none)"
            ))
        })
    }
}

/// The policy for passwords set with `poplar user add|passwd` (NIST SP 800-63B-4
/// §3.1.1.2; the rules themselves are in the `policy` crate). It does not apply to
/// hashes brought in with `poplar user import`, nor ever to sign-in.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Passwords {
    /// Minimum length of a password used alone, in characters (Unicode code points
    /// after SASLprep). NIST: at least 15.
    pub min_length: usize,
    /// Minimum length where two-factor sign-in is required. NIST: at least 8.
    pub min_length_with_mfa: usize,
    /// The breached-password filter that `poplar passwords load-breached` writes;
    /// relative paths are in `data_dir`.
    pub breached_filter: PathBuf,
    /// Refuse passwords found in that filter (when the file exists).
    pub check_breached: bool,
}

impl Default for Passwords {
    fn default() -> Self {
        Passwords {
            min_length: 15,
            min_length_with_mfa: 8,
            breached_filter: PathBuf::from("breached.filter"),
            check_breached: true,
        }
    }
}

/// Two-factor sign-in (TOTP) and what it means for POP3.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mfa {
    /// The policy of users without their own (`poplar mfa policy`): `off`, `optional`
    /// (users may enrol; once they have, POP3 needs an app password) or `required`
    /// (POP3 always needs an app password).
    pub default: String,
    /// Accept the account password followed directly by the current 6-digit code as a
    /// one-off sign-in for accounts with two factors on.
    pub password_with_code: bool,
    /// The name authenticator apps show; empty: `Poplar <hostname>`.
    pub issuer: String,
}

impl Default for Mfa {
    fn default() -> Self {
        Mfa {
            default: "off".into(),
            password_with_code: false,
            issuer: String::new(),
        }
    }
}

/// Security notices: a message in the user's own maildrop after a sign-in from a
/// network never seen for the account, and after an account lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Notices {
    /// Send them at all (each user can also be switched off: `poplar user notices`).
    pub enabled: bool,
    /// At most one notice per user in this many minutes.
    pub min_interval_minutes: u32,
    /// A Poplar user (an administrator) who gets a copy of every notice; empty: none.
    pub copy_to: String,
}

impl Default for Notices {
    fn default() -> Self {
        Notices {
            enabled: true,
            min_interval_minutes: 60,
            copy_to: String::new(),
        }
    }
}

/// The audit log: one JSON object per line for every connection and sign-in event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Audit {
    /// A file (relative paths are in `data_dir`; reopened on SIGHUP for logrotate),
    /// `-` for standard output (journald), or empty for none.
    pub log: String,
}

impl Default for Audit {
    fn default() -> Self {
        Audit {
            log: "audit.log".into(),
        }
    }
}

/// The sign-in defence (see the auth crate's `LockoutPolicy`). Counts are kept in the
/// directory, so a restart does not reset them; `poplar lockout list|clear` shows and
/// lifts them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defence {
    /// Failures per (user, address) answered without delay; IPv6 addresses are
    /// grouped by /64.
    pub throttle_after: u32,
    /// Seconds the next attempt waits after the first failure beyond those; each
    /// further failure doubles it.
    pub throttle_base_secs: u64,
    /// The longest wait, seconds.
    pub throttle_max_secs: u64,
    /// Recent wrong passwords remembered (as keyed hashes) per (user, address): a
    /// client retrying the same stale password counts once.
    pub remember_wrong_passwords: usize,
    /// Failures from networks an account has not signed in from that lock it for
    /// such networks (it stays open from familiar ones). At most 100 (NIST SP 800-63B).
    pub lockout_threshold: u32,
    /// Minutes such a lock lasts after the last failure.
    pub lockout_minutes: u64,
    /// Days a network (IPv4 /24, IPv6 /64) stays familiar after a successful sign-in.
    pub familiar_days: u64,
    /// Distinct accounts one address may fail on within `ban_window_minutes` before it
    /// is banned; 0 disables bans.
    pub ban_accounts: u32,
    /// The window for `ban_accounts`, minutes.
    pub ban_window_minutes: u64,
    /// Minutes a ban lasts.
    pub ban_minutes: u64,
    /// Hours after which untouched failure counts are forgotten.
    pub forget_after_hours: u64,
    /// Minimum seconds between two successful sign-ins of one user (RFC 2449
    /// LOGIN-DELAY, advertised in CAPA); 0 for none.
    pub login_delay_secs: u32,
}

impl Default for Defence {
    fn default() -> Self {
        let p = auth::defence::LockoutPolicy::default();
        let minutes = |d: std::time::Duration| d.as_secs() / 60;
        Defence {
            throttle_after: p.throttle_after,
            throttle_base_secs: p.throttle_base.as_secs(),
            throttle_max_secs: p.throttle_max.as_secs(),
            remember_wrong_passwords: p.remember_wrong_secrets,
            lockout_threshold: p.lockout_threshold,
            lockout_minutes: minutes(p.lockout_for),
            familiar_days: p.familiar_for.as_secs() / 86400,
            ban_accounts: p.ban_accounts,
            ban_window_minutes: minutes(p.ban_window),
            ban_minutes: minutes(p.ban_for),
            forget_after_hours: p.forget_after.as_secs() / 3600,
            login_delay_secs: 0,
        }
    }
}

impl Defence {
    /// The policy these settings describe.
    pub fn policy(&self) -> auth::defence::LockoutPolicy {
        use std::time::Duration;
        auth::defence::LockoutPolicy {
            throttle_after: self.throttle_after,
            throttle_base: Duration::from_secs(self.throttle_base_secs),
            throttle_max: Duration::from_secs(self.throttle_max_secs),
            remember_wrong_secrets: self.remember_wrong_passwords,
            lockout_threshold: self.lockout_threshold,
            lockout_for: Duration::from_secs(self.lockout_minutes.saturating_mul(60)),
            familiar_for: Duration::from_secs(self.familiar_days.saturating_mul(86400)),
            ban_accounts: self.ban_accounts,
            ban_window: Duration::from_secs(self.ban_window_minutes.saturating_mul(60)),
            ban_for: Duration::from_secs(self.ban_minutes.saturating_mul(60)),
            forget_after: Duration::from_secs(self.forget_after_hours.saturating_mul(3600)),
            login_delay: Duration::from_secs(u64::from(self.login_delay_secs)),
        }
    }
}

/// Addresses allowed to connect, checked before the greeting. Refused connections get
/// one `-ERR [SYS/PERM]` line on the plain port and are closed at once on the TLS port.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Access {
    /// When not empty, only these networks may connect.
    pub allow: Vec<IpNet>,
    /// These networks may never connect (checked first).
    pub deny: Vec<IpNet>,
}

impl Access {
    /// Whether `peer` may connect.
    pub fn allows(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        !self.deny.iter().any(|n| n.contains(&peer))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&peer)))
    }
}

/// Listening sockets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    /// Plain POP3 with STLS (RFC 2595); port 110 in production.
    pub pop3: Vec<SocketAddr>,
    /// Implicit TLS (RFC 8314); port 995 in production.
    pub pop3s: Vec<SocketAddr>,
}

/// Certificate and key in PEM files. With neither set, a self-signed ECDSA P-256
/// certificate is made once in `<data_dir>/tls/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Certificate chain (leaf first): the default certificate, served to clients that
    /// send no SNI or a name no entry of `certificates` covers.
    pub cert: Option<PathBuf>,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// Seconds between checks of the certificate and key files for changes (a reload
    /// follows); 0 turns the check off. SIGHUP always reloads.
    pub reload_check_secs: u64,
    /// CA bundle (PEM) for TLS client certificates. When set, clients may present a
    /// certificate issued by it and sign in with SASL EXTERNAL; clients without one
    /// are still served.
    pub client_ca: Option<PathBuf>,
    /// Which part of a client certificate names the user: `subject-cn`, `san-email`
    /// (the first rfc822Name) or `san-dns` (the first dNSName).
    pub client_identity: ClientIdentity,
    /// SHA-256 fingerprints (hex, colons optional) of client certificates that must no
    /// longer sign in.
    pub revoked_client_certs: Vec<String>,
    /// More certificates, each served to clients whose SNI matches one of its SAN DNS
    /// names (`*.example.org` covers one label). Last, so TOML writes it after the
    /// plain keys.
    pub certificates: Vec<SniCertificate>,
}

/// A certificate chosen by SNI (`[[tls.certificates]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    /// Certificate chain (leaf first); its SAN DNS names select it.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            cert: None,
            key: None,
            reload_check_secs: 5,
            client_ca: None,
            client_identity: ClientIdentity::default(),
            revoked_client_certs: Vec::new(),
            certificates: Vec::new(),
        }
    }
}

/// Which part of a client certificate names the user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientIdentity {
    /// The subject's common name.
    #[default]
    SubjectCn,
    /// The first e-mail address (rfc822Name) in the subject alternative names.
    SanEmail,
    /// The first DNS name in the subject alternative names.
    SanDns,
}

/// Sign-in rules.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Networks where USER/PASS and AUTH PLAIN are allowed without TLS. Empty by
    /// default: plaintext passwords never cross an unencrypted connection.
    pub plaintext_networks: Vec<IpNet>,
    /// Compare user names case-insensitively (they are stored lower-cased).
    pub lowercase_usernames: bool,
    /// Appended as `@domain` to user names given without a domain; empty for none.
    pub default_domain: String,
    /// Delay before answering a failed sign-in, in milliseconds.
    pub failure_delay_ms: u64,
    /// Argon2id memory cost for new hashes, KiB (OWASP minimum 19456).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations for new hashes.
    pub argon2_iterations: u32,
    /// Password hashes computed at once; bounds memory (memory cost × this). 0: one
    /// per CPU core, so sign-ins use every core and no more.
    pub max_concurrent_hashes: usize,
    /// The memory, KiB, the password checks running at once may hold: a check waits
    /// until its memory fits, and one bigger than the whole budget runs alone. 0:
    /// `max_concurrent_hashes × argon2_memory_kib`.
    pub hash_memory_budget_kib: u64,
    /// `poplar user import` refuses a hash needing more memory than this to check, KiB,
    /// unless `--allow-costly-hashes` (at most 1 GiB, the most Poplar ever checks).
    pub import_max_memory_kib: u64,
    /// Same for a hash whose check is estimated to take longer than this, milliseconds
    /// (at most 4000). Keep it at most `failure_delay_ms`.
    pub import_max_time_ms: u64,
}

/// Time and size limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Idle time allowed before sign-in, seconds.
    pub idle_timeout_auth_secs: u64,
    /// Idle time allowed after sign-in, seconds (RFC 1939 asks for at least 600).
    pub idle_timeout_transaction_secs: u64,
    /// Longest ordinary command line, CRLF included (RFC 2449 section 4 limits clients
    /// to 255 octets).
    pub max_command_line: usize,
    /// Longest AUTH or PASS line, or SASL continuation line (OAuth tokens run to
    /// several KB; passphrases may be long).
    pub max_auth_line: usize,
    /// Syntax errors tolerated per connection before it is closed.
    pub max_bad_commands: u32,
    /// POP3 connections served at once. Unset: sized from memory at start
    /// ([`crate::capacity`]). At the limit, the connection that has not signed in and
    /// has been silent longest is closed to make room; only when there is none is a
    /// newcomer refused with `-ERR [SYS/TEMP]`.
    pub max_connections: Option<usize>,
    /// Connections served at once from one address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// Connections from one network (IPv4 /24, IPv6 /48) while the server is busy
    /// (90 % of `max_connections`), never otherwise. Unset: a sixteenth of
    /// `max_connections`, at least `max_connections_per_address`.
    pub max_connections_per_network: Option<usize>,
    /// Idle time allowed before sign-in while the server is busy, seconds.
    pub idle_timeout_auth_busy_secs: u64,
    /// Commands one session may send before it is closed.
    pub max_commands: u64,
    /// Seconds a client has to finish a line it has started (against slowloris).
    pub line_timeout_secs: u64,
    /// Seconds from the greeting to a successful sign-in.
    pub auth_timeout_secs: u64,
    /// Seconds that open sessions get to finish after SIGTERM before they are cut
    /// (an UPDATE in progress always completes).
    pub shutdown_grace_secs: u64,
}

/// SASL mechanisms (RFC 5034 AUTH).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sasl {
    /// Offered mechanisms, in the order CAPA lists them. Each appears only where it
    /// can be used: none before TLS (outside `auth.plaintext_networks`), and
    /// SCRAM-SHA-256-PLUS only on TLS 1.3, whose exporter it binds to; OAUTHBEARER and
    /// XOAUTH2 only under TLS and when `[[oauth.issuers]]` are configured. The default
    /// is every mechanism but SCRAM-SHA-256-PLUS, which the administrator adds.
    pub mechanisms: Vec<String>,
    /// PBKDF2 iterations for new SCRAM-SHA-256 keys (RFC 7677 asks for at least 4096).
    pub scram_iterations: u32,
}

impl Default for Sasl {
    fn default() -> Self {
        Self {
            // Every mechanism but SCRAM-SHA-256-PLUS, which is opt-in: GNU SASL (mutt and
            // neomutt on Debian) picks it whenever it is offered, then cannot bind
            // because the program gives it no channel-binding data, and such a client
            // never signs in (see poplar.example.toml).
            mechanisms: sasl::Mechanism::ALL
                .iter()
                .filter(|m| **m != sasl::Mechanism::ScramSha256Plus)
                .map(|m| m.name().to_string())
                .collect(),
            scram_iterations: 32768,
        }
    }
}

impl Sasl {
    /// The configured mechanisms, parsed (validation guarantees they parse).
    pub fn parsed(&self) -> Vec<sasl::Mechanism> {
        self.mechanisms
            .iter()
            .filter_map(|m| sasl::Mechanism::from_name(m))
            .collect()
    }

    /// Whether SCRAM keys are to be derived and used.
    pub fn scram_enabled(&self) -> bool {
        self.parsed().iter().any(|m| m.is_scram())
    }
}

/// APOP. Off by default: it is weaker than every other way to sign in (MD5 over a
/// secret the server must be able to recover). When on, the greeting carries a unique
/// timestamp and users with an APOP secret (`poplar user apop-secret`) may use it, under
/// the same TLS rule as plaintext passwords.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Apop {
    /// Offer APOP.
    pub enabled: bool,
}

/// Mail storage.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Store {
    /// Where new users' Maildirs are made (`<root>/<user>/`); default `<data_dir>/mail`.
    pub maildir_root: Option<PathBuf>,
    /// Retention of retrieved messages, in days (RFC 2449 section 6.7, CAPA `EXPIRE`).
    /// Unset: nothing is ever deleted but by DELE (`EXPIRE NEVER`). `N`: a message a
    /// client retrieved in full (RETR, not TOP) in a session ended by QUIT is flagged
    /// seen (`S`) and deleted at the first sign-in N days later; `0`: it is deleted at
    /// that QUIT, as if DELE'd.
    pub expire_days: Option<u32>,
}

/// Seconds in a retention day.
const DAY_SECS: u64 = 86_400;

impl Store {
    /// How long a retrieved message is kept, if a retention is enforced.
    pub fn retention(&self) -> Option<std::time::Duration> {
        self.expire_days
            .map(|days| std::time::Duration::from_secs(u64::from(days) * DAY_SECS))
    }

    /// One line for `poplar config check`: the retention and what CAPA says of it.
    pub fn retention_summary(&self) -> String {
        match self.expire_days {
            None => "store.expire_days not set: no retention, messages are deleted only by \
                     DELE (CAPA: EXPIRE NEVER)"
                .to_owned(),
            Some(0) => "store.expire_days = 0: messages retrieved with RETR are deleted at \
                        QUIT (CAPA: EXPIRE 0)"
                .to_owned(),
            Some(n) => format!(
                "store.expire_days = {n}: messages retrieved with RETR are flagged seen and \
                 deleted {n} days later (CAPA: EXPIRE {n})"
            ),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("poplar-data"),
            hostname: "localhost".into(),
            listen: Listen::default(),
            process: crate::process::Process::default(),
            tls: Tls::default(),
            auth: Auth::default(),
            limits: Limits::default(),
            store: Store::default(),
            sasl: Sasl::default(),
            apop: Apop::default(),
            defence: Defence::default(),
            access: Access::default(),
            audit: Audit::default(),
            notices: Notices::default(),
            mfa: Mfa::default(),
            passwords: Passwords::default(),
            metrics: Metrics::default(),
            web: Web::default(),
            oauth: oauth::OAuthConfig::default(),
            directory: DirectorySettings::default(),
            proxy: Proxy::default(),
            log: Log::default(),
            keys: Keys::default(),
        }
    }
}

impl Default for Listen {
    fn default() -> Self {
        let lo = IpAddr::from([127, 0, 0, 1]);
        Self {
            pop3: vec![SocketAddr::new(lo, 1110)],
            pop3s: vec![SocketAddr::new(lo, 1995)],
        }
    }
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            plaintext_networks: Vec::new(),
            lowercase_usernames: true,
            default_domain: String::new(),
            failure_delay_ms: 1000,
            argon2_memory_kib: 19456,
            argon2_iterations: 2,
            max_concurrent_hashes: 0,
            hash_memory_budget_kib: 0,
            import_max_memory_kib: auth::legacy::HashBounds::IMPORT_DEFAULT.max_memory_kib,
            import_max_time_ms: auth::legacy::HashBounds::IMPORT_DEFAULT.max_time_ms,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle_timeout_auth_secs: 60,
            idle_timeout_transaction_secs: 600,
            max_command_line: 255,
            max_auth_line: 16384,
            max_bad_commands: 10,
            max_connections: None,
            max_connections_per_address: 50,
            max_connections_per_network: None,
            idle_timeout_auth_busy_secs: 10,
            max_commands: 1_000_000,
            line_timeout_secs: 30,
            auth_timeout_secs: 300,
            shutdown_grace_secs: 10,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML for this schema.
    #[error("invalid configuration in {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml said.
        message: String,
    },
    /// Valid TOML, but values that cannot work together.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        let mut config = config;
        if config.keys.file.is_none() {
            // Beside the configuration, apart from the data folder it protects.
            let folder = path.parent().unwrap_or(Path::new("."));
            let folder = if folder.as_os_str().is_empty() {
                Path::new(".")
            } else {
                folder
            };
            let absolute = std::path::absolute(folder).unwrap_or_else(|_| folder.to_owned());
            config.keys.file = Some(absolute.join("server.key"));
        }
        Ok(config)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.listen.pop3.is_empty() && self.listen.pop3s.is_empty() {
            return bad("no listeners: set listen.pop3 or listen.pop3s");
        }
        self.process.validate().map_err(ConfigError::Invalid)?;
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key must be set together");
        }
        for fp in &self.tls.revoked_client_certs {
            if crate::tls::normalize_fingerprint(fp).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "tls.revoked_client_certs: {fp:?} is not a SHA-256 fingerprint"
                )));
            }
        }
        if let Some(metrics) = self.metrics.listen {
            let pop3 = self.listen.pop3.iter().chain(&self.listen.pop3s);
            if metrics.port() != 0 && pop3.into_iter().any(|a| *a == metrics) {
                return bad("metrics.listen must not be a POP3 listener's address");
            }
        }
        if let Some(web) = self.web.listen {
            let taken = self.listen.pop3.iter().chain(&self.listen.pop3s);
            if web.port() != 0
                && (taken.into_iter().any(|a| *a == web) || self.metrics.listen == Some(web))
            {
                return bad("web.listen must not be a POP3 or metrics listener's address");
            }
        }
        let w = &self.web;
        if w.session_idle_secs == 0
            || w.session_max_secs < w.session_idle_secs
            || w.code_timeout_secs == 0
            || w.max_sessions == 0
        {
            return bad(
                "web: session_idle_secs, code_timeout_secs and max_sessions must be positive, and session_max_secs at least session_idle_secs",
            );
        }
        self.oauth.validate().map_err(ConfigError::Invalid)?;
        self.directory_location()?;
        if self.directory.maildrop_lease_secs < 3 {
            return bad("directory.maildrop_lease_secs must be at least 3");
        }
        if self.proxy.header_timeout_secs == 0 {
            return bad("proxy.header_timeout_secs must be positive");
        }
        if self.limits.max_command_line < 64 {
            return bad("limits.max_command_line must be at least 64");
        }
        if self.limits.max_auth_line < self.limits.max_command_line {
            return bad("limits.max_auth_line must be at least limits.max_command_line");
        }
        if self.limits.max_bad_commands == 0
            || self.limits.max_connections == Some(0)
            || self.limits.max_connections_per_network == Some(0)
            || self.limits.idle_timeout_auth_busy_secs == 0
        {
            return bad(
                "limits.max_bad_commands, limits.max_connections, limits.max_connections_per_network and limits.idle_timeout_auth_busy_secs must be positive",
            );
        }
        for m in &self.sasl.mechanisms {
            if sasl::Mechanism::from_name(m).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "sasl.mechanisms: unknown mechanism {m:?} (known: EXTERNAL, OAUTHBEARER, XOAUTH2, SCRAM-SHA-256-PLUS, SCRAM-SHA-256, PLAIN, LOGIN)"
                )));
            }
        }
        if self.sasl.scram_iterations < 4096 {
            return bad("sasl.scram_iterations must be at least 4096 (RFC 7677)");
        }
        if self.auth.argon2_memory_kib < 8 || self.auth.argon2_iterations == 0 {
            return bad("auth.argon2_memory_kib must be at least 8 and argon2_iterations positive");
        }
        let checkable = auth::legacy::HashBounds::CHECKABLE;
        if !(1..=checkable.max_memory_kib).contains(&self.auth.import_max_memory_kib)
            || !(1..=checkable.max_time_ms).contains(&self.auth.import_max_time_ms)
        {
            return Err(ConfigError::Invalid(format!(
                "auth.import_max_memory_kib must be between 1 and {} (1 GiB) and auth.import_max_time_ms between 1 and {}: Poplar never checks a hash that costs more",
                checkable.max_memory_kib, checkable.max_time_ms
            )));
        }
        let budget = self.auth.hash_memory_budget_kib;
        if budget != 0 && budget < u64::from(self.auth.argon2_memory_kib) {
            return bad(
                "auth.hash_memory_budget_kib must be 0 (automatic) or at least argon2_memory_kib",
            );
        }
        if self.limits.max_connections_per_address == 0 || self.limits.max_commands == 0 {
            return bad(
                "limits.max_connections_per_address and limits.max_commands must be positive",
            );
        }
        if self.limits.line_timeout_secs == 0 || self.limits.auth_timeout_secs == 0 {
            return bad("limits.line_timeout_secs and limits.auth_timeout_secs must be positive");
        }
        if auth::MfaPolicy::parse(&self.mfa.default).is_none() {
            return bad("mfa.default must be off, optional or required");
        }
        let d = &self.defence;
        if d.lockout_threshold == 0 || d.lockout_threshold > 100 {
            return bad(
                "defence.lockout_threshold must be between 1 and 100 (NIST SP 800-63B allows at most 100 consecutive failures)",
            );
        }
        if d.throttle_base_secs > d.throttle_max_secs {
            return bad("defence.throttle_base_secs must not exceed defence.throttle_max_secs");
        }
        let p = &self.passwords;
        // Above 64 a passphrase of the length NIST says must be allowed would be refused.
        if !(1..=64).contains(&p.min_length) || !(1..=64).contains(&p.min_length_with_mfa) {
            return bad(
                "passwords.min_length and passwords.min_length_with_mfa must be between 1 and 64",
            );
        }
        Ok(())
    }

    /// Hashes computed at once: the configured number, or one per core.
    pub fn hash_slots(&self) -> usize {
        match self.auth.max_concurrent_hashes {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The memory the password checks running at once may hold, KiB: the configured
    /// budget, or one argon2 memory cost per hashing thread.
    pub fn hash_memory_budget_kib(&self) -> u64 {
        match self.auth.hash_memory_budget_kib {
            0 => u64::from(self.auth.argon2_memory_kib).saturating_mul(self.hash_slots() as u64),
            n => n,
        }
    }

    /// The bounds `poplar user import` holds hashes to.
    pub fn import_bounds(&self) -> auth::legacy::HashBounds {
        auth::legacy::HashBounds {
            max_memory_kib: self.auth.import_max_memory_kib,
            max_time_ms: self.auth.import_max_time_ms,
        }
    }

    /// Where new users' Maildirs go.
    pub fn maildir_root(&self) -> PathBuf {
        self.store
            .maildir_root
            .clone()
            .unwrap_or_else(|| self.data_dir.join("mail"))
    }

    /// The key ring's file (`keys.file`, relative to `data_dir`; unset: in the data
    /// folder, which only the embedded default leaves it as: [`Config::load`] puts it
    /// beside the configuration file).
    pub fn key_file(&self) -> PathBuf {
        self.data_dir
            .join(self.keys.file.as_deref().unwrap_or(Path::new("server.key")))
    }

    /// What is wrong with where the key file is: inside the data folder (the embedded
    /// default's, or set so: a copy of that folder holds both the directory and the key
    /// that opens its secrets), or readable by every user. Not said when the ring comes
    /// from the environment or a systemd credential.
    /// (Apart from [`Config::warnings`], which judge the file's settings: this one
    /// depends on where the configuration came from and on the environment.)
    pub fn key_ring_warnings(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt as _;
        let elsewhere = std::env::var_os(crate::secrets::KEYS_ENV).is_some()
            || std::env::var_os("CREDENTIALS_DIRECTORY")
                .is_some_and(|d| Path::new(&d).join(crate::secrets::KEYS_CREDENTIAL).exists());
        if elsewhere {
            return Vec::new();
        }
        let mut warnings = Vec::new();
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
        let (file, data) = (absolute(&self.key_file()), absolute(&self.data_dir));
        if file.starts_with(&data) {
            warnings.push(format!(
                "keys.file {} is in the data folder: a copy of that folder (a backup, a stolen disk) holds both the directory and the key that opens its sealed secrets; keep the key ring elsewhere (keys.file, or /etc/poplar/server.key beside /etc/poplar/poplar.toml)",
                file.display()
            ));
        }
        if let Ok(meta) = std::fs::metadata(&file)
            && meta.permissions().mode() & 0o007 != 0
        {
            warnings.push(format!(
                "keys.file {} can be read by every user of this host (mode {:o}): `chmod 0640` it (root, with the service's group)",
                file.display(),
                meta.permissions().mode() & 0o777
            ));
        }
        warnings
    }

    /// Where installations before the directory kept the server key; adopted from there.
    pub fn server_key_path(&self) -> PathBuf {
        self.data_dir.join("secrets").join("server.key")
    }

    /// Where the audit log goes.
    pub fn audit_target(&self) -> crate::audit::Target {
        match self.audit.log.as_str() {
            "" => crate::audit::Target::Off,
            "-" => crate::audit::Target::Stdout,
            path => crate::audit::Target::File(self.data_dir.join(path)),
        }
    }

    /// The breached-password filter file.
    pub fn breached_filter_path(&self) -> PathBuf {
        self.data_dir.join(&self.passwords.breached_filter)
    }

    /// The default SQLite directory file (when `directory.url` is empty).
    pub fn directory_path(&self) -> PathBuf {
        self.data_dir.join("poplar.db")
    }

    /// Where the directory is: `directory.url`, or the SQLite file in `data_dir`.
    pub fn directory_location(&self) -> Result<directory::Location, ConfigError> {
        if self.directory.url.is_empty() {
            return Ok(directory::Location::Sqlite(self.directory_path()));
        }
        match directory::Location::parse(&self.directory.url) {
            Ok(directory::Location::Sqlite(path)) => {
                Ok(directory::Location::Sqlite(self.data_dir.join(path)))
            }
            Ok(location) => Ok(location),
            Err(e) => Err(ConfigError::Invalid(format!("directory.url: {e}"))),
        }
    }

    /// The directory's location for messages and reports, without a password.
    pub fn directory_display(&self) -> String {
        match self.directory_location() {
            Ok(directory::Location::Sqlite(path)) => path.display().to_string(),
            _ => directory::redact(&self.directory.url),
        }
    }

    /// Whether plaintext sign-in is allowed from this address without TLS.
    pub fn plaintext_allowed(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.auth
            .plaintext_networks
            .iter()
            .any(|net| net.contains(&peer))
    }

    /// Settings an administrator should look at twice.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for net in &self.auth.plaintext_networks {
            match NetScope::of(net) {
                NetScope::Loopback => {}
                NetScope::Private => w.push(format!(
                    "auth.plaintext_networks includes {net}: passwords from there cross the local network unencrypted; narrow it to the hosts that need it, or have them use STLS"
                )),
                NetScope::Public if net.prefix_len() == 0 => w.push(format!(
                    "auth.plaintext_networks includes {net}, every address: passwords may cross the internet unencrypted; remove it and have clients use STLS or POP3S"
                )),
                NetScope::Public => w.push(format!(
                    "auth.plaintext_networks includes {net}, which reaches beyond loopback and private networks: passwords may cross the internet unencrypted; remove it and have clients use STLS or POP3S"
                )),
            }
        }
        let public = self
            .listen
            .pop3
            .iter()
            .chain(&self.listen.pop3s)
            .any(|a| !a.ip().is_loopback());
        if public && self.tls.cert.is_none() {
            w.push("listening beyond loopback with a self-signed certificate: clients cannot verify it; set tls.cert and tls.key".into());
        }
        if let Some(addr) = self.metrics.listen.filter(|a| !a.ip().is_loopback()) {
            w.push(format!(
                "metrics.listen = {addr} reaches beyond loopback: /metrics and /readyz answer anyone without a password; keep it on loopback or a management network, or firewall it"
            ));
        }
        let oauth_listed = self.sasl.parsed().iter().any(|m| m.is_oauth());
        if !self.oauth.issuers.is_empty() && !oauth_listed {
            w.push("oauth.issuers are configured but sasl.mechanisms lists neither OAUTHBEARER nor XOAUTH2: no client can sign in with a token".into());
        }
        for issuer in &self.oauth.issuers {
            if issuer.client_secret.is_some() {
                w.push(format!(
                    "oauth issuer {}: client_secret is in the config file; prefer client_secret_file",
                    issuer.name
                ));
            }
        }
        if self.auth.argon2_memory_kib < 19456 {
            w.push(format!(
                "auth.argon2_memory_kib = {} is below the OWASP minimum of 19456",
                self.auth.argon2_memory_kib
            ));
        }
        if self.auth.failure_delay_ms == 0 {
            w.push("auth.failure_delay_ms = 0: failed sign-ins are answered at once".into());
        } else if self.auth.import_max_time_ms > self.auth.failure_delay_ms {
            w.push(format!(
                "auth.import_max_time_ms = {} is above auth.failure_delay_ms = {}: a failed sign-in on an account whose imported hash takes that long is answered late, which tells such accounts apart",
                self.auth.import_max_time_ms, self.auth.failure_delay_ms
            ));
        }
        if self.apop.enabled {
            w.push(
                "apop.enabled: APOP relies on MD5 and a recoverable secret; prefer SCRAM-SHA-256"
                    .into(),
            );
        }
        if self.defence.throttle_max_secs == 0 {
            w.push("defence.throttle_max_secs = 0: password guessing is not slowed down".into());
        }
        if self.defence.ban_accounts == 0 {
            w.push(
                "defence.ban_accounts = 0: addresses spraying many accounts are never banned"
                    .into(),
            );
        }
        if self.passwords.min_length < 15 {
            w.push(format!(
                "passwords.min_length = {} is below the 15 characters NIST SP 800-63B-4 asks of a password used alone",
                self.passwords.min_length
            ));
        }
        if self.passwords.min_length_with_mfa < 8 {
            w.push(format!(
                "passwords.min_length_with_mfa = {} is below NIST SP 800-63B-4's 8 characters",
                self.passwords.min_length_with_mfa
            ));
        }
        if self.limits.idle_timeout_transaction_secs < 600 {
            w.push("limits.idle_timeout_transaction_secs is below RFC 1939's 10 minutes".into());
        }
        w.extend(crate::tls::check::warnings(self));
        if directory::redact(&self.directory.url) != self.directory.url {
            w.push(
                "directory.url holds a password: anyone who reads the config file has it; set PGPASSWORD or use a ~/.pgpass file (PGPASSFILE) instead".into(),
            );
        }
        w
    }
}

/// How far a network reaches, for the warning about plaintext passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetScope {
    Loopback,
    /// RFC 1918, RFC 4193 unique-local and link-local addresses.
    Private,
    Public,
}

impl NetScope {
    fn of(net: &IpNet) -> Self {
        const LOOPBACK: [&str; 2] = ["127.0.0.0/8", "::1/128"];
        const PRIVATE: [&str; 6] = [
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "169.254.0.0/16",
            "fc00::/7",
            "fe80::/10",
        ];
        let within = |list: &[&str]| {
            list.iter()
                .filter_map(|n| n.parse::<IpNet>().ok())
                .any(|outer| outer.contains(net))
        };
        if within(&LOOPBACK) {
            NetScope::Loopback
        } else if within(&PRIVATE) {
            NetScope::Private
        } else {
            NetScope::Public
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_loopback_and_secure() {
        let c = Config::default();
        c.validate().unwrap();
        assert!(c.listen.pop3.iter().all(|a| a.ip().is_loopback()));
        assert!(!c.plaintext_allowed("127.0.0.1".parse().unwrap()));
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn directory_url_chooses_the_backend_and_is_checked() {
        let c = Config::default();
        assert_eq!(
            c.directory_location().unwrap(),
            directory::Location::Sqlite(c.data_dir.join("poplar.db"))
        );
        let c: Config = toml::from_str("[directory]\nurl = \"sqlite://dir.db\"\n").unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.directory_location().unwrap(),
            directory::Location::Sqlite(c.data_dir.join("dir.db"))
        );
        let c: Config =
            toml::from_str("[directory]\nurl = \"postgres://poplar@db.example/poplar\"\n").unwrap();
        c.validate().unwrap();
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
        let c: Config =
            toml::from_str("[directory]\nurl = \"postgres://poplar:hunter2@db/poplar\"\n").unwrap();
        c.validate().unwrap();
        assert!(c.warnings().iter().any(|w| w.contains("PGPASSWORD")));
        assert!(!c.directory_display().contains("hunter2"));
        for bad in ["mysql://db/poplar", "sqlite://", "poplar.db"] {
            let c: Config = toml::from_str(&format!("[directory]\nurl = {bad:?}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("directory.url"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_cluster_examples_are_valid() {
        for text in [
            include_str!("../../../contrib/cluster/node-a.toml"),
            include_str!("../../../contrib/cluster/node-b.toml"),
        ] {
            let c: Config = toml::from_str(text).unwrap();
            c.validate().unwrap();
            assert!(matches!(
                c.directory_location().unwrap(),
                directory::Location::Postgres(_)
            ));
            assert!(c.proxy.trusts("10.0.0.5".parse().unwrap()));
            assert!(!c.proxy.trusts("10.0.0.11".parse().unwrap()));
        }
    }

    #[test]
    fn hash_limits_are_checked_and_follow_the_hashing_threads() {
        let c: Config =
            toml::from_str("[auth]\nmax_concurrent_hashes = 3\nargon2_memory_kib = 20000\n")
                .unwrap();
        c.validate().unwrap();
        assert_eq!(c.hash_memory_budget_kib(), 60_000);
        assert_eq!(c.import_bounds(), auth::legacy::HashBounds::IMPORT_DEFAULT);
        let c: Config = toml::from_str(
            "[auth]\nhash_memory_budget_kib = 131072\nimport_max_memory_kib = 65536\nimport_max_time_ms = 500\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.hash_memory_budget_kib(), 131_072);
        assert_eq!(
            c.import_bounds(),
            auth::legacy::HashBounds {
                max_memory_kib: 65_536,
                max_time_ms: 500
            }
        );
        for bad in [
            "import_max_memory_kib = 2097152",
            "import_max_memory_kib = 0",
            "import_max_time_ms = 5000",
            "hash_memory_budget_kib = 1000",
        ] {
            let c: Config = toml::from_str(&format!("[auth]\n{bad}\n")).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        // A bound longer than the failure delay is allowed, with a warning.
        let c: Config =
            toml::from_str("[auth]\nfailure_delay_ms = 500\nimport_max_time_ms = 2000\n").unwrap();
        c.validate().unwrap();
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains("import_max_time_ms = 2000 is above")),
            "{:?}",
            c.warnings()
        );
    }

    #[test]
    fn example_file_parses_to_the_defaults() {
        let text = include_str!("../../../poplar.example.toml");
        let parsed: Config = toml::from_str(text).unwrap();
        assert_eq!(
            toml::to_string(&parsed).unwrap(),
            toml::to_string(&Config::default()).unwrap()
        );
    }

    #[test]
    fn the_password_policy_defaults_to_nist_and_is_checked() {
        let text = include_str!("../../../poplar.example.toml");
        let parsed: Config = toml::from_str(text).unwrap();
        let p = &parsed.passwords;
        assert_eq!((p.min_length, p.min_length_with_mfa), (15, 8));
        assert_eq!(p.breached_filter, PathBuf::from("breached.filter"));
        assert!(p.check_breached);
        assert!(
            text.contains("\n[passwords]\n"),
            "documented in the example"
        );
        assert_eq!(
            parsed.breached_filter_path(),
            parsed.data_dir.join("breached.filter")
        );
        let c: Config = toml::from_str("[passwords]\nmin_length = 8\n").unwrap();
        c.validate().unwrap();
        assert!(c.warnings()[0].contains("NIST"), "{:?}", c.warnings());
        for bad in [
            "min_length = 0",
            "min_length = 65",
            "min_length_with_mfa = 0",
        ] {
            let c: Config = toml::from_str(&format!("[passwords]\n{bad}\n")).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<Config>("[passwords]\nmax_age_days = 90\n").is_err());
    }

    #[test]
    fn metrics_listen_is_loopback_by_default_and_empty_turns_it_off() {
        let c = Config::default();
        let addr = c.metrics.listen.unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 9110);
        let c: Config = toml::from_str("[metrics]\nlisten = \"\"\n").unwrap();
        assert_eq!(c.metrics.listen, None);
        // And it prints back as the empty string, which parses again.
        let again: Config = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again.metrics.listen, None);
        let c: Config = toml::from_str("[metrics]\nlisten = \"[::1]:0\"\n").unwrap();
        assert_eq!(c.metrics.listen, Some("[::1]:0".parse().unwrap()));
        assert!(c.warnings().is_empty());
        let err = toml::from_str::<Config>("[metrics]\nlisten = \"9110\"\n").unwrap_err();
        assert!(
            err.to_string().contains("not an address with a port"),
            "{err}"
        );
        let c: Config = toml::from_str("[metrics]\nlisten = \"0.0.0.0:9110\"\n").unwrap();
        assert!(
            c.warnings()[0].contains("beyond loopback"),
            "{:?}",
            c.warnings()
        );
        let c: Config = toml::from_str(
            "[listen]\npop3 = [\"127.0.0.1:9110\"]\n[metrics]\nlisten = \"127.0.0.1:9110\"\n",
        )
        .unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn retention_is_off_by_default_and_parsed_in_days() {
        let c = Config::default();
        assert_eq!((c.store.expire_days, c.store.retention()), (None, None));
        assert!(c.store.retention_summary().contains("EXPIRE NEVER"));
        let c: Config = toml::from_str("[store]\nexpire_days = 3\n").unwrap();
        assert_eq!(
            c.store.retention(),
            Some(std::time::Duration::from_secs(3 * 86_400))
        );
        assert!(c.store.retention_summary().ends_with("(CAPA: EXPIRE 3)"));
        let c: Config = toml::from_str("[store]\nexpire_days = 0\n").unwrap();
        assert_eq!(c.store.retention(), Some(std::time::Duration::ZERO));
        assert!(toml::from_str::<Config>("[store]\nexpire_days = -1\n").is_err());
        assert!(toml::from_str::<Config>("[store]\nexpire_days = \"never\"\n").is_err());
    }

    #[test]
    fn scram_plus_is_opt_in() {
        let c: Config = toml::from_str("").unwrap();
        assert_eq!(
            c.sasl.mechanisms,
            [
                "EXTERNAL",
                "OAUTHBEARER",
                "XOAUTH2",
                "SCRAM-SHA-256",
                "PLAIN",
                "LOGIN"
            ]
        );
        let c: Config =
            toml::from_str("[sasl]\nmechanisms = [\"SCRAM-SHA-256-PLUS\", \"SCRAM-SHA-256\"]\n")
                .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(
            c.sasl.parsed(),
            [
                sasl::Mechanism::ScramSha256Plus,
                sasl::Mechanism::ScramSha256
            ]
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(toml::from_str::<Config>("[auth]\nplaintext = true\n").is_err());
        let c: Config = toml::from_str("[limits]\nmax_command_line = 10\n").unwrap();
        assert!(c.validate().is_err());
        let c: Config = toml::from_str("[sasl]\nmechanisms = [\"CRAM-MD5\"]\n").unwrap();
        assert!(c.validate().is_err());
        let c: Config = toml::from_str("[sasl]\nmechanisms = [\"plain\"]\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.sasl.parsed(), vec![sasl::Mechanism::Plain]);
        assert!(!c.sasl.scram_enabled());
    }

    #[test]
    fn plaintext_networks_match_mapped_addresses() {
        let c: Config =
            toml::from_str("[auth]\nplaintext_networks = [\"127.0.0.0/8\", \"10.0.0.0/8\"]\n")
                .unwrap();
        assert!(c.plaintext_allowed("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.plaintext_allowed("192.0.2.1".parse().unwrap()));
        assert_eq!(c.warnings().len(), 1);
    }

    #[test]
    fn plaintext_networks_warn_by_reach() {
        let warn = |nets: &str| {
            let c: Config =
                toml::from_str(&format!("[auth]\nplaintext_networks = [{nets}]\n")).unwrap();
            c.warnings()
        };
        assert!(warn(r#""127.0.0.1/32", "::1/128""#).is_empty());
        let w = warn(r#""192.168.1.0/24""#);
        assert!(
            w[0].contains("local network") && w[0].contains("STLS"),
            "{w:?}"
        );
        let w = warn(r#""0.0.0.0/0""#);
        assert!(
            w[0].contains("every address") && w[0].contains("remove it"),
            "{w:?}"
        );
        let w = warn(r#""::/0""#);
        assert!(w[0].contains("every address"), "{w:?}");
        // Wider than a private range, or public.
        for net in [
            r#""10.0.0.0/7""#,
            r#""198.51.100.0/24""#,
            r#""2001:db8::/32""#,
        ] {
            let w = warn(net);
            assert!(w[0].contains("beyond loopback and private"), "{net}: {w:?}");
        }
    }

    #[test]
    fn apop_and_self_signed_on_the_network_warn_with_advice() {
        let c: Config = toml::from_str("[apop]\nenabled = true\n").unwrap();
        assert!(c.warnings()[0].contains("prefer SCRAM-SHA-256"));
        let c: Config = toml::from_str("[listen]\npop3s = [\"0.0.0.0:995\"]\n").unwrap();
        let w = c.warnings();
        assert!(
            w[0].contains("self-signed") && w[0].contains("set tls.cert"),
            "{w:?}"
        );
    }

    #[test]
    fn oauth_issuers_parse_validate_and_warn() {
        let text = "[sasl]\nmechanisms = [\"PLAIN\"]\n[[oauth.issuers]]\nname = \"kc\"\n\
                    issuer = \"https://sso.example.org/realms/mail\"\naudience = [\"poplar\"]\n\
                    client_id = \"poplar\"\nclient_secret = \"s3cret\"\n";
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.oauth.issuers[0].user_claim, "email");
        let w = c.warnings().join("\n");
        assert!(w.contains("neither OAUTHBEARER nor XOAUTH2"), "{w}");
        assert!(w.contains("client_secret_file"), "{w}");
        let printed = toml::to_string_pretty(&c).unwrap();
        assert!(!printed.contains("s3cret") && printed.contains("(redacted)"));
        for bad in [
            "[[oauth.issuers]]\nname = \"a\"\nissuer = \"http://idp.example.org\"\naudience = [\"p\"]\n",
            "[[oauth.issuers]]\nname = \"a\"\nissuer = \"https://idp.example.org\"\naudience = []\n",
            "[[oauth.issuers]]\nname = \"a\"\nissuer = \"https://i.example\"\naudience = [\"p\"]\nalgorithms = [\"HS256\"]\n",
            "[[oauth.issuers]]\nname = \"a\"\nissuer = \"https://i.example\"\naudience = [\"p\"]\nclient_id = \"x\"\n",
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(
            toml::from_str::<Config>("[[oauth.issuers]]\nname = \"a\"\nissuer = \"https://i\"\naudience = [\"p\"]\ntypo = 1\n").is_err()
        );
    }

    #[test]
    fn sni_certificates_parse_as_an_array_of_tables() {
        let c: Config = toml::from_str(
            "[tls]\nreload_check_secs = 0\n[[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n[[tls.certificates]]\ncert = \"b.pem\"\nkey = \"b.key\"\n",
        )
        .unwrap();
        assert_eq!(c.tls.reload_check_secs, 0);
        assert_eq!(c.tls.certificates.len(), 2);
        assert_eq!(c.tls.certificates[1].key, PathBuf::from("b.key"));
        // And they survive `config check`'s printing.
        let printed = toml::to_string_pretty(&c).unwrap();
        let again: Config = toml::from_str(&printed).unwrap();
        assert_eq!(again.tls.certificates, c.tls.certificates);
        assert!(toml::from_str::<Config>("[[tls.certificates]]\ncert = \"a.pem\"\n").is_err());
    }
}
