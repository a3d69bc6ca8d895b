//! Sign-in on a connection: hands what the client presented to the `auth` crate's one
//! entry point ([`auth::Authenticator::sign_in`]), which decides, counts, records and
//! keeps the failure deadline, and carries its verdict to the wire. The connection
//! tells `auth` where the decision's events go: this session's audit records, the
//! metrics and the log, and the new-network notice.

use tokio::time::Instant;

use auth::{Attempt, EventFuture, Proof, SignInEvent, SignInEvents, Verdict};

use crate::audit::Record;
use crate::metrics::SignInResult;
use pop3_proto::{Action, AuthOutcome, AuthRequest};

use super::{Connection, Shared};

/// Where a POP3 sign-in's events go.
struct Pop3Events<'c> {
    shared: &'c Shared,
    /// This session's audit fields (event `auth`).
    base: Record<'c>,
    peer: std::net::SocketAddr,
    tls: bool,
    tls_version: Option<&'c str>,
}

impl SignInEvents for Pop3Events<'_> {
    fn decided(&self, e: &SignInEvent<'_>) {
        let (peer, mechanism, given) = (self.peer, e.mechanism, e.given);
        let base = || Record {
            user: Some(given),
            mechanism: Some(mechanism),
            ..self.base.clone()
        };
        let metrics = &self.shared.metrics;
        let record = match e.verdict {
            Verdict::SignedIn(identity) => {
                tracing::info!(peer = %peer, user = %identity.user, mechanism, tls = self.tls, "signed in");
                metrics.sign_in(mechanism, SignInResult::Success);
                Record {
                    user_resolved: Some(&identity.user),
                    result: Some("success"),
                    ..base()
                }
            }
            Verdict::Refused(reason) => {
                tracing::info!(peer = %peer, user = %given.escape_debug(), mechanism, reason = reason.as_str(), "sign-in failed");
                metrics.sign_in_failed(mechanism, *reason);
                Record {
                    result: Some("failure"),
                    reason: Some(reason.as_str()),
                    ..base()
                }
            }
            Verdict::LoginDelay => {
                tracing::info!(peer = %peer, user = %given.escape_debug(), mechanism, "sign-in refused: LOGIN-DELAY");
                metrics.sign_in(mechanism, SignInResult::LoginDelay);
                Record {
                    result: Some("login_delay"),
                    ..base()
                }
            }
            // POP3 has no second step: these do not come back for a POP3 proof.
            Verdict::Unavailable | Verdict::WebSignedIn { .. } | Verdict::CodeRequired { .. } => {
                tracing::warn!(peer = %peer, mechanism, "sign-in could not be checked now");
                metrics.sign_in(mechanism, SignInResult::Unavailable);
                Record {
                    result: Some("unavailable"),
                    ..base()
                }
            }
        };
        // On its way to the log before the client hears anything.
        self.shared.audit.write(record);
    }

    fn new_network<'a>(&'a self, user: &'a str, how: &'a str) -> EventFuture<'a> {
        Box::pin(async move {
            let notice = crate::notices::Notice::NewNetwork {
                address: self.peer.ip().to_canonical(),
                mechanism: how,
                tls: self.tls_version,
            };
            self.shared.notices.send(user, notice).await;
        })
    }
}

impl Connection {
    /// USER/PASS, PLAIN and LOGIN.
    pub(super) async fn authenticate(&mut self, req: AuthRequest) -> AuthOutcome {
        let proof = Proof::Password {
            mechanism: req.mechanism,
            user: &req.user,
            password: req.password.expose(),
            authzid: req.authzid.as_deref(),
        };
        let verdict = self.sign_in(proof, Instant::now()).await;
        self.outcome(verdict)
    }

