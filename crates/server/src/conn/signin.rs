//! Sign-in on a connection: hands credentials to the `auth` crate, the one place that
//! decides, and turns its verdict into the session's outcome. Every failure, whatever
//! its private reason, gets the same public answer at the same time: `failure_delay_ms`
//! after the attempt began, whether it spent a hash or was refused unchecked by the
//! defence (throttled, locked, banned).

use tokio::time::Instant;

use auth::{AuthFailure, Identity};

use crate::audit::Record;
use crate::metrics::SignInResult;
use pop3_proto::{Action, AuthOutcome, AuthRequest};

use super::Connection;

impl Connection {
    /// USER/PASS, PLAIN and LOGIN.
    pub(super) async fn authenticate(&mut self, req: AuthRequest) -> AuthOutcome {
        let started = Instant::now();
        // The authzid is decided (and a refused one counted) with the password.
        let result = self
            .shared
            .auth
            .verify_password_as(
                &req.user,
                req.password.expose(),
                req.authzid.as_deref(),
                self.peer.ip(),
            )
            .await;
        self.verdict(result, &req.user, req.mechanism, started)
            .await
    }

    /// OAUTHBEARER and XOAUTH2: a refused token gets the RFC 7628 section 3.2.2 error
    /// (XOAUTH2: Gmail's shape) as a challenge before the final `-ERR [AUTH]`.
    pub(super) async fn verify_token(
        &mut self,
        authzid: Option<&str>,
        token: &pop3_proto::Secret,
        mechanism: &'static str,
    ) -> Action {
        let started = Instant::now();
        let result = self
            .shared
            .auth
            .verify_token(authzid, token.expose(), self.peer.ip())
            .await;
        let scope_missing = matches!(result, Err(AuthFailure::Rejected(auth::Reason::TokenScope)));
        let outcome = self
            .verdict(result, authzid.unwrap_or_default(), mechanism, started)
            .await;
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
        let (shown, result) = match self.cert_identity.clone() {
            Some(Ok(user)) => {
                let result = self
                    .shared
                    .auth
                    .verify_external(&user, authzid, self.peer.ip())
                    .await;
                (user, result)
            }
            Some(Err(why)) => {
                tracing::info!(peer = %self.peer, reason = why, "client certificate not usable");
                (
                    String::new(),
                    Err(AuthFailure::Rejected(auth::Reason::BadInput)),
                )
            }
            None => (
                String::new(),
                Err(AuthFailure::Rejected(auth::Reason::BadInput)),
            ),
        };
        self.verdict(result, &shown, "EXTERNAL", started).await
    }

    /// APOP: the digest over this connection's greeting timestamp.
    pub(super) async fn apop(&mut self, user: &str, timestamp: &str, digest: &str) -> AuthOutcome {
        let started = Instant::now();
        let result = self
            .shared
            .auth
            .verify_apop(user, timestamp, digest, self.peer.ip())
            .await;
        self.verdict(result, user, "APOP", started).await
    }

    /// SCRAM, first half: the keys to answer the client-first message with.
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
        let started = Instant::now();
        let result = match self.scram.take() {
            Some(lookup) => {
                self.shared
                    .auth
                    .scram_confirm(lookup, authzid, proof_ok)
                    .await
            }
            None => Err(AuthFailure::Unavailable),
        };
        self.verdict(result, user, mechanism, started).await
    }

    /// Adds the attempt to the account's history, in the background (the directory
    /// keeps it for existing accounts only).
    fn remember_sign_in(&self, user: &str, mechanism: &str, result: &str) {
        let entry = directory::SignInEntry {
            user: user.to_owned(),
            at: self.shared.auth.guard().now(),
            address: self.peer.ip().to_canonical().to_string(),
            mechanism: mechanism.to_owned(),
            result: result.to_owned(),
        };
        let dir = self.shared.auth.directory().clone();
        tokio::spawn(async move {
            use directory::Directory as _;
            if let Err(e) = dir.record_sign_in(&entry).await {
                tracing::warn!(error = %e, "could not record a sign-in in the history");
            }
        });
    }

    async fn verdict(
        &mut self,
        result: Result<Identity, AuthFailure>,
        raw_user: &str,
        mechanism: &'static str,
        started: Instant,
    ) -> AuthOutcome {
        match result {
            Ok(identity) => {
                tracing::info!(peer = %self.peer, user = %identity.user, mechanism, tls = self.tls, "signed in");
                self.shared
                    .metrics
                    .sign_in(mechanism, SignInResult::Success);
                self.audit(Record {
                    user: Some(raw_user),
                    user_resolved: Some(&identity.user),
                    mechanism: Some(mechanism),
                    result: Some("success"),
                    ..self.record("auth")
                });
                self.remember_sign_in(&identity.user, mechanism, "success");
                if identity.read_only {
                    self.session.set_read_only();
                }
                if identity.new_network {
                    // Before the maildrop opens, so the notice is in this session's list.
                    let notice = crate::notices::Notice::NewNetwork {
                        address: self.peer.ip().to_canonical(),
                        mechanism,
                        tls: self.tls_version.as_deref(),
                    };
                    self.shared.notices.send(&identity.user, notice).await;
                }
                self.user = Some(identity.user);
                self.maildir_path = Some(identity.maildir);
                AuthOutcome::Accepted
            }
            Err(AuthFailure::Rejected(reason)) => {
                tracing::info!(peer = %self.peer, user = %raw_user.escape_debug(), mechanism, reason = reason.as_str(), "sign-in failed");
                self.shared.metrics.sign_in_failed(mechanism, reason);
                // On its way to the log before the client hears anything.
                self.audit(Record {
                    user: Some(raw_user),
                    mechanism: Some(mechanism),
                    result: Some("failure"),
                    reason: Some(reason.as_str()),
                    ..self.record("auth")
                });
                if !matches!(reason, auth::Reason::UnknownUser | auth::Reason::BadInput)
                    && let Ok(user) = self.shared.auth.policy().canonical(raw_user)
                {
                    self.remember_sign_in(&user, mechanism, "failure");
                }
                let delay =
                    std::time::Duration::from_millis(self.shared.config.auth.failure_delay_ms);
                // A sleep, not a blocked thread: other sessions go on meanwhile.
                tokio::time::sleep_until(started + delay).await;
                AuthOutcome::Rejected
            }
            Err(AuthFailure::LoginDelay) => {
                tracing::info!(peer = %self.peer, user = %raw_user.escape_debug(), mechanism, "sign-in refused: LOGIN-DELAY");
                self.shared
                    .metrics
                    .sign_in(mechanism, SignInResult::LoginDelay);
                self.audit(Record {
                    user: Some(raw_user),
                    mechanism: Some(mechanism),
                    result: Some("login_delay"),
                    ..self.record("auth")
                });
                AuthOutcome::LoginDelay
            }
            Err(AuthFailure::Unavailable) => {
                tracing::warn!(peer = %self.peer, mechanism, "sign-in could not be checked now");
                self.shared
                    .metrics
                    .sign_in(mechanism, SignInResult::Unavailable);
                self.audit(Record {
                    user: Some(raw_user),
                    mechanism: Some(mechanism),
                    result: Some("unavailable"),
                    ..self.record("auth")
                });
                AuthOutcome::Unavailable
            }
        }
    }
}
