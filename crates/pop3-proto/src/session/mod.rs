//! The POP3 session state machine (RFC 1939 section 3: AUTHORIZATION, TRANSACTION,
//! UPDATE), with STLS (RFC 2595), AUTH (RFC 5034), CAPA (RFC 2449) and UTF8 (RFC 6856).
//!
//! The session never does I/O. Each call appends the bytes to send to `out` and
//! returns one [`Action`]. Until the I/O layer reports the outcome of an action that
//! asks for one (credentials, maildrop, update), it must not feed more lines.

mod transaction;

use crate::capa::{CapaState, Capabilities};
use crate::command::{self, Command};
use crate::response::{self, RespCode};
use crate::sasl;
use crate::secret::Secret;
use transaction::Maildrop;
pub use transaction::MessageMeta;

/// Per-connection facts the session needs.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// What CAPA advertises.
    pub capabilities: Capabilities,
    /// The connection is already under TLS (implicit-TLS listener).
    pub tls_active: bool,
    /// STLS may be offered (plain listener with a TLS configuration).
    pub stls_offered: bool,
    /// Plaintext sign-in is allowed without TLS (the peer is in a trusted network).
    pub plaintext_allowed: bool,
    /// Syntax errors tolerated before the server says goodbye.
    pub max_bad_commands: u32,
    /// Text after `+OK ` in the greeting.
    pub greeting: String,
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
    /// `USER/PASS` or the SASL mechanism name, for the audit log.
    pub mechanism: &'static str,
}

/// The verdict on an [`AuthRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Signed in: the I/O layer is asked to open the maildrop next.
    Accepted,
    /// Not signed in. Every reason gets the same public answer.
    Rejected,
    /// The credentials could not be checked now.
    Unavailable,
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
    /// Verify these credentials, then call [`Session::auth_result`].
    Authenticate(AuthRequest),
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
    /// UPDATE state: remove these messages (0-based), then call [`Session::update_result`].
    Update {
        /// Indexes of messages marked deleted, ascending.
        delete: Vec<usize>,
    },
    /// Send `out` and close the connection.
    Close,
}

#[derive(Debug)]
enum State {
    Authorization {
        user: Option<String>,
    },
    /// `AUTH PLAIN` sent without an initial response; waiting for it.
    SaslPlain,
    /// Waiting for [`Session::auth_result`].
    Authenticating,
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
    utf8: bool,
    bad_commands: u32,
}

impl Session {
    /// A new session in the AUTHORIZATION state.
    pub fn new(config: SessionConfig) -> Self {
        let tls = config.tls_active;
        Self {
            config,
            state: State::Authorization { user: None },
            tls,
            utf8: false,
            bad_commands: 0,
        }
    }

    /// Appends the greeting.
    pub fn greeting(&self, out: &mut Vec<u8>) {
        response::ok(out, &self.config.greeting);
    }

    /// The next line is a SASL continuation (the framer's larger cap applies).
    pub fn expects_sasl_response(&self) -> bool {
        matches!(self.state, State::SaslPlain)
    }

    /// Signed in and working on the maildrop (the longer idle timeout applies).
    pub fn in_transaction(&self) -> bool {
        matches!(self.state, State::Transaction(_))
    }

    /// The session is over.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The TLS handshake after STLS completed.
    pub fn tls_started(&mut self) {
        self.tls = true;
    }

    fn sign_in_allowed(&self) -> bool {
        self.tls || self.config.plaintext_allowed
    }

    fn capa_state(&self) -> CapaState {
        let authorization = matches!(self.state, State::Authorization { .. });
        CapaState {
            stls: authorization && !self.tls && self.config.stls_offered,
            sign_in: authorization && self.sign_in_allowed(),
        }
    }

