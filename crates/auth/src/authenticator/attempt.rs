//! The one entry point for a sign-in: an [`Attempt`] goes in, a [`Verdict`] comes out.
//!
//! Everything that belongs to the decision happens inside [`Authenticator::sign_in`]:
//! admission and counting (the guard), the credential check, the authorization
//! identity, the account's sign-in history, the events that feed the audit log,
//! metrics and notices ([`SignInEvents`]), and the failure deadline — a refused
//! attempt's verdict comes back `failure_delay` after the attempt started, whatever the
//! check in between took. The POP3 driver and the security page only carry the verdict
//! to the wire.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use directory::Directory;
use tokio::time::Instant;

use super::{AuthFailure, Authenticator, Identity, Reason, ScramLookup, SecondFactor};

/// One sign-in attempt.
#[derive(Debug)]
pub struct Attempt<'a> {
    /// The client's address.
    pub source: IpAddr,
    /// When the attempt began (the command or the form arrived): the failure deadline
    /// counts from here.
    pub started: Instant,
    /// What the client presented.
    pub proof: Proof<'a>,
}

/// What a client presents. Its `Debug` names the kind of proof and the user, never a
/// secret.
pub enum Proof<'a> {
    /// A password: USER/PASS, PLAIN or LOGIN (`mechanism` names which).
    Password {
        /// The mechanism's name, for the record.
        mechanism: &'static str,
        /// The user name as given.
        user: &'a str,
        /// The password as sent.
        password: &'a [u8],
        /// A SASL authorization identity, if any.
        authzid: Option<&'a str>,
    },
    /// APOP: the digest over the greeting's timestamp.
    Apop {
        /// The user name as given.
        user: &'a str,
        /// The greeting's timestamp.
        timestamp: &'a str,
        /// The client's digest.
        digest: &'a str,
    },
    /// EXTERNAL: the user a verified TLS client certificate maps to, if any.
    Certificate {
        /// The mapped user; `None` when there is no usable certificate.
        user: Option<&'a str>,
        /// A SASL authorization identity, if any.
        authzid: Option<&'a str>,
    },
    /// OAUTHBEARER or XOAUTH2.
    Token {
        /// The mechanism's name.
        mechanism: &'static str,
        /// The user the client named, if any.
        authzid: Option<&'a str>,
        /// The bearer token.
        token: &'a [u8],
    },
    /// SCRAM's second half: the proof was checked against the keys of `lookup`
    /// ([`Authenticator::scram_lookup`], which admitted the attempt).
    Scram {
        /// The mechanism's name.
        mechanism: &'static str,
        /// The user name as given.
        user: &'a str,
        /// The first half; `None` if it is missing (the attempt is then unavailable).
        lookup: Option<Box<ScramLookup>>,
        /// A SASL authorization identity, if any.
        authzid: Option<&'a str>,
        /// Whether the client's proof matched.
        proof_ok: bool,
    },
    /// The security page's first step: the account password.
    WebPassword {
        /// The user name as given.
        user: &'a str,
        /// The password as sent.
        password: &'a [u8],
    },
    /// The security page's second step: a TOTP or recovery code for `user`, whose
    /// password the first step accepted.
    WebCode {
        /// The canonical user name.
        user: &'a str,
        /// The code as typed.
        code: &'a str,
    },
}

impl std::fmt::Debug for Proof<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, user) = match self {
            Proof::Password {
                mechanism, user, ..
            } => (*mechanism, Some(*user)),
            Proof::Apop { user, .. } => ("APOP", Some(*user)),
            Proof::Certificate { user, .. } => ("EXTERNAL", *user),
            Proof::Token {
                mechanism, authzid, ..
            } => (*mechanism, *authzid),
            Proof::Scram {
                mechanism, user, ..
            } => (*mechanism, Some(*user)),
            Proof::WebPassword { user, .. } => ("web password", Some(*user)),
            Proof::WebCode { user, .. } => ("web code", Some(*user)),
        };
        f.debug_struct("Proof")
            .field("kind", &kind)
            .field("user", &user)
            .finish_non_exhaustive()
    }
}

/// What was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A POP3 session may open.
    SignedIn(Identity),
    /// The security page may open for `user`; `factor` is the second factor used.
    WebSignedIn {
        /// The canonical user name.
        user: String,
        /// The second factor, when the account has one.
        factor: Option<SecondFactor>,
    },
    /// The account password was right; a code must follow (the security page).
    CodeRequired {
        /// The canonical user name.
        user: String,
    },
    /// Refused; the reason is for the record only, never for the client.
    Refused(Reason),
    /// Refused by LOGIN-DELAY (RFC 2449): too soon after the last session.
    LoginDelay,
    /// Could not be decided now (`-ERR [SYS/TEMP]`).
    Unavailable,
}

