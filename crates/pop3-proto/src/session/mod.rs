//! The POP3 session state machine (RFC 1939 section 3: AUTHORIZATION, TRANSACTION,
//! UPDATE), with STLS (RFC 2595), AUTH (RFC 5034), CAPA (RFC 2449) and UTF8 (RFC 6856).
//!
//! The session never does I/O. Each call appends the bytes to send to `out` and
//! returns one [`Action`]. Until the I/O layer reports the outcome of an action that
//! asks for one (credentials, SCRAM keys, maildrop, update), it must not feed more lines.

mod authorization;
mod transaction;

use sasl::{Exchange, Mechanism, Secret};

use crate::capa::{CapaState, Capabilities};
use crate::command::{self, Command};
use crate::response::{self, RespCode};
use transaction::Maildrop;
pub use transaction::MessageMeta;

/// Per-connection facts the session needs.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// What CAPA advertises.
    pub capabilities: Capabilities,
    /// The connection is already under TLS (implicit-TLS listener); the I/O layer
    /// still reports the details with [`Session::tls_started`] after the handshake.
    pub tls_active: bool,
    /// STLS may be offered (plain listener with a TLS configuration).
    pub stls_offered: bool,
    /// Sign-in is allowed without TLS (the peer is in a trusted network).
    pub plaintext_allowed: bool,
    /// SASL mechanisms enabled by configuration, in the order CAPA lists them.
    pub mechanisms: Vec<Mechanism>,
    /// An OAuth issuer is configured: OAUTHBEARER and XOAUTH2 (if listed in
    /// `mechanisms`) are offered, under TLS only.
    pub oauth_offered: bool,
    /// Syntax errors tolerated before the server says goodbye.
    pub max_bad_commands: u32,
    /// Text after `+OK ` in the greeting.
    pub greeting: String,
    /// The RFC 1939 `<...@host>` timestamp when APOP is enabled; it goes in the
    /// greeting and into the APOP digest.
    pub apop_timestamp: Option<String>,
}

/// Credentials for the I/O layer to verify.
#[derive(Debug)]
pub struct AuthRequest {
    /// The authorization identity the client asked for (SASL), if not empty.
    pub authzid: Option<String>,
    /// The user name as the client sent it (UTF-8, not yet canonical).
    pub user: String,
    /// The password as sent.
    pub password: Secret,
    /// `USER` or the SASL mechanism name, for the audit log.
    pub mechanism: &'static str,
}

/// The verdict on a sign-in attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Signed in: the I/O layer is asked to open the maildrop next.
    Accepted,
    /// Not signed in. Every reason gets the same public answer.
    Rejected,
    /// The credentials could not be checked now.
    Unavailable,
    /// The credentials were right, but the user signed in too recently (RFC 2449
    /// LOGIN-DELAY). Only ever reported after a successful proof.
    LoginDelay,
}

/// Why the maildrop could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// Another session holds the maildrop lock.
    InUse,
    /// A storage problem that may pass.
    Unavailable,
    /// A storage problem that needs an administrator (RFC 3206 `[SYS/PERM]`).
    Broken,
}