    /// A line that went over the framer's cap.
    pub fn line_too_long(&mut self, out: &mut Vec<u8>) -> Action {
        if matches!(self.state, State::SaslPlain) {
            self.state = State::Authorization { user: None };
        }
        self.bad_command(out, "line too long")
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
        if matches!(self.state, State::SaslPlain) {
            return self.sasl_plain_response(line, out);
        }
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => return self.bad_command(out, e.message()),
        };
        match cmd {
            Command::Capa => {
                self.config.capabilities.write(self.capa_state(), out);
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
                let delete = drop.deleted_indexes();
                self.state = State::Update {
                    left: drop.len() - delete.len(),
                };
                Action::Update { delete }
            }
            _ => {
                response::ok(out, "Poplar signing off");
                Action::Close
            }
        }
    }

    fn authorization(&mut self, cmd: Command, out: &mut Vec<u8>) -> Action {
        match cmd {
            Command::Stls => {
                if self.tls || !self.config.stls_offered {
                    response::err(out, None, "STLS not available on this connection");
                    return Action::None;
                }
                response::ok(out, "Begin TLS negotiation");
                self.state = State::Authorization { user: None };
                Action::StartTls
            }
            Command::Utf8 => {
                self.utf8 = true;
                response::ok(out, "UTF8 enabled");
                Action::None
            }
            Command::User(name) => {
                if !self.require_sign_in(out) {
                    return Action::None;
                }
                match self.text_argument(name, "user name") {
                    Ok(name) => {
                        // The same answer for every name: USER must not reveal whether
                        // a mailbox exists.
                        response::ok(out, "send PASS");
                        self.state = State::Authorization { user: Some(name) };
                    }
                    Err(msg) => response::err(out, None, msg),
                }
                Action::None
            }
            Command::Pass(secret) => {
                if !self.require_sign_in(out) {
                    return Action::None;
                }
                let State::Authorization { user: Some(user) } =
                    std::mem::replace(&mut self.state, State::Authorization { user: None })
                else {
                    response::err(out, None, "send USER first");
                    return Action::None;
                };
                if let Err(msg) = self.text_argument(secret.expose().to_vec(), "password") {
                    response::err(out, None, msg);
                    return Action::None;
                }
                self.authenticate(None, user, secret, "USER")
            }
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial, out),
            Command::Apop => {
                response::err(out, None, "APOP is not enabled on this server");
                Action::None
            }
            _ => {
                response::err(out, None, "command not valid before sign-in");
                Action::None
            }
        }
    }

    /// Plaintext credentials only under TLS or from a trusted network.
    fn require_sign_in(&mut self, out: &mut Vec<u8>) -> bool {
        if self.sign_in_allowed() {
            return true;
        }
        self.state = State::Authorization { user: None };
        response::err(
            out,
            None,
            "TLS required: send STLS first, or use the implicit-TLS port",
        );
        false
    }

    /// USER/PASS arguments: UTF-8 beyond ASCII only after the UTF8 command (RFC 6856).
    fn text_argument(&self, bytes: Vec<u8>, what: &str) -> Result<String, &'static str> {
        let _ = what;
        if !bytes.is_ascii() && !self.utf8 {
            return Err("non-ASCII user names and passwords need the UTF8 command first");
        }
        String::from_utf8(bytes).map_err(|_| "user names and passwords must be UTF-8")
    }

    fn auth(
        &mut self,
        mechanism: Option<String>,
        initial: Option<Secret>,
        out: &mut Vec<u8>,
    ) -> Action {
        let Some(mechanism) = mechanism else {
            // The RFC 1734 listing form, still used by some clients.
            response::ok(out, "Supported mechanisms follow");
            if self.sign_in_allowed() {
                for m in &self.config.capabilities.sasl_mechanisms {
                    response::line(out, m);
                }
            }
            response::end(out);
            return Action::None;
        };
        if !self.require_sign_in(out) {
            return Action::None;
        }
        if mechanism != "PLAIN" {
            response::err(out, None, "unsupported authentication mechanism");
            return Action::None;
        }
        match initial {
            Some(ir) => self.plain_message(ir.expose(), out),
            None => {
                out.extend_from_slice(b"+ \r\n");
                self.state = State::SaslPlain;
                Action::None
            }
        }
    }

    fn sasl_plain_response(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action {
        self.state = State::Authorization { user: None };
        if line == b"*" {
            response::err(out, None, "authentication cancelled");
            return Action::None;
        }
        self.plain_message(line, out)
    }

    fn plain_message(&mut self, base64: &[u8], out: &mut Vec<u8>) -> Action {
        let parsed = sasl::decode_response(base64).and_then(|raw| sasl::parse_plain(&raw));
        match parsed {
            Ok(c) => {
                let authzid = (!c.authzid.is_empty()).then_some(c.authzid);
                self.authenticate(authzid, c.authcid, c.password, "PLAIN")
            }
            Err(sasl::PlainError::Base64) => {
                response::err(out, None, "invalid base64 in SASL response");
                Action::None
            }
            Err(sasl::PlainError::Malformed) => {
                response::err(out, Some(RespCode::Auth), "malformed PLAIN response");
                Action::None
            }
        }
    }

    fn authenticate(
        &mut self,
        authzid: Option<String>,
        user: String,
        password: Secret,
        mechanism: &'static str,
    ) -> Action {
        self.state = State::Authenticating;
        Action::Authenticate(AuthRequest {
            authzid,
            user,
            password,
            mechanism,
        })
    }

    /// The outcome of [`Action::Authenticate`].
    pub fn auth_result(&mut self, outcome: AuthOutcome, out: &mut Vec<u8>) -> Action {
        match outcome {
            AuthOutcome::Accepted => {
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
        }
        self.state = State::Authorization { user: None };
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
                let drop = Maildrop::new(messages);
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
    /// line; returns whether the message body should follow.
    pub fn message_opened(
        &mut self,
        index: usize,
        top_lines: Option<u64>,
        opened: bool,
        out: &mut Vec<u8>,
    ) -> bool {
        match &self.state {
            State::Transaction(drop) if opened => {
                drop.message_status(index, top_lines, out);
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
mod tests;
