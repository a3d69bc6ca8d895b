//! Label values of the metrics: each a small enum (or a compile-time string) with a
//! fixed spelling, so a series can never be named after client input.

use auth::Reason;
use pop3_proto::CommandKind;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::ListenerKind;

/// Implements [`EncodeLabelValue`] through an `as_str` method.
macro_rules! label_value {
    ($($ty:ty),*) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    )*};
}

/// Why a connection was refused before the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Refused {
    /// Over the connection limit, in all or per address.
    Busy,
    /// Outside `[access]`.
    Denied,
    /// The address is banned by the sign-in defence.
    Banned,
    /// A trusted proxy sent no valid PROXY header, or an untrusted address sent one.
    Proxy,
}

impl Refused {
    pub(super) const ALL: [Refused; 4] = [
        Refused::Busy,
        Refused::Denied,
        Refused::Banned,
        Refused::Proxy,
    ];

    /// The audit log's and the metrics' name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refused::Busy => "busy",
            Refused::Denied => "denied",
            Refused::Banned => "banned",
            Refused::Proxy => "proxy",
        }
    }
}

/// How a sign-in attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SignInResult {
    Success,
    Failure,
    /// The directory could not be asked; the client was told to try later.
    Unavailable,
    /// RFC 2449 `[LOGIN-DELAY]`.
    LoginDelay,
}

impl SignInResult {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            SignInResult::Success => "success",
            SignInResult::Failure => "failure",
            SignInResult::Unavailable => "unavailable",
            SignInResult::LoginDelay => "login_delay",
        }
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HandshakeFailure {
    Error,
    Timeout,
}

impl HandshakeFailure {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Error => "error",
            HandshakeFailure::Timeout => "timeout",
        }
    }
}

/// The negotiated TLS version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum TlsVersion {
    Tls12,
    Tls13,
    Other,
}

impl TlsVersion {
    pub(super) fn of(version: Option<rustls::ProtocolVersion>) -> Self {
        match version {
            Some(rustls::ProtocolVersion::TLSv1_3) => TlsVersion::Tls13,
            Some(rustls::ProtocolVersion::TLSv1_2) => TlsVersion::Tls12,
            _ => TlsVersion::Other,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
            TlsVersion::Other => "other",
        }
    }
}

/// Any of the server's client-facing listeners: the two POP3 ones and the security page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Listener {
    Pop3,
    Pop3s,
    Web,
}

impl Listener {
    pub(super) const ALL: [Listener; 3] = [Listener::Pop3, Listener::Pop3s, Listener::Web];

    /// The audit log's and the metrics' name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Listener::Pop3 => "pop3",
            Listener::Pop3s => "pop3s",
            Listener::Web => "web",
        }
    }
}

impl From<ListenerKind> for Listener {
    fn from(kind: ListenerKind) -> Self {
        match kind {
            ListenerKind::Pop3 => Listener::Pop3,
            ListenerKind::Pop3s => Listener::Pop3s,
        }
    }
}

/// A session's POP3 state (RFC 1939 section 3); UPDATE counts as TRANSACTION.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum SessionState {
    Authorization,
    Transaction,
}

impl SessionState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            SessionState::Authorization => "authorization",
            SessionState::Transaction => "transaction",
        }
    }
}

/// The private reason of a failed sign-in, by its audit-log name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ReasonLabel(pub(super) Reason);

impl ReasonLabel {
    pub(super) fn as_str(&self) -> &'static str {
        self.0.as_str()
    }
}

/// A command keyword from the fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct CommandLabel(pub(super) CommandKind);

impl CommandLabel {
    pub(super) fn as_str(&self) -> &'static str {
        self.0.as_str()
    }
}

label_value!(
    Listener,
    Refused,
    SignInResult,
    HandshakeFailure,
    TlsVersion,
    SessionState,
    ReasonLabel,
    CommandLabel
);

impl EncodeLabelValue for ListenerKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ListenerLabels {
    pub(super) listener: ListenerKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct ShedLabels {
    pub(super) listener: Listener,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct RefusedLabels {
    pub(super) reason: Refused,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct StateLabels {
    pub(super) state: SessionState,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct VersionLabels {
    pub(super) version: TlsVersion,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct HandshakeFailureLabels {
    pub(super) reason: HandshakeFailure,
}

/// `mechanism` is one of the static names the sign-in code passes (`USER`, `PLAIN`,
/// `LOGIN`, `SCRAM-SHA-256`, `SCRAM-SHA-256-PLUS`, `EXTERNAL`, `APOP`), never input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct SignInLabels {
    pub(super) mechanism: &'static str,
    pub(super) result: SignInResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct FailureLabels {
    pub(super) reason: ReasonLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct CommandLabels {
    pub(super) command: CommandLabel,
}