/// What the I/O layer must do after a call.
#[derive(Debug)]
pub enum Action {
    /// Nothing beyond sending `out`.
    None,
    /// A SASL exchange failed inside the protocol (a channel-binding mismatch, a
    /// malformed message): the answer is in `out`; the I/O layer only records it.
    SaslFailed {
        /// The mechanism.
        mechanism: &'static str,
        /// The user the exchange named, if it got that far.
        user: Option<String>,
        /// `channel_binding_mismatch` or `malformed_sasl`.
        reason: &'static str,
    },
    /// Verify these credentials, then call [`Session::auth_result`].
    Authenticate(AuthRequest),
    /// OAUTHBEARER or XOAUTH2: check the bearer token, then call
    /// [`Session::auth_result`] (accepted, unavailable) or [`Session::token_rejected`].
    VerifyToken {
        /// The user the client names (GS2 `a=` or XOAUTH2 `user=`), if any.
        authzid: Option<String>,
        /// The bearer token as sent.
        token: Secret,
        /// The mechanism, for the audit log and the shape of the error.
        mechanism: &'static str,
    },
    /// Verify an APOP digest over the greeting's timestamp, then call
    /// [`Session::auth_result`].
    Apop {
        /// The user name as sent.
        user: String,
        /// The client's digest (lower-case hex).
        digest: String,
        /// The timestamp the digest covers.
        timestamp: String,
    },
    /// EXTERNAL: sign in as the identity of the TLS client certificate (acting as
    /// `authzid` if named), then call [`Session::auth_result`].
    External {
        /// Identity to act as, if the client named one.
        authzid: Option<String>,
    },
    /// Look up the user's SCRAM keys (fake ones for an unknown user), then call
    /// [`Session::scram_keys`].
    LookupScram {
        /// The user name as sent.
        user: String,
    },
    /// The SCRAM proof was checked; decide about the account, then call
    /// [`Session::auth_result`].
    ConfirmScram {
        /// Identity to act as, if the client named one.
        authzid: Option<String>,
        /// The user name as sent.
        user: String,
        /// Whether the client proved knowledge of the password.
        proof_ok: bool,
        /// The mechanism, for the audit log.
        mechanism: &'static str,
    },
    /// Lock and scan the signed-in user's maildrop, then call [`Session::maildrop_opened`].
    OpenMaildrop,
    /// Open message `index` (0-based) and call [`Session::message_opened`]; if that
    /// returns true, send the message through a [`crate::DotStuffer`] (TOP when
    /// `top_lines` is set) after the status line it wrote.
    SendMessage {
        /// Index in the listing given to [`Session::maildrop_opened`].
        index: usize,
        /// `Some(n)` for TOP.
        top_lines: Option<u64>,
    },
    /// Send `out`, discard any buffered input, run the TLS handshake, then call
    /// [`Session::tls_started`].
    StartTls,
    /// UPDATE state: remove the `delete` messages and mark the `retrieved` ones
    /// (0-based), then call [`Session::update_result`]. Both follow the retention in
    /// [`Capabilities::expire_days`] (RFC 2449 section 6.7): without one, `delete` is
    /// what DELE marked and `retrieved` is empty; with `EXPIRE 0`, every message RETR
    /// sent is deleted too; with `EXPIRE N` (N > 0), `retrieved` lists the messages RETR
    /// sent (TOP does not count) that are not deleted, for the store to flag seen and
    /// delete N days later.
    Update {
        /// Indexes of messages to remove, ascending.
        delete: Vec<usize>,
        /// Indexes of messages to mark retrieved, ascending; none in `delete`.
        retrieved: Vec<usize>,
    },
    /// Send `out` and close the connection.
    Close,
}

/// What the TLS handshake established.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsInfo {
    /// RFC 9266 `tls-exporter` data, on TLS 1.3 only.
    pub channel_binding: Option<[u8; 32]>,
    /// The client presented a certificate the server verified (EXTERNAL is offered).
    pub client_certificate: bool,
}

/// A SASL exchange in progress.
#[derive(Debug)]
struct Sasl {
    mechanism: Mechanism,
    exchange: Exchange,
    /// Set once SCRAM named its user.
    scram_user: Option<(Option<String>, String)>,
    /// The server-final message to send once the account is confirmed.
    server_final: Option<Vec<u8>>,
    waiting: Waiting,
}

/// Who the SASL exchange is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// The client's next response.
    Client,
    /// The I/O layer (keys or a verdict).
    Server,
    /// The client's empty answer to the server-final challenge.
    FinalAck,
}

#[derive(Debug)]
enum State {
    Authorization {
        user: Option<String>,
    },
    /// An AUTH exchange.
    Sasl(Box<Sasl>),
    /// Waiting for [`Session::auth_result`] after USER/PASS.
    Authenticating,
    /// A bearer token was refused and its error sent as a challenge (RFC 7628 section
    /// 3.2.2); the client's next line (`%x01`, XOAUTH2's empty line) gets the failure.
    TokenRefused,
    /// Waiting for [`Session::maildrop_opened`].
    Opening,
    Transaction(Maildrop),
    /// Waiting for [`Session::update_result`]; `left` messages stay after it.
    Update {
        left: usize,
    },
    Closed,
}

/// One POP3 session.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    tls: bool,
    tls_info: TlsInfo,
    utf8: bool,
    bad_commands: u32,
    read_only: bool,
}

impl Session {
    /// A new session in the AUTHORIZATION state.
    pub fn new(config: SessionConfig) -> Self {
        Self {
            tls: config.tls_active,
            tls_info: TlsInfo::default(),
            config,
            state: State::Authorization { user: None },
            utf8: false,
            bad_commands: 0,
            read_only: false,
        }
    }

    /// The credential that is signing in allows reading only (an app password with a
    /// read-only scope): DELE will be refused and UPDATE will remove nothing. Call
    /// before reporting the sign-in accepted.
    pub fn set_read_only(&mut self) {
        self.read_only = true;
    }

