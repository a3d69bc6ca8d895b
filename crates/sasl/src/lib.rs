//! Sans-IO server side of the SASL mechanisms Poplar offers (RFC 4422 framework):
//! PLAIN (RFC 4616), LOGIN (draft-murchison-sasl-login), SCRAM-SHA-256 and
//! SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677, channel binding `tls-exporter` RFC 9266),
//! EXTERNAL (RFC 4422 appendix A) for TLS client certificates, and OAUTHBEARER
//! (RFC 7628) and XOAUTH2 for OAuth 2.0 bearer tokens.
//!
//! An [`Exchange`] takes the client's decoded responses and returns a [`Step`]: a
//! challenge to send, or a request for what only the caller can provide (verify a
//! password, look up SCRAM keys, confirm the account after a SCRAM proof). Mechanisms
//! never look anything up themselves, so the one place that decides sign-in (the
//! `auth` crate) sees every attempt, and names and passwords are prepared there the same
//! way for every mechanism.
#![forbid(unsafe_code)]

mod login;
pub mod oauth;
mod plain;
pub mod scram;
mod secret;

pub use scram::ScramKeys;
pub use secret::Secret;

/// A mechanism Poplar can offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// RFC 4616: authzid, user and password in one message.
    Plain,
    /// The de-facto LOGIN mechanism (Outlook and many devices): user, then password.
    Login,
    /// RFC 7677 without channel binding.
    ScramSha256,
    /// RFC 7677 with `tls-exporter` channel binding (TLS 1.3 only).
    ScramSha256Plus,
    /// RFC 4422 appendix A: the identity established outside SASL (a TLS client
    /// certificate).
    External,
    /// RFC 7628: an OAuth 2.0 bearer token in a GS2 header and key-value pairs.
    OAuthBearer,
    /// Google's and Microsoft's format: `user=...^Aauth=Bearer ...^A^A`.
    XOAuth2,
}

impl Mechanism {
    /// Every mechanism, in the order CAPA lists them (strongest first).
    pub const ALL: [Mechanism; 7] = [
        Mechanism::External,
        Mechanism::OAuthBearer,
        Mechanism::XOAuth2,
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha256,
        Mechanism::Plain,
        Mechanism::Login,
    ];

    /// The IANA name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::External => "EXTERNAL",
            Mechanism::OAuthBearer => "OAUTHBEARER",
            Mechanism::XOAuth2 => "XOAUTH2",
        }
    }

    /// Parses a name case-insensitively.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// The password crosses the connection as it is: TLS (or a trusted network) is
    /// required.
    pub fn sends_password(self) -> bool {
        matches!(self, Mechanism::Plain | Mechanism::Login)
    }

    /// Needs the TLS 1.3 exporter for channel binding.
    pub fn needs_channel_binding(self) -> bool {
        self == Mechanism::ScramSha256Plus
    }

    /// Presents an OAuth 2.0 bearer token: offered only under TLS and only when an
    /// issuer is configured (a bearer token is as good as a password to whoever
    /// reads it).
    pub fn is_oauth(self) -> bool {
        matches!(self, Mechanism::OAuthBearer | Mechanism::XOAuth2)
    }

    /// Uses stored SCRAM keys.
    pub fn is_scram(self) -> bool {
        matches!(self, Mechanism::ScramSha256 | Mechanism::ScramSha256Plus)
    }
}

/// What the connection offers for channel binding.
#[derive(Debug, Clone, Default)]
pub struct ChannelBinding {
    /// RFC 9266 `tls-exporter` data: the TLS 1.3 exporter with label
    /// `EXPORTER-Channel-Binding` and no context, 32 bytes.
    pub tls_exporter: Option<[u8; 32]>,
    /// SCRAM-SHA-256-PLUS is advertised on this connection (a client that says `y`
    /// is then refused, RFC 5802 section 6).
    pub plus_offered: bool,
}

/// What the exchange needs next.
#[derive(Debug)]
pub enum Step {
    /// Send this challenge (the protocol base64-encodes it).
    Challenge(Vec<u8>),
    /// Verify this password through the one sign-in service.
    VerifyPassword {
        /// Identity to act as, if the client named one.
        authzid: Option<String>,
        /// The user name as sent.
        authcid: String,
        /// The password as sent.
        password: Secret,
    },
    /// Look up the user's SCRAM keys (or make indistinguishable fake ones for an
    /// unknown user) and pass them to [`Exchange::scram_keys`].
    LookupScram {
        /// Identity to act as, if the client named one.
        authzid: Option<String>,
        /// The user name as sent (saslname decoded).
        username: String,
    },
    /// EXTERNAL: sign in as the identity the TLS client certificate establishes,
    /// acting as `authzid` if the client named one.
    External {
        /// Identity to act as, if the client named one.
        authzid: Option<String>,
    },
    /// OAUTHBEARER or XOAUTH2: check this bearer token through the one sign-in
    /// service.
    VerifyToken {
        /// The user the client names (`a=` in the GS2 header, or XOAUTH2's `user=`).
        authzid: Option<String>,
        /// The bearer token as sent.
        token: Secret,
    },
    /// The SCRAM proof was checked. The caller decides about the account; on success
    /// it sends `server_final` as a last challenge, which the client answers with an
    /// empty response (RFC 5034 section 4: POP3 has no success-with-data).
    ScramProof {
        /// Whether the client proved knowledge of the password.
        proof_ok: bool,
        /// The server-final-message (`v=...`).
        server_final: Vec<u8>,
    },
    /// The exchange failed before any credential check.
    Fail(Failure),
}