/// What the server is told about a decided attempt.
#[derive(Debug)]
pub struct SignInEvent<'a> {
    /// The name the record uses for how the client signed in: a SASL mechanism, `USER`,
    /// `APOP`; on the security page `password` for the first step and `totp`,
    /// `recovery-code` or `code` (a refused one) for the second.
    pub mechanism: &'static str,
    /// The user name as the client gave it (unbounded: the receiver bounds it).
    pub given: &'a str,
    /// The verdict.
    pub verdict: &'a Verdict,
}

/// A boxed future, for the one asynchronous event.
pub type EventFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Where the decision's events go: the audit log, metrics and the log (synchronous,
/// before the client hears anything), and security notices.
pub trait SignInEvents: Send + Sync {
    /// An attempt was decided. Called before the failure deadline is waited for, so
    /// the record is on its way before the client hears the answer.
    fn decided(&self, event: &SignInEvent<'_>);

    /// `user` signed in from a network the account never used (or not lately); the
    /// sign-in waits for this, so a notice is in the maildrop the session opens.
    /// `how` is the history's name for the sign-in (`PLAIN`, `WEB+TOTP`).
    fn new_network<'a>(&'a self, user: &'a str, how: &'a str) -> EventFuture<'a>;
}

/// Events that go nowhere (tests, tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl SignInEvents for NoEvents {
    fn decided(&self, _: &SignInEvent<'_>) {}
    fn new_network<'a>(&'a self, _: &'a str, _: &'a str) -> EventFuture<'a> {
        Box::pin(std::future::ready(()))
    }
}

/// What one proof's check gave, before the bookkeeping.
struct Checked<'a> {
    /// The record's name for the mechanism.
    mechanism: &'static str,
    /// The history's name for the sign-in, on success or failure.
    history: &'static str,
    /// The user name as given.
    given: &'a str,
    verdict: Verdict,
    /// Signed in from a network the account never used.
    new_network: bool,
}

impl<D: Directory> Authenticator<D> {
    /// Decides `attempt`: see the module documentation. `events` hears the decision;
    /// a refusal returns `failure_delay` after `attempt.started`.
    pub async fn sign_in(&self, attempt: Attempt<'_>, events: &dyn SignInEvents) -> Verdict {
        let started = attempt.started;
        let verdict = self.decide(attempt, events).await;
        if matches!(verdict, Verdict::Refused(_)) {
            self.failure_deadline(started).await;
        }
        verdict
    }

    /// [`Authenticator::sign_in`] without the failure deadline: the decision, its
    /// counting, history and events. For a caller that must run the decision to its
    /// end in a task of its own (the security page: hyper drops a handler whose client
    /// hangs up) and keep the deadline itself, so that a client that left holds
    /// nothing for the delay.
    pub async fn decide(&self, attempt: Attempt<'_>, events: &dyn SignInEvents) -> Verdict {
        let Attempt { source, proof, .. } = attempt;
        let checked = self.check(proof, source).await;
        events.decided(&SignInEvent {
            mechanism: checked.mechanism,
            given: checked.given,
            verdict: &checked.verdict,
        });
        match &checked.verdict {
            Verdict::SignedIn(Identity { user, .. }) | Verdict::WebSignedIn { user, .. } => {
                self.remember(user, source, checked.history, "success");
                if checked.new_network {
                    events.new_network(user, checked.history).await;
                }
            }
            // In the account's history: refusals whose credential was looked at. One
            // refused unchecked (throttled, locked, banned, the hashing queue full)
            // would cost a write per guess under a flood and push the real entries out
            // of the history's last 50.
            Verdict::Refused(reason) if checked_credential(*reason) => {
                if let Ok(user) = self.policy.canonical(checked.given) {
                    self.remember(&user, source, checked.history, "failure");
                }
            }
            Verdict::Refused(_)
            | Verdict::CodeRequired { .. }
            | Verdict::LoginDelay
            | Verdict::Unavailable => {}
        }
        checked.verdict
    }

