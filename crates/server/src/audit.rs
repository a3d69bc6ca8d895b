//! The audit log: one JSON object per line for every connection and sign-in event,
//! written as it happens (a failed attempt is on disk before its `-ERR` is sent), by a
//! thread of its own so that a slow disk never stalls a session.
//!
//! Field names are a stable schema (see [`Record`]); a field is left out when it does
//! not apply. No secret ever reaches a record: user names are logged, passwords,
//! tokens and hashes are not representable here.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;

use serde::Serialize;

/// One line of the audit log.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Record<'a> {
    /// RFC 3339 UTC, milliseconds.
    pub time: String,
    /// `connect`, `refused`, `tls`, `tls_failed`, `auth`, `ban`, `lock`, `disconnect`;
    /// from the security page `web_auth` (sign-in steps) and `account` (changes).
    pub event: &'a str,
    /// The connection's id; the same on every line of one connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<&'a str>,
    /// Client address and port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    /// Listener address and port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    /// `pop3` or `pop3s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<&'a str>,
    /// `TLSv1_3`, `TLSv1_2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// The negotiated cipher suite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cipher: Option<String>,
    /// The server name the client asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The user name as the client gave it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    /// The canonical user name it resolved to (on success).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_resolved: Option<&'a str>,
    /// `USER`, `PLAIN`, `LOGIN`, `SCRAM-SHA-256`, `EXTERNAL`, `APOP`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mechanism: Option<&'a str>,
    /// `success`, `failure`, `unavailable`, `login_delay`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<&'a str>,
    /// The private reason of a failure or refusal (`bad_password`, `unknown_user`,
    /// `throttled`, `locked`, `banned`, `ip_denied`, ...; for refusals `denied`,
    /// `banned`, `busy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// Source address key of a ban (IPv4 address or IPv6 /64).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
    /// Accounts a banned source failed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<u32>,
    /// Failures that locked an account.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// When a ban or lock ends (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// At disconnect: messages retrieved in full, deleted at UPDATE, octets sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieved: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    /// At disconnect: `quit`, `timeout`, `closed`, `error`, `shutdown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<&'a str>,
    /// `account` events (the security page): `mfa_enrolled`, `recovery_codes_renewed`,
    /// `app_password_created`, `app_password_revoked`, `password_changed`,
    /// `password_refused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'a str>,
    /// The app password an `account` event is about (its id, never the password).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_password_id: Option<i64>,
}

impl Record<'_> {
    /// Fills the address fields.
    pub fn addresses(mut self, peer: SocketAddr, local: Option<SocketAddr>) -> Self {
        self.src_ip = Some(peer.ip().to_canonical().to_string());
        self.src_port = Some(peer.port());
        if let Some(local) = local {
            self.local_ip = Some(local.ip().to_canonical().to_string());
            self.local_port = Some(local.port());
        }
        self
    }
}

/// An RFC 3339 UTC time with milliseconds.
pub fn rfc3339_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Where the audit log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Nowhere.
    Off,
    /// Standard output (for journald).
    Stdout,
    /// A file, appended to and reopened on [`AuditLog::reopen`] (after logrotate).
    File(PathBuf),
}

enum Msg {
    Line(Vec<u8>),
    Reopen,
    Sync(mpsc::Sender<()>),
}

/// The audit log's writer. Cloning shares the one writer thread.
#[derive(Clone)]
pub struct AuditLog {
    tx: Option<mpsc::Sender<Msg>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("on", &self.tx.is_some())
            .finish()
    }
}