/// Why an exchange failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The client's message does not follow the mechanism's grammar.
    Malformed,
    /// Channel-binding flags or data do not match what this connection offers.
    ChannelBinding,
    /// The client sent a message the mechanism does not expect now.
    UnexpectedStep,
}

impl Failure {
    /// For logs and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Malformed => "malformed_sasl",
            Failure::ChannelBinding => "channel_binding_mismatch",
            Failure::UnexpectedStep => "unexpected_sasl_step",
        }
    }
}

/// One server-side SASL exchange.
#[derive(Debug)]
pub struct Exchange {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Plain { started: bool },
    External,
    OAuthBearer,
    XOAuth2,
    Login(login::Login),
    Scram(Box<scram::ScramServer>),
    Done,
}

impl Exchange {
    /// A new exchange for `mechanism` on a connection with this channel binding.
    pub fn new(mechanism: Mechanism, binding: ChannelBinding) -> Self {
        let inner = match mechanism {
            Mechanism::Plain => Inner::Plain { started: false },
            Mechanism::External => Inner::External,
            Mechanism::OAuthBearer => Inner::OAuthBearer,
            Mechanism::XOAuth2 => Inner::XOAuth2,
            Mechanism::Login => Inner::Login(login::Login::default()),
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => Inner::Scram(Box::new(
                scram::ScramServer::new(mechanism == Mechanism::ScramSha256Plus, binding),
            )),
        };
        Self { inner }
    }

    /// Starts with the decoded initial response, if the client sent one.
    pub fn start(&mut self, initial: Option<&[u8]>) -> Step {
        match initial {
            Some(data) => self.respond(data),
            None => match &mut self.inner {
                Inner::Plain { started } => {
                    *started = true;
                    Step::Challenge(Vec::new())
                }
                Inner::Login(l) => l.start(),
                Inner::Scram(_) | Inner::External | Inner::OAuthBearer | Inner::XOAuth2 => {
                    Step::Challenge(Vec::new())
                }
                Inner::Done => Step::Fail(Failure::UnexpectedStep),
            },
        }
    }

    /// Handles one decoded client response.
    pub fn respond(&mut self, data: &[u8]) -> Step {
        let step = match &mut self.inner {
            Inner::Plain { .. } => plain::parse(data),
            Inner::External => match std::str::from_utf8(data) {
                Ok(authzid) if !authzid.contains('\0') => Step::External {
                    authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
                },
                _ => Step::Fail(Failure::Malformed),
            },
            Inner::OAuthBearer => oauth::parse_oauthbearer(data),
            Inner::XOAuth2 => oauth::parse_xoauth2(data),
            Inner::Login(l) => l.respond(data),
            Inner::Scram(s) => s.respond(data),
            Inner::Done => Step::Fail(Failure::UnexpectedStep),
        };
        if matches!(
            step,
            Step::Fail(_)
                | Step::VerifyPassword { .. }
                | Step::ScramProof { .. }
                | Step::External { .. }
                | Step::VerifyToken { .. }
        ) {
            self.inner = Inner::Done;
        }
        step
    }

    /// Continues a SCRAM exchange with the user's keys.
    pub fn scram_keys(&mut self, keys: &ScramKeys) -> Step {
        match &mut self.inner {
            Inner::Scram(s) => s.keys(keys),
            _ => Step::Fail(Failure::UnexpectedStep),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_with_and_without_authzid() {
        let mut e = Exchange::new(Mechanism::External, ChannelBinding::default());
        assert!(matches!(
            e.start(Some(b"")),
            Step::External { authzid: None }
        ));
        let mut e = Exchange::new(Mechanism::External, ChannelBinding::default());
        assert!(matches!(e.start(None), Step::Challenge(c) if c.is_empty()));
        assert!(matches!(e.respond(b"alice"), Step::External { authzid: Some(a) } if a == "alice"));
        assert!(matches!(
            e.respond(b"again"),
            Step::Fail(Failure::UnexpectedStep)
        ));
        let mut e = Exchange::new(Mechanism::External, ChannelBinding::default());
        assert!(matches!(
            e.start(Some(b"\xff")),
            Step::Fail(Failure::Malformed)
        ));
    }

    #[test]
    fn names() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(&m.name().to_lowercase()), Some(m));
        }
        assert_eq!(Mechanism::from_name("CRAM-MD5"), None);
    }
}