    /// OAUTHBEARER and XOAUTH2: a refused token gets the RFC 7628 section 3.2.2 error
    /// (XOAUTH2: Gmail's shape) as a challenge before the final `-ERR [AUTH]`.
    pub(super) async fn verify_token(
        &mut self,
        authzid: Option<&str>,
        token: &pop3_proto::Secret,
        mechanism: &'static str,
    ) -> Action {
        let proof = Proof::Token {
            mechanism,
            authzid,
            token: token.expose(),
        };
        let verdict = self.sign_in(proof, Instant::now()).await;
        let scope_missing = verdict == Verdict::Refused(auth::Reason::TokenScope);
        let outcome = self.outcome(verdict);
        if outcome != AuthOutcome::Rejected {
            return self.session.auth_result(outcome, &mut self.out);
        }
        // What the client needs to get a better token: the first issuer's discovery
        // document and scopes (RFC 7628 section 3.2.2).
        let first = self.shared.config.oauth.issuers.first();
        let scope = first
            .filter(|i| !i.required_scopes.is_empty())
            .map(|i| i.required_scopes.join(" "));
        let error = if mechanism == sasl::Mechanism::XOAuth2.name() {
            sasl::oauth::xoauth2_error_json(
                if scope_missing { "403" } else { "401" },
                scope.as_deref(),
            )
        } else {
            let discovery = first.map(|i| {
                format!(
                    "{}/.well-known/openid-configuration",
                    i.issuer.trim_end_matches('/')
                )
            });
            sasl::oauth::error_json(
                if scope_missing {
                    "insufficient_scope"
                } else {
                    "invalid_token"
                },
                scope.as_deref(),
                discovery.as_deref(),
            )
        };
        self.session.token_rejected(&error, &mut self.out)
    }

    /// EXTERNAL: the user the TLS client certificate names.
    pub(super) async fn external(&mut self, authzid: Option<&str>) -> AuthOutcome {
        let started = Instant::now();
        let user = match self.cert_identity.clone() {
            Some(Ok(user)) => Some(user),
            Some(Err(why)) => {
                tracing::info!(peer = %self.peer, reason = why, "client certificate not usable");
                None
            }
            None => None,
        };
        let proof = Proof::Certificate {
            user: user.as_deref(),
            authzid,
        };
        let verdict = self.sign_in(proof, started).await;
        self.outcome(verdict)
    }

    /// APOP: the digest over this connection's greeting timestamp.
    pub(super) async fn apop(&mut self, user: &str, timestamp: &str, digest: &str) -> AuthOutcome {
        let proof = Proof::Apop {
            user,
            timestamp,
            digest,
        };
        let verdict = self.sign_in(proof, Instant::now()).await;
        self.outcome(verdict)
    }

    /// SCRAM, first half: the keys to answer the client-first message with. The
    /// lookup admits the attempt; the second half decides it.
    pub(super) async fn lookup_scram(&mut self, user: &str) -> Action {
        match self.shared.auth.scram_lookup(user, self.peer.ip()).await {
            Ok(lookup) => {
                let action = self.session.scram_keys(&lookup.keys, &mut self.out);
                self.scram = Some(lookup);
                action
            }
            Err(_) => self
                .session
                .auth_result(AuthOutcome::Unavailable, &mut self.out),
        }
    }

    /// SCRAM, second half: the proof was checked; decide about the account.
    pub(super) async fn confirm_scram(
        &mut self,
        authzid: Option<&str>,
        user: &str,
        proof_ok: bool,
        mechanism: &'static str,
    ) -> AuthOutcome {
        let proof = Proof::Scram {
            mechanism,
            user,
            lookup: self.scram.take().map(Box::new),
            authzid,
            proof_ok,
        };
        let verdict = self.sign_in(proof, Instant::now()).await;
        self.outcome(verdict)
    }

    /// Decides `proof` through `auth` and carries the verdict into the session.
    async fn sign_in(&mut self, proof: Proof<'_>, started: Instant) -> Verdict {
        let events = Pop3Events {
            shared: &self.shared,
            base: self.record("auth"),
            peer: self.peer,
            tls: self.tls,
            tls_version: self.tls_version.as_deref(),
        };
        let attempt = Attempt {
            source: self.peer.ip(),
            started,
            proof,
        };
        self.shared.auth.sign_in(attempt, &events).await
    }

    /// The session's outcome of a verdict: a signed-in user's maildrop is set up.
    fn outcome(&mut self, verdict: Verdict) -> AuthOutcome {
        match verdict {
            Verdict::SignedIn(identity) => {
                if identity.read_only {
                    self.session.set_read_only();
                }
                self.user = Some(identity.user);
                self.maildir_path = Some(identity.maildir);
                AuthOutcome::Accepted
            }
            Verdict::Refused(_) => AuthOutcome::Rejected,
            Verdict::LoginDelay => AuthOutcome::LoginDelay,
            Verdict::Unavailable | Verdict::WebSignedIn { .. } | Verdict::CodeRequired { .. } => {
                AuthOutcome::Unavailable
            }
        }
    }
}
