//! Prometheus metrics: one explicit [`Registry`] per server (no global recorder, so
//! every test server counts on its own), encoded for `/metrics` as OpenMetrics text,
//! or in the classic Prometheus text format for scrapers that do not ask for it.
//!
//! Names follow the Prometheus conventions: a `poplar_` prefix, `_total` on counters,
//! base units (`_seconds`). Every label value comes from a small enum or a compile-time
//! string, never from client input, so the number of series is fixed and no label can
//! name a user, an address or a password.

mod http;
mod labels;
mod text;

pub(crate) use http::serve;
pub(crate) use labels::{HandshakeFailure, Listener, Refused, SignInResult};

use std::time::Duration;

use auth::Reason;
use pop3_proto::CommandKind;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::ListenerKind;
use labels::*;

/// Bounds of the command latency buckets, seconds: from a cached STAT to a failed
/// sign-in's deliberate delay and a large RETR.
const COMMAND_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bounds of the maildrop open buckets, seconds: lock and scan, from a cached listing
/// to a first scan of a very large Maildir.
const MAILDROP_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of one server, and the registry that encodes them.
pub struct Metrics {
    registry: Registry,
    connections: Family<ListenerLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    shed: Family<ShedLabels, Counter>,
    connection_limit: Gauge,
    sessions: Family<StateLabels, Gauge>,
    tls_handshakes: Family<VersionLabels, Counter>,
    tls_failures: Family<HandshakeFailureLabels, Counter>,
    sign_ins: Family<SignInLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    bans: Counter,
    locks: Counter,
    retrieved: Counter,
    deleted: Counter,
    bytes_sent: Counter,
    commands: HistogramFamily<CommandLabels>,
    maildrop_open: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered at zero.
    pub fn new() -> Self {
        let mut root = Registry::default();
        let r = root.sub_registry_with_prefix("poplar");
        r.register(
            "build",
            "Poplar's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let m = Metrics {
            registry: Registry::default(),
            connections: Family::default(),
            refused: Family::default(),
            shed: Family::default(),
            connection_limit: Gauge::default(),
            sessions: Family::default(),
            tls_handshakes: Family::default(),
            tls_failures: Family::default(),
            sign_ins: Family::default(),
            failures: Family::default(),
            bans: Counter::default(),
            locks: Counter::default(),
            retrieved: Counter::default(),
            deleted: Counter::default(),
            bytes_sent: Counter::default(),
            commands: Family::new_with_constructor(|| Histogram::new(COMMAND_BUCKETS)),
            maildrop_open: Histogram::new(MAILDROP_BUCKETS),
        };
        r.register(
            "connections",
            "Connections accepted, by listener, refused ones included",
            m.connections.clone(),
        );
        r.register(
            "connections_refused",
            "Connections refused before the greeting, by reason (busy, denied, banned, proxy); busy includes the security page's",
            m.refused.clone(),
        );
        r.register(
            "connections_shed",
            "Connections closed before sign-in to make room near the connection limit (the audit log's busy), by listener",
            m.shed.clone(),
        );
        r.register(
            "connection_limit",
            "POP3 connections served at once (limits.max_connections, or as sized from memory at start)",
            m.connection_limit.clone(),
        );
        r.register(
            "sessions",
            "Sessions open now, by POP3 state",
            m.sessions.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes completed, by version",
            m.tls_handshakes.clone(),
        );
        r.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            m.tls_failures.clone(),
        );
        r.register(
            "sign_ins",
            "Sign-in attempts, by mechanism and result (success, failure, unavailable, login_delay)",
            m.sign_ins.clone(),
        );
        r.register(
            "sign_in_failures",
            "Failed sign-ins, by private reason (throttled, locked and banned were refused unchecked)",
            m.failures.clone(),
        );
        r.register(
            "bans",
            "Source addresses banned for failing on many accounts",
            m.bans.clone(),
        );
        r.register(
            "account_locks",
            "Accounts locked for unfamiliar networks after repeated failures",
            m.locks.clone(),
        );
        r.register(
            "messages_retrieved",
            "Messages sent in full by RETR",
            m.retrieved.clone(),
        );
        r.register(
            "messages_deleted",
            "Messages deleted at QUIT (UPDATE)",
            m.deleted.clone(),
        );
        r.register_with_unit(
            "sent",
            "Octets of POP3 responses and messages written to clients in sessions, before TLS",
            Unit::Bytes,
            m.bytes_sent.clone(),
        );
        r.register_with_unit(
            "command_duration",
            "Time from a command line's arrival to its answer, by command keyword (failed sign-ins include their deliberate delay)",
            Unit::Seconds,
            m.commands.clone(),
        );
        r.register_with_unit(
            "maildrop_open",
            "Time to lock and scan a maildrop at sign-in",
            Unit::Seconds,
            m.maildrop_open.clone(),
        );
        // Series with a small fixed set of labels start at zero, so rates and alerts
        // work from the first scrape.
        for listener in [ListenerKind::Pop3, ListenerKind::Pop3s] {
            let _ = m.connections.get_or_create(&ListenerLabels { listener });
        }
        for listener in Listener::ALL {
            let _ = m.shed.get_or_create(&ShedLabels { listener });
        }
        for reason in Refused::ALL {
            let _ = m.refused.get_or_create(&RefusedLabels { reason });
        }
        for state in [SessionState::Authorization, SessionState::Transaction] {
            let _ = m.sessions.get_or_create(&StateLabels { state });
        }
        for version in [TlsVersion::Tls12, TlsVersion::Tls13] {
            let _ = m.tls_handshakes.get_or_create(&VersionLabels { version });
        }
        for reason in [HandshakeFailure::Error, HandshakeFailure::Timeout] {
            let _ = m
                .tls_failures
                .get_or_create(&HandshakeFailureLabels { reason });
        }
        for reason in Reason::ALL {
            let _ = m.failures.get_or_create(&FailureLabels {
                reason: ReasonLabel(reason),
            });
        }
        Metrics {
            registry: root,
            ..m
        }
    }

    /// The whole exposition in the classic Prometheus text format (0.0.4).
    pub fn encode_classic(&self) -> String {
        text::from_openmetrics(&self.encode())
    }

    /// The whole exposition in the OpenMetrics text format, `# EOF` included.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A connection was accepted on `listener`.
    pub(crate) fn connection(&self, listener: ListenerKind) {
        self.connections
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// A connection was refused before the greeting.
    pub(crate) fn refused(&self, reason: Refused) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// A connection was closed to make room near the connection limit.
    pub(crate) fn shed(&self, listener: Listener) {
        self.shed.get_or_create(&ShedLabels { listener }).inc();
    }

    /// The connection limit in force.
    pub(crate) fn connection_limit(&self, limit: usize) {
        self.connection_limit
            .set(i64::try_from(limit).unwrap_or(i64::MAX));
    }

    /// A session starts in AUTHORIZATION; the guard moves it and removes it at the end.
    pub(crate) fn session(&self) -> SessionGauge {
        let gauge = |state| self.sessions.get_or_create_owned(&StateLabels { state });
        let authorization = gauge(SessionState::Authorization);
        authorization.inc();
        SessionGauge {
            authorization,
            transaction: gauge(SessionState::Transaction),
            in_transaction: false,
        }
    }

    /// A TLS handshake completed.
    pub(crate) fn tls_handshake(&self, version: Option<rustls::ProtocolVersion>) {
        let version = TlsVersion::of(version);
        self.tls_handshakes
            .get_or_create(&VersionLabels { version })
            .inc();
    }

    /// A TLS handshake did not complete.
    pub(crate) fn tls_handshake_failed(&self, reason: HandshakeFailure) {
        self.tls_failures
            .get_or_create(&HandshakeFailureLabels { reason })
            .inc();
    }

    /// A sign-in ended other than by a failure with a reason.
    pub(crate) fn sign_in(&self, mechanism: &'static str, result: SignInResult) {
        self.sign_ins
            .get_or_create(&SignInLabels { mechanism, result })
            .inc();
    }

    /// A sign-in failed for `reason`.
    pub(crate) fn sign_in_failed(&self, mechanism: &'static str, reason: Reason) {
        self.sign_in(mechanism, SignInResult::Failure);
        self.failures
            .get_or_create(&FailureLabels {
                reason: ReasonLabel(reason),
            })
            .inc();
    }

    /// A message went out in full (RETR).
    pub(crate) fn retrieved(&self) {
        self.retrieved.inc();
    }

    /// `n` messages were deleted in UPDATE.
    pub(crate) fn deleted(&self, n: u64) {
        self.deleted.inc_by(n);
    }

    /// `n` octets were written to a client.
    pub(crate) fn bytes_sent(&self, n: u64) {
        self.bytes_sent.inc_by(n);
    }

    /// A command took `took` from its line to its answer.
    pub(crate) fn command(&self, command: CommandKind, took: Duration) {
        self.commands
            .get_or_create(&CommandLabels {
                command: CommandLabel(command),
            })
            .observe(took.as_secs_f64());
    }

    /// A maildrop took `took` to lock and scan.
    pub(crate) fn maildrop_opened(&self, took: Duration) {
        self.maildrop_open.observe(took.as_secs_f64());
    }
}

/// Bans and locks, as the defence reports them.
impl auth::defence::DefenceEvents for Metrics {
    fn banned(&self, _source: &str, _accounts: u32, _until: i64) {
        self.bans.inc();
    }

    fn locked(&self, _user: &str, _failures: u32, _until: i64) {
        self.locks.inc();
    }
}

/// One session in `poplar_sessions`, moved from AUTHORIZATION to TRANSACTION at
/// sign-in and taken out when dropped, however the connection ends.
pub(crate) struct SessionGauge {
    authorization: Gauge,
    transaction: Gauge,
    in_transaction: bool,
}

impl SessionGauge {
    /// The maildrop is open: the session is in TRANSACTION.
    pub(crate) fn enter_transaction(&mut self) {
        if !self.in_transaction {
            self.in_transaction = true;
            self.authorization.dec();
            self.transaction.inc();
        }
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        if self.in_transaction {
            self.transaction.dec();
        } else {
            self.authorization.dec();
        }
    }
}

#[cfg(test)]
mod tests;