    /// The credential check for one proof, with admission and counting.
    async fn check<'a>(&self, proof: Proof<'a>, source: IpAddr) -> Checked<'a> {
        let pop3 =
            |mechanism: &'static str, given: &'a str, result: Result<Identity, AuthFailure>| {
                let new_network = result.as_ref().is_ok_and(|i| i.new_network);
                Checked {
                    mechanism,
                    history: mechanism,
                    given,
                    verdict: match result {
                        Ok(identity) => Verdict::SignedIn(identity),
                        Err(failure) => refused(failure),
                    },
                    new_network,
                }
            };
        match proof {
            Proof::Password {
                mechanism,
                user,
                password,
                authzid,
            } => pop3(
                mechanism,
                user,
                self.verify_password_as(user, password, authzid, source)
                    .await,
            ),
            Proof::Apop {
                user,
                timestamp,
                digest,
            } => pop3(
                "APOP",
                user,
                self.verify_apop(user, timestamp, digest, source).await,
            ),
            Proof::Certificate { user, authzid } => match user {
                Some(user) => pop3(
                    "EXTERNAL",
                    user,
                    self.verify_external(user, authzid, source).await,
                ),
                None => pop3("EXTERNAL", "", Err(AuthFailure::Rejected(Reason::BadInput))),
            },
            Proof::Token {
                mechanism,
                authzid,
                token,
            } => pop3(
                mechanism,
                authzid.unwrap_or_default(),
                self.verify_token(authzid, token, source).await,
            ),
            Proof::Scram {
                mechanism,
                user,
                lookup,
                authzid,
                proof_ok,
            } => {
                let result = match lookup {
                    Some(lookup) => self.scram_confirm(*lookup, authzid, proof_ok).await,
                    None => Err(AuthFailure::Unavailable),
                };
                pop3(mechanism, user, result)
            }
            Proof::WebPassword { user, password } => {
                let result = self.web_password(user, password, source).await;
                let new_network = result.as_ref().is_ok_and(|a| a.new_network);
                Checked {
                    mechanism: "password",
                    history: "WEB",
                    given: user,
                    verdict: match result {
                        Ok(a) if a.second_factor => Verdict::CodeRequired { user: a.user },
                        Ok(a) => Verdict::WebSignedIn {
                            user: a.user,
                            factor: None,
                        },
                        // LOGIN-DELAY is a rule for mail polls, not for the page.
                        Err(AuthFailure::LoginDelay) => Verdict::Unavailable,
                        Err(failure) => refused(failure),
                    },
                    new_network,
                }
            }
            Proof::WebCode { user, code } => {
                let result = self.web_second_factor(user, code, source).await;
                let (mechanism, history, new_network, verdict) = match result {
                    Ok((factor, new_network)) => (
                        factor.as_str(),
                        match factor {
                            SecondFactor::Totp => "WEB+TOTP",
                            SecondFactor::RecoveryCode => "WEB+RECOVERY",
                        },
                        new_network,
                        Verdict::WebSignedIn {
                            user: user.to_owned(),
                            factor: Some(factor),
                        },
                    ),
                    Err(AuthFailure::LoginDelay) => {
                        ("code", "WEB+CODE", false, Verdict::Unavailable)
                    }
                    Err(failure) => ("code", "WEB+CODE", false, refused(failure)),
                };
                Checked {
                    mechanism,
                    history,
                    given: user,
                    verdict,
                    new_network,
                }
            }
        }
    }

    /// Adds the attempt to the account's history, in the background (the directory
    /// keeps it for existing accounts only).
    fn remember(&self, user: &str, source: IpAddr, how: &str, result: &str) {
        let entry = directory::SignInEntry {
            user: user.to_owned(),
            at: self.guard.now(),
            address: source.to_canonical().to_string(),
            mechanism: how.to_owned(),
            result: result.to_owned(),
        };
        let dir = std::sync::Arc::clone(&self.dir);
        tokio::spawn(async move {
            if let Err(e) = dir.record_sign_in(&entry).await {
                tracing::warn!(error = %e, "could not record a sign-in in the history");
            }
        });
    }

    /// Sets how long after its start a refused attempt is answered (default: one
    /// second). Every refusal, checked or not, takes this long.
    pub fn with_failure_delay(mut self, delay: Duration) -> Self {
        self.failure_delay = delay;
        self
    }

    /// Waits until `failure_delay` after `started`: for refusals outside a sign-in
    /// (a wrong code when enrolling, a wrong current password) that must take as long.
    pub async fn failure_deadline(&self, started: Instant) {
        tokio::time::sleep_until(started + self.failure_delay).await;
    }
}

/// Whether a refusal looked at the credential of an existing account (and so belongs in
/// its history): not an unknown or malformed name, nor one refused unchecked.
fn checked_credential(reason: Reason) -> bool {
    !matches!(
        reason,
        Reason::UnknownUser
            | Reason::BadInput
            | Reason::Throttled
            | Reason::Locked
            | Reason::Banned
            | Reason::Busy
    )
}

fn refused(failure: AuthFailure) -> Verdict {
    match failure {
        AuthFailure::Rejected(reason) => Verdict::Refused(reason),
        AuthFailure::LoginDelay => Verdict::LoginDelay,
        AuthFailure::Unavailable => Verdict::Unavailable,
    }
}