    /// Whether the session was signed in with a read-only credential
    /// ([`Session::set_read_only`]): the store must then change nothing either, not
    /// even expire messages under the retention at sign-in.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Appends the greeting (with the APOP timestamp when APOP is enabled).
    pub fn greeting(&self, out: &mut Vec<u8>) {
        match &self.config.apop_timestamp {
            Some(ts) => response::ok(out, &format!("{} {ts}", self.config.greeting)),
            None => response::ok(out, &self.config.greeting),
        }
    }

    /// The next line is a SASL response (the framer's larger cap applies).
    pub fn expects_sasl_response(&self) -> bool {
        matches!(&self.state, State::Sasl(s) if s.waiting != Waiting::Server)
            || matches!(self.state, State::TokenRefused)
    }

    /// Signed in and working on the maildrop (the longer idle timeout applies).
    pub fn in_transaction(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// The session is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// A TLS handshake completed (after STLS, or on the implicit-TLS port).
    pub fn tls_started(&mut self, info: TlsInfo) {
        self.tls = true;
        self.tls_info = info;
    }

    fn sign_in_allowed(&self) -> bool {
        self.tls || self.config.plaintext_allowed
    }

    /// The mechanisms a client may use on this connection now. Before TLS (outside
    /// trusted networks) none: SCRAM would not expose the password, but it would
    /// expose the user name and invite offline guessing of a captured exchange, so it
    /// follows the same rule as PLAIN. -PLUS needs the TLS 1.3 exporter.
    fn usable_mechanisms(&self) -> Vec<Mechanism> {
        if !self.sign_in_allowed() {
            return Vec::new();
        }
        self.config
            .mechanisms
            .iter()
            .copied()
            .filter(|m| match m {
                Mechanism::External => self.tls_info.client_certificate,
                // A bearer token is replayable by whoever reads it: TLS only, even from
                // a trusted network.
                m if m.is_oauth() => self.tls && self.config.oauth_offered,
                m if m.needs_channel_binding() => self.tls_info.channel_binding.is_some(),
                _ => true,
            })
            .collect()
    }

    fn capa(&self, out: &mut Vec<u8>) {
        let authorization = matches!(self.state, State::Authorization { .. });
        let mechanisms = if authorization {
            self.usable_mechanisms()
        } else {
            Vec::new()
        };
        let state = CapaState {
            stls: authorization && !self.tls && self.config.stls_offered,
            sign_in: authorization && self.sign_in_allowed(),
            mechanisms: &mechanisms,
        };
        self.config.capabilities.write(state, out);
    }

    /// A line that went over the framer's cap.
    pub fn line_too_long(&mut self, out: &mut Vec<u8>) -> Action {
        if matches!(self.state, State::Sasl(_)) {
            self.state = State::Authorization { user: None };
        }
        self.bad_command(out, "line too long")
    }

    /// The session ended because the client sent too many bad commands.
    pub fn closed_for_bad_commands(&self) -> bool {
        matches!(self.state, State::Closed) && self.bad_commands >= self.config.max_bad_commands
    }

    fn bad_command(&mut self, out: &mut Vec<u8>, text: &str) -> Action {
        self.bad_commands += 1;
        if self.bad_commands >= self.config.max_bad_commands {
            response::err(out, None, "too many bad commands, closing connection");
            self.state = State::Closed;
            return Action::Close;
        }
        response::err(out, None, text);
        Action::None
    }

    /// Handles one line from the client.
    pub fn handle_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action {
        if matches!(self.state, State::Sasl(_)) {
            return self.sasl_line(line, out);
        }
        if matches!(self.state, State::TokenRefused) {
            // Whatever the client answered (RFC 7628 wants %x01, XOAUTH2 clients send
            // an empty line, `*` cancels), the exchange fails now.
            self.state = State::Authorization { user: None };
            response::err(out, Some(RespCode::Auth), "bearer token refused");
            return Action::None;
        }
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => return self.bad_command(out, e.message()),
        };
        match cmd {
            Command::Capa => {
                self.capa(out);
                Action::None
            }
            Command::Noop if self.in_transaction() => {
                response::ok(out, "");
                Action::None
            }
            Command::Quit => self.quit(out),
            _ => match &mut self.state {
                State::Authorization { .. } => self.authorization(cmd, out),
                State::Transaction(drop) => drop.handle(cmd, out),
                _ => {
                    // The I/O layer feeds no lines while an action is pending.
                    response::err(out, Some(RespCode::SysTemp), "busy");
                    Action::None
                }
            },
        }
    }

