//! The AUTHORIZATION state (RFC 1939 section 4): USER/PASS, AUTH (RFC 5034), STLS
//! (RFC 2595), UTF8 (RFC 6856), and the SASL exchange that AUTH starts.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sasl::{ChannelBinding, Exchange, Failure, Mechanism, ScramKeys, Step};

use super::{Action, AuthRequest, Sasl, Session, State, Waiting};
use crate::command::Command;
use crate::response::{self, RespCode};

/// Appends a SASL challenge line: `+ base64` (`+ ` alone when empty).
pub(super) fn challenge(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(b"+ ");
    out.extend_from_slice(STANDARD.encode(data).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Decodes a client response; `=` is the explicit empty response of RFC 5034.
fn decode(text: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    if text == b"=" {
        return Some(zeroize::Zeroizing::new(Vec::new()));
    }
    STANDARD.decode(text).ok().map(zeroize::Zeroizing::new)
}

impl Session {
    pub(super) fn authorization(&mut self, cmd: Command, out: &mut Vec<u8>) -> Action {
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
                match self.text_argument(name) {
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
                if let Err(msg) = self.text_argument(secret.expose().to_vec()) {
                    response::err(out, None, msg);
                    return Action::None;
                }
                self.state = State::Authenticating;
                Action::Authenticate(AuthRequest {
                    authzid: None,
                    user,
                    password: secret,
                    mechanism: "USER",
                })
            }
            Command::Auth { mechanism, initial } => {
                self.auth(mechanism, initial.as_ref().map(|s| s.expose()), out)
            }
            Command::Apop { user, digest } => {
                let Some(timestamp) = self.config.apop_timestamp.clone() else {
                    response::err(out, None, "APOP is not enabled on this server");
                    return Action::None;
                };
                // APOP's MD5 digest can be attacked offline from a captured exchange,
                // so it follows the same TLS rule as the plaintext mechanisms.
                if !self.require_sign_in(out) {
                    return Action::None;
                }
                match self.text_argument(user) {
                    Ok(user) => {
                        self.state = State::Authenticating;
                        Action::Apop {
                            user,
                            digest,
                            timestamp,
                        }
                    }
                    Err(msg) => {
                        response::err(out, None, msg);
                        Action::None
                    }
                }
            }
            _ => {
                response::err(out, None, "command not valid before sign-in");
                Action::None
            }
        }
    }

    /// Credentials only under TLS or from a trusted network.
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
    fn text_argument(&self, bytes: Vec<u8>) -> Result<String, &'static str> {
        if !bytes.is_ascii() && !self.utf8 {
            return Err("non-ASCII user names and passwords need the UTF8 command first");
        }
        String::from_utf8(bytes).map_err(|_| "user names and passwords must be UTF-8")
    }

    fn auth(
        &mut self,
        mechanism: Option<String>,
        initial: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Action {
        let usable = self.usable_mechanisms();
        let Some(name) = mechanism else {
            // The RFC 1734 listing form, which Outlook uses to discover mechanisms.
            response::ok(out, "Supported mechanisms follow");
            for m in &usable {
                response::line(out, m.name());
            }
            response::end(out);
            return Action::None;
        };
        if !self.require_sign_in(out) {
            return Action::None;
        }
        let Some(mechanism) = Mechanism::from_name(&name).filter(|m| usable.contains(m)) else {
            response::err(out, None, "unsupported authentication mechanism");
            return Action::None;
        };
        let initial = match initial.map(decode) {
            None => None,
            Some(Some(data)) => Some(data),
            Some(None) => {
                response::err(out, None, "invalid base64 in SASL response");
                return Action::None;
            }
        };
        let binding = ChannelBinding {
            tls_exporter: self.tls_info.channel_binding,
            plus_offered: usable.contains(&Mechanism::ScramSha256Plus),
        };
        let mut exchange = Exchange::new(mechanism, binding);
        let step = exchange.start(initial.as_deref().map(Vec::as_slice));
        self.state = State::Sasl(Box::new(Sasl {
            mechanism,
            exchange,
            scram_user: None,
            server_final: None,
            waiting: Waiting::Client,
        }));
        self.sasl_step(step, out)
    }

    /// A line while an AUTH exchange waits for the client.
    pub(super) fn sasl_line(&mut self, line: &[u8], out: &mut Vec<u8>) -> Action {
        let State::Sasl(sasl) = &mut self.state else {
            return Action::None;
        };
        if line == b"*" {
            self.state = State::Authorization { user: None };
            response::err(out, None, "authentication cancelled");
            return Action::None;
        }
        match sasl.waiting {
            Waiting::Client => {}
            Waiting::FinalAck if line.is_empty() || line == b"=" => {
                self.state = State::Opening;
                return Action::OpenMaildrop;
            }
            Waiting::FinalAck | Waiting::Server => {
                self.state = State::Authorization { user: None };
                response::err(out, None, "unexpected SASL response");
                return Action::None;
            }
        }
        let Some(data) = decode(line) else {
            self.state = State::Authorization { user: None };
            response::err(out, None, "invalid base64 in SASL response");
            return Action::None;
        };
        let step = sasl.exchange.respond(&data);
        self.sasl_step(step, out)
    }

    /// Continues a SCRAM exchange with the keys from [`Action::LookupScram`].
    pub fn scram_keys(&mut self, keys: &ScramKeys, out: &mut Vec<u8>) -> Action {
        let State::Sasl(sasl) = &mut self.state else {
            return Action::None;
        };
        let step = sasl.exchange.scram_keys(keys);
        self.sasl_step(step, out)
    }

    fn sasl_step(&mut self, step: Step, out: &mut Vec<u8>) -> Action {
        let State::Sasl(sasl) = &mut self.state else {
            return Action::None;
        };
        let mechanism = sasl.mechanism.name();
        match step {
            Step::Challenge(data) => {
                sasl.waiting = Waiting::Client;
                challenge(out, &data);
                Action::None
            }
            Step::VerifyPassword {
                authzid,
                authcid,
                password,
            } => {
                self.state = State::Authenticating;
                Action::Authenticate(AuthRequest {
                    authzid,
                    user: authcid,
                    password,
                    mechanism,
                })
            }
            Step::VerifyToken { authzid, token } => {
                self.state = State::Authenticating;
                Action::VerifyToken {
                    authzid,
                    token,
                    mechanism,
                }
            }
            Step::External { authzid } => {
                self.state = State::Authenticating;
                Action::External { authzid }
            }
            Step::LookupScram { authzid, username } => {
                sasl.waiting = Waiting::Server;
                sasl.scram_user = Some((authzid, username.clone()));
                Action::LookupScram { user: username }
            }
            Step::ScramProof {
                proof_ok,
                server_final,
            } => {
                sasl.waiting = Waiting::Server;
                sasl.server_final = Some(server_final);
                let (authzid, user) = sasl.scram_user.take().unwrap_or_default();
                Action::ConfirmScram {
                    authzid,
                    user,
                    proof_ok,
                    mechanism,
                }
            }
            Step::Fail(failure) => {
                let user = sasl.scram_user.take().map(|(_, user)| user);
                self.state = State::Authorization { user: None };
                let reason = match failure {
                    // The same answer as every credential failure: a man in the
                    // middle learns nothing from it.
                    Failure::ChannelBinding => {
                        response::err(out, Some(RespCode::Auth), "invalid user name or password");
                        "channel_binding_mismatch"
                    }
                    Failure::Malformed | Failure::UnexpectedStep => {
                        response::err(out, None, "malformed SASL response");
                        "malformed_sasl"
                    }
                };
                Action::SaslFailed {
                    mechanism,
                    user,
                    reason,
                }
            }
        }
    }
}