impl AuditLog {
    /// Opens the target (creating a file with mode 0600) and starts the writer thread.
    pub fn open(target: Target) -> std::io::Result<Self> {
        let mut out: Box<dyn std::io::Write + Send> = match &target {
            Target::Off => return Ok(AuditLog { tx: None }),
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => Box::new(open_file(path)?),
        };
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::Builder::new()
            .name("poplar-audit".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Line(line) => {
                            if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
                                tracing::error!(error = %e, "cannot write the audit log");
                            }
                        }
                        Msg::Reopen => {
                            if let Target::File(path) = &target {
                                match open_file(path) {
                                    Ok(file) => out = Box::new(file),
                                    Err(e) => tracing::error!(error = %e, path = %path.display(), "cannot reopen the audit log; still writing to the old file"),
                                }
                            }
                        }
                        Msg::Sync(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(AuditLog { tx: Some(tx) })
    }

    /// A log that writes nothing.
    pub fn off() -> Self {
        AuditLog { tx: None }
    }

    /// Writes one record (the time is filled in if empty).
    pub fn write(&self, mut record: Record<'_>) {
        let Some(tx) = &self.tx else {
            return;
        };
        if record.time.is_empty() {
            record.time = rfc3339_ms(now_ms());
        }
        match serde_json::to_vec(&record) {
            Ok(mut line) => {
                line.push(b'\n');
                let _ = tx.send(Msg::Line(line));
            }
            Err(e) => tracing::error!(error = %e, "cannot encode an audit record"),
        }
    }

    /// Reopens the file (after logrotate moved it); a no-op for stdout.
    pub fn reopen(&self) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Msg::Reopen);
        }
    }

    /// Waits until everything written so far is on its way to the target.
    pub fn sync(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = mpsc::channel();
            if tx.send(Msg::Sync(done)).is_ok() {
                let _ = wait.recv();
            }
        }
    }
}

/// What the server does when the defence bans or locks: the audit log, and a notice
/// to the locked user.
pub(crate) struct ServerEvents {
    pub audit: AuditLog,
    pub notices: std::sync::Arc<crate::notices::Notices>,
}

impl auth::defence::DefenceEvents for ServerEvents {
    fn banned(&self, source: &str, accounts: u32, until: i64) {
        self.audit.banned(source, accounts, until);
    }

    fn locked(&self, user: &str, failures: u32, until: i64) {
        self.audit.locked(user, failures, until);
        let notices = self.notices.clone();
        let user = user.to_owned();
        tokio::spawn(async move {
            notices
                .send(&user, crate::notices::Notice::Locked { failures, until })
                .await;
        });
    }
}

impl AuditLog {
    fn banned(&self, source: &str, accounts: u32, until: i64) {
        self.write(Record {
            event: "ban",
            source: Some(source),
            accounts: Some(accounts),
            until: Some(rfc3339_ms(until)),
            ..Record::default()
        });
    }

    fn locked(&self, user: &str, failures: u32, until: i64) {
        self.write(Record {
            event: "lock",
            user: Some(user),
            reason: Some("unfamiliar_network_failures"),
            failures: Some(failures),
            until: Some(rfc3339_ms(until)),
            ..Record::default()
        });
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn open_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_json_lines_without_empty_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let log = AuditLog::open(Target::File(path.clone())).unwrap();
        log.write(
            Record {
                event: "auth",
                session: Some("s1"),
                user: Some("Alice"),
                user_resolved: Some("alice"),
                mechanism: Some("PLAIN"),
                result: Some("failure"),
                reason: Some("bad_password"),
                ..Record::default()
            }
            .addresses("192.0.2.1:40000".parse().unwrap(), None),
        );
        log.sync();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["event"], "auth");
        assert_eq!(v["src_ip"], "192.0.2.1");
        assert_eq!(v["src_port"], 40000);
        assert_eq!(v["reason"], "bad_password");
        assert!(v.get("local_ip").is_none() && v.get("tls_version").is_none());
        assert!(v["time"].as_str().unwrap().ends_with('Z'));
        // logrotate moves the file away; after reopen, lines go to a new file.
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        log.reopen();
        log.write(Record {
            event: "connect",
            ..Record::default()
        });
        log.sync();
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("\"connect\"")
        );
    }

    #[test]
    fn time_format() {
        assert_eq!(rfc3339_ms(1_800_000_000_123), "2027-01-15T08:00:00.123Z");
    }
}