    fn quit(&mut self, out: &mut Vec<u8>) -> Action {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Transaction(drop) => {
                let plan = drop.update_plan(self.config.capabilities.expire_days);
                self.state = State::Update {
                    left: drop.len() - plan.delete.len(),
                };
                Action::Update {
                    delete: plan.delete,
                    retrieved: plan.retrieved,
                }
            }
            _ => {
                response::ok(out, "Poplar signing off");
                Action::Close
            }
        }
    }

    /// The verdict of [`Action::Authenticate`] or [`Action::ConfirmScram`].
    pub fn auth_result(&mut self, outcome: AuthOutcome, out: &mut Vec<u8>) -> Action {
        match outcome {
            AuthOutcome::Accepted => {
                if let State::Sasl(sasl) = &mut self.state
                    && let Some(server_final) = sasl.server_final.take()
                {
                    sasl.waiting = Waiting::FinalAck;
                    authorization::challenge(out, &server_final);
                    return Action::None;
                }
                self.state = State::Opening;
                return Action::OpenMaildrop;
            }
            AuthOutcome::Rejected => {
                response::err(out, Some(RespCode::Auth), "invalid user name or password")
            }
            AuthOutcome::Unavailable => response::err(
                out,
                Some(RespCode::SysTemp),
                "sign-in is temporarily unavailable, try again later",
            ),
            AuthOutcome::LoginDelay => response::err(
                out,
                Some(RespCode::LoginDelay),
                "signed in too recently, try again later",
            ),
        }
        self.state = State::Authorization { user: None };
        Action::None
    }

    /// The verdict of [`Action::VerifyToken`] when the token was refused: `error` (the
    /// RFC 7628 section 3.2.2 JSON) goes to the client as a challenge, and the client's
    /// answer to it ends the exchange with `-ERR [AUTH]`.
    pub fn token_rejected(&mut self, error: &[u8], out: &mut Vec<u8>) -> Action {
        authorization::challenge(out, error);
        self.state = State::TokenRefused;
        Action::None
    }

    /// The outcome of [`Action::OpenMaildrop`]: the maildrop's messages in order.
    pub fn maildrop_opened(
        &mut self,
        result: Result<Vec<MessageMeta>, OpenFailure>,
        out: &mut Vec<u8>,
    ) -> Action {
        match result {
            Ok(messages) => {
                let drop = Maildrop::new(messages, self.read_only);
                response::ok(out, &format!("maildrop ready, {}", drop.summary()));
                self.state = State::Transaction(drop);
            }
            Err(failure) => {
                match failure {
                    OpenFailure::InUse => response::err(
                        out,
                        Some(RespCode::InUse),
                        "maildrop is locked by another session",
                    ),
                    OpenFailure::Unavailable => response::err(
                        out,
                        Some(RespCode::SysTemp),
                        "maildrop temporarily unavailable",
                    ),
                    OpenFailure::Broken => response::err(
                        out,
                        Some(RespCode::SysPerm),
                        "maildrop cannot be opened; please contact the administrator",
                    ),
                }
                self.state = State::Authorization { user: None };
            }
        }
        Action::None
    }

    /// The outcome of opening the message of [`Action::SendMessage`]. Writes the status
    /// line; returns whether the message body should follow. A RETR answered here
    /// counts as retrieved for the retention policy: the I/O layer must end the
    /// session (without UPDATE) if it cannot send the whole message.
    pub fn message_opened(
        &mut self,
        index: usize,
        top_lines: Option<u64>,
        opened: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        match &mut self.state {
            State::Transaction(drop) if opened => {
                drop.message_status(index, top_lines, out);
                if top_lines.is_none() {
                    drop.mark_retrieved(index);
                }
                true
            }
            _ => {
                response::err(
                    out,
                    Some(RespCode::SysTemp),
                    "message temporarily unavailable",
                );
                false
            }
        }
    }

    /// The outcome of [`Action::Update`]. Either way the session ends.
    pub fn update_result(&mut self, result: Result<(), ()>, out: &mut Vec<u8>) -> Action {
        let left = match self.state {
            State::Update { left } => left,
            _ => 0,
        };
        match result {
            Ok(()) => response::ok(out, &format!("Poplar signing off ({left} messages left)")),
            Err(()) => response::err(
                out,
                Some(RespCode::SysTemp),
                "some deleted messages could not be removed; nothing else was changed",
            ),
        }
        self.state = State::Closed;
        Action::Close
    }
}

#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod tests;
