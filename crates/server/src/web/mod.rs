//! The self-service security page: HTTPS with the POP3 certificates (and their
//! reloads), plain server-rendered HTML, no script.
//!
//! Sign-in is the account password (never an app password), then a TOTP or recovery
//! code when the account has an authenticator; both steps go through the
//! [`Authenticator`] under the same guard as POP3, so guesses here count toward the
//! same throttling, lockout and bans, and reach the audit log (`web_auth`) and the
//! account's sign-in history (`WEB`, `WEB+TOTP`, `WEB+RECOVERY`).
//!
//! A password-only session (an account without an authenticator) may enrol one,
//! change the password, revoke app passwords and read the history; creating app
//! passwords, renewing recovery codes and replacing an authenticator need a session
//! that signed in with two factors (or has just enrolled).
//!
//! Every form of a signed-in session carries its CSRF token; every POST must also come
//! from this origin (`Sec-Fetch-Site`/`Origin`, where the browser sends them), and the
//! cookie is `SameSite=Strict`. Responses forbid framing, caching and scripts.

mod html;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use auth::{
    AdminError, Attempt, AuthFailure, EventFuture, Proof, SecondFactor, SignInEvent, SignInEvents,
    Verdict,
};
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use directory::Directory as _;
use sha2::{Digest as _, Sha256};

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::audit::Record;
use crate::http_conn::{Busy, TlsLimits, serve_tls};
use crate::metrics::{Listener, Refused};
use crate::notices::Notice;
use crate::reload::Current;
use html::Frame;
use session::{Session, Sessions, Stage};

/// HTTPS connections served at once; at the limit the one idle longest makes room.
const MAX_CONNECTIONS: usize = 256;
/// HTTPS connections from one address at once (a browser opens about six).
const MAX_PER_ADDRESS: usize = 16;
/// HTTPS connections from one network (IPv4 /24, IPv6 /48) while the page is busy.
const MAX_PER_NETWORK: usize = 32;
/// How long one connection may stay open (keep-alive requests included).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request's headers may take, and an idle keep-alive connection may wait.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request's body (a form of at most `MAX_BODY` bytes) may take.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Form bodies are small; anything larger is refused before it is read whole.
const MAX_BODY: usize = 16 * 1024;
/// Sign-ins shown on the page.
const HISTORY_SHOWN: u32 = 20;
/// The stylesheet, served at `/style.css`.
const STYLE: &str = include_str!("style.css");

/// What the handlers share.
struct Web {
    /// The configuration in force and what is built from it: loaded per request, so a
    /// reload applies to the next one.
    current: Current,
    sessions: Sessions,
    /// The server's name (read only at start).
    hostname: String,
}

/// Serves the security page on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    current: Current,
    shutdown: CancellationToken,
) {
    // The page's own limits and sessions are set at start (`[web]` is read only then).
    let (auth, audit, metrics, config) = {
        let shared = current.load();
        (
            shared.auth.clone(),
            shared.audit.clone(),
            shared.metrics.clone(),
            shared.config.clone(),
        )
    };
    let limits = TlsLimits {
        admission: crate::admission::Limits {
            cap: MAX_CONNECTIONS,
            per_address: MAX_PER_ADDRESS,
            per_network: MAX_PER_NETWORK,
        },
        lifetime: CONNECTION_LIFETIME,
        handshake_timeout: HANDSHAKE_TIMEOUT,
        header_timeout: HEADER_TIMEOUT,
        busy_idle_timeout: Duration::from_secs(config.limits.idle_timeout_auth_busy_secs),
        body_timeout: BODY_TIMEOUT,
    };
    // A banned address gets no page, as it gets no POP3 greeting.
    drop(auth);
    let allowing = current.clone();
    let allow = move |ip| {
        let shared = allowing.load_full();
        async move { shared.auth.guard().connection_allowed(ip).await }
    };
    // Connections turned away for want of room: the POP3 listeners' word, `busy`.
    drop(audit);
    let busy_audit = current.clone();
    let report = Arc::new(move |why: Busy, peer: SocketAddr| {
        match why {
            Busy::Refused => metrics.refused(Refused::Busy),
            Busy::Shed => metrics.shed(Listener::Web),
        }
        busy_audit.load().audit.write(
            Record {
                event: if why == Busy::Shed {
                    "disconnect"
                } else {
                    "refused"
                },
                listener: Some("web"),
                reason: (why == Busy::Refused).then_some(Refused::Busy.as_str()),
                end: (why == Busy::Shed).then_some(Refused::Busy.as_str()),
                ..Record::default()
            }
            .addresses(peer, None),
        );
    });
    let state = Arc::new(Web {
        current,
        sessions: Sessions::new(&config.web),
        hostname: config.hostname.clone(),
    });
    let app = router(state);
    serve_tls(
        listener,
        TlsAcceptor::from(tls),
        limits,
        allow,
        app,
        report,
        shutdown,
    )
    .await;
}

/// A form field that holds a secret: wiped from memory when dropped.
#[derive(Default)]
struct Secret(Zeroizing<String>);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Secret(Zeroizing::new(s)))
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

fn router(state: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/style.css", get(style))
        .route("/signin", get(signin_page).post(signin))
        .route("/signin/code", get(code_page).post(code))
        .route("/signout", post(signout))
        .route("/mfa/setup", get(enrol_page).post(enrol_start))
        .route("/mfa/confirm", post(enrol_confirm))
        .route("/recovery-codes", post(renew_recovery_codes))
        .route("/reveal", get(reveal))
        .route("/app-passwords", post(create_app_password))
        .route("/app-passwords/revoke", post(revoke_app_password))
        .route("/password", post(change_password))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Headers on every response: no framing, no sniffing, no referrer, no script, and
/// nothing cached but the stylesheet. No HSTS: it would bind every port of the host
/// name to HTTPS, the plain metrics listener's included, and the page has no plain
/// HTTP listener to protect.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, header::CACHE_CONTROL, "no-store");
    }
    response
}

async fn style() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
}

// ----------------------------------------------------------------------- helpers

impl Web {
    /// The configuration in force and what is built from it.
    fn now(&self) -> Arc<crate::conn::Shared> {
        self.current.load_full()
    }

    fn frame<'a>(&'a self, session: Option<&'a Session>) -> Frame<'a> {
        Frame {
            host: &self.hostname,
            user: session
                .filter(|s| s.stage != Stage::Code)
                .map(|s| (s.user.as_str(), s.csrf.as_str())),
        }
    }

    fn page(
        &self,
        status: StatusCode,
        session: Option<&Session>,
        title: &str,
        body: &str,
    ) -> Response {
        let html = html::page(&self.frame(session), title, body);
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response()
    }

    fn unavailable(&self, session: Option<&Session>) -> Response {
        self.page(
            StatusCode::SERVICE_UNAVAILABLE,
            session,
            "Try again later",
            &html::message(
                "Try again later",
                "The service is temporarily unavailable. Please try again in a few minutes.",
            ),
        )
    }

    /// The session of the request's cookie, with its token, without looking at the
    /// account (for pages that show nothing of it).
    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let token = session::token_from(headers)?;
        let s = self.sessions.get(&token)?;
        Some((token, s))
    }

    /// The session of the request's cookie, if the account is still as it was when the
    /// session signed in (see [`Web::epoch`]); a changed account ends the session.
    async fn current(&self, headers: &HeaderMap) -> Result<Option<(String, Session)>, Response> {
        let Some((token, s)) = self.session(headers) else {
            return Ok(None);
        };
        match self.epoch(&s.user).await {
            Ok(Some(e)) if e == s.epoch => Ok(Some((token, s))),
            Ok(_) => {
                self.sessions.remove(&token);
                Ok(None)
            }
            Err(()) => Err(self.unavailable(Some(&s))),
        }
    }

    /// [`Web::current`], or the response that sends the browser to sign in.
    async fn signed_in(&self, headers: &HeaderMap) -> Result<(String, Session), Response> {
        self.current(headers)
            .await?
            .ok_or_else(|| redirect("/signin"))
    }

    /// A fingerprint of what a sign-in to `user` rests on: the password hash, the
    /// enabled flag and the authenticator (when it was set up, and whether it is
    /// confirmed). A change through the page, the CLI or another node changes it.
    /// `Ok(None)`: no such account (any more).
    async fn epoch(&self, user: &str) -> Result<Option<String>, ()> {
        let now = self.now();
        let dir = now.auth.directory();
        let Some(record) = dir.find_user(user).await.map_err(|_| ())? else {
            return Ok(None);
        };
        let mfa = dir.mfa(user).await.map_err(|_| ())?;
        let mut h = Sha256::new();
        h.update(record.password_hash.as_bytes());
        h.update([0, u8::from(record.enabled)]);
        if let Some(m) = mfa {
            h.update(m.enrolled_at.to_be_bytes());
            h.update([u8::from(m.confirmed)]);
        }
        Ok(Some(
            h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        ))
    }

    /// Decides a sign-in step through `auth`, then keeps the failure deadline; the page
    /// only shows the verdict. The decision runs in a task of its own: hyper drops a
    /// handler whose client hangs up, and a step dropped mid-check would be counted
    /// (its reservation) but never audited nor remembered in the history. The deadline
    /// stays here, so a client that left holds nothing for the delay, and the tasks
    /// left behind are bounded by the hashing queue (beyond it, refused as busy).
    async fn sign_in(
        self: &Arc<Self>,
        step: WebStep,
        peer: SocketAddr,
        started: Instant,
    ) -> Verdict {
        let web = Arc::clone(self);
        let decided = tokio::spawn(async move {
            let proof = match &step {
                WebStep::Password { user, password } => Proof::WebPassword {
                    user,
                    password: password.as_bytes(),
                },
                WebStep::Code { user, code } => Proof::WebCode { user, code },
            };
            let attempt = Attempt {
                source: peer.ip(),
                started,
                proof,
            };
            web.now()
                .auth
                .decide(attempt, &WebEvents { web: &web, peer })
                .await
        });
        let verdict = decided.await.unwrap_or(Verdict::Unavailable);
        if matches!(verdict, Verdict::Refused(_)) {
            self.now().auth.failure_deadline(started).await;
        }
        verdict
    }

    /// A page session for `user` after a sign-in step, and the browser sent on.
    async fn open_session(&self, user: &str, stage: Stage) -> Response {
        let epoch = match self.epoch(user).await {
            Ok(Some(e)) => e,
            _ => return self.unavailable(None),
        };
        let Some(token) = self.sessions.create(user, stage, epoch) else {
            return self.unavailable(None);
        };
        let to = if stage == Stage::Code {
            "/signin/code"
        } else {
            "/"
        };
        redirect_with_cookie(to, session::set_cookie(&token))
    }

    /// Keeps `body` (a page holding a secret) for one GET of `/reveal`, and sends the
    /// browser there: reloading that page shows nothing again and repeats nothing.
    fn reveal(&self, token: &str, body: String) -> Response {
        self.sessions
            .update(token, |s| s.reveal = Some(Zeroizing::new(body)));
        redirect("/reveal")
    }

    /// The same answer time POP3 gives every failed sign-in: `failure_delay_ms` from
    /// the attempt's start, whatever the check in between took.
    async fn failure_delay(&self, started: Instant) {
        self.now().auth.failure_deadline(started).await;
    }

    fn audit(&self, peer: SocketAddr, record: Record<'_>) {
        self.now().audit.write(
            Record {
                listener: Some("web"),
                ..record
            }
            .addresses(peer, None),
        );
    }

    /// An `account` event: a change the user made on the page (`app_password` names
    /// the app password it concerns, by id).
    fn account_event(&self, peer: SocketAddr, user: &str, action: &str, app_password: Option<i64>) {
        self.audit(
            peer,
            Record {
                event: "account",
                user: Some(user),
                user_resolved: Some(user),
                action: Some(action),
                app_password_id: app_password,
                ..Record::default()
            },
        );
    }

    /// How mail apps reach this server, for the new app password's page.
    fn connection_hint(&self) -> String {
        let l = &self.now().config.listen;
        match (l.pop3s.first(), l.pop3.first()) {
            (Some(s), _) => format!("POP3 over TLS (SSL/TLS), port {}", s.port()),
            (None, Some(p)) => format!("POP3 with STARTTLS, port {}", p.port()),
            (None, None) => "POP3".into(),
        }
    }
}

/// A sign-in step as the page received it, owned so that its decision can outlive the
/// request (see [`Web::sign_in`]).
enum WebStep {
    Password {
        user: String,
        password: Zeroizing<String>,
    },
    Code {
        user: String,
        code: Zeroizing<String>,
    },
}

/// Where a page sign-in's events go: the audit log (`web_auth`) and notices.
struct WebEvents<'w> {
    web: &'w Web,
    peer: SocketAddr,
}

impl SignInEvents for WebEvents<'_> {
    fn decided(&self, e: &SignInEvent<'_>) {
        // Bounded: a password typed into the name field must not end up in the log whole.
        let given = bounded_name(e.given);
        let (resolved, result, reason) = match e.verdict {
            Verdict::WebSignedIn { user, .. } => (Some(user.as_str()), "success", None),
            Verdict::CodeRequired { user } => (Some(user.as_str()), "code_required", None),
            Verdict::Refused(reason) => (None, "failure", Some(reason.as_str())),
            Verdict::SignedIn(_) | Verdict::LoginDelay | Verdict::Unavailable => {
                (None, "unavailable", None)
            }
        };
        self.web.audit(
            self.peer,
            Record {
                event: "web_auth",
                user: Some(given),
                // The second step names the account the first one resolved.
                user_resolved: resolved.or((e.mechanism != "password").then_some(given)),
                mechanism: Some(e.mechanism),
                result: Some(result),
                reason,
                ..Record::default()
            },
        );
    }

    fn new_network<'a>(&'a self, user: &'a str, how: &'a str) -> EventFuture<'a> {
        Box::pin(async move {
            let notice = Notice::NewNetwork {
                address: self.peer.ip().to_canonical(),
                mechanism: how,
                tls: None,
            };
            self.web.now().notices.send(user, notice).await;
        })
    }
}

/// Whether a POST comes from this site: browsers say so in `Sec-Fetch-Site` (or at
/// least `Origin`); a client that sends neither (curl, an old browser) still needs the
/// session's CSRF token for anything that matters.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (None, _) => true,
        (Some(origin), Some(host)) => {
            origin
                .to_str()
                .ok()
                .and_then(|o| o.strip_prefix("https://"))
                == host.to_str().ok()
        }
        (Some(_), None) => false,
    }
}

/// Compares two tokens in time independent of where they differ.
fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

fn redirect_with_cookie(to: &'static str, cookie: String) -> Response {
    let mut r = redirect(to);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "This form has expired or did not come from this page. Go back, reload and try again.\n",
    )
        .into_response()
}

/// The signed-in session a POST acts for: from this origin, with its CSRF token, past
/// the second-factor step, and on an account unchanged since it signed in. `Err` is
/// the response to send instead.
async fn acting(
    w: &Web,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(String, Session), Box<Response>> {
    let (token, s) = w.signed_in(headers).await.map_err(Box::new)?;
    if !same_origin(headers) || !tokens_match(csrf, &s.csrf) {
        return Err(Box::new(forbidden()));
    }
    if s.stage == Stage::Code {
        return Err(Box::new(redirect("/signin/code")));
    }
    Ok((token, s))
}

/// Whether the account has a confirmed authenticator (then a password-only session
/// must not touch the second factor).
async fn enrolled(w: &Web, user: &str) -> Result<bool, AdminError> {
    Ok(w.now().auth.mfa_status(user).await?.enrolled)
}

// ---------------------------------------------------------------------- handlers

async fn overview(State(w): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let (token, s) = match w.signed_in(&headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };

    if s.stage == Stage::Code {
        return redirect("/signin/code");
    }
    let now = w.now();
    let dir = now.auth.directory();
    let (status, apps, history) = match (
        w.now().auth.mfa_status(&s.user).await,
        dir.list_app_passwords(&s.user).await,
        dir.sign_in_history(&s.user, HISTORY_SHOWN).await,
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => return w.unavailable(Some(&s)),
    };
    let flash = w.sessions.take_flash(&token);
    let body = html::overview(&html::Overview {
        csrf: &s.csrf,
        two_factor_session: s.stage == Stage::TwoFactor,
        status: &status,
        app_passwords: &apps,
        history: &history,
        flash: flash.as_deref(),
        now: w.now().auth.guard().now(),
    });
    w.page(StatusCode::OK, Some(&s), "Security", &body)
}

async fn signin_page(State(w): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match w.session(&headers) {
        Some((_, s)) if s.stage == Stage::Code => redirect("/signin/code"),
        Some(_) => redirect("/"),
        None => w.page(StatusCode::OK, None, "Sign in", &html::signin("", None)),
    }
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: Secret,
}

/// The text every refused sign-in gets, whatever the reason.
const SIGNIN_REFUSED: &str = "The user name or password is not right.";

async fn signin(
    State(w): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<SignInForm>,
) -> Response {
    let started = Instant::now();
    if !same_origin(&headers) {
        return forbidden();
    }
    // Bounded, for the audit log and the form: a password typed into the name field
    // must not end up there whole.
    let shown = bounded_name(&f.user);
    let step = WebStep::Password {
        user: f.user.clone(),
        password: f.password.0.clone(),
    };
    match w.sign_in(step, peer, started).await {
        Verdict::CodeRequired { user } => w.open_session(&user, Stage::Code).await,
        Verdict::WebSignedIn { user, .. } => w.open_session(&user, Stage::Password).await,
        Verdict::Refused(_) => w.page(
            StatusCode::UNAUTHORIZED,
            None,
            "Sign in",
            &html::signin(shown, Some(SIGNIN_REFUSED)),
        ),
        Verdict::SignedIn(_) | Verdict::LoginDelay | Verdict::Unavailable => w.unavailable(None),
    }
}

async fn code_page(State(w): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match w.session(&headers) {
        Some((_, s)) if s.stage == Stage::Code => w.page(
            StatusCode::OK,
            Some(&s),
            "Two-step verification",
            &html::code(&s.csrf, None),
        ),
        Some(_) => redirect("/"),
        None => redirect("/signin"),
    }
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: Secret,
}

async fn code(
    State(w): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> Response {
    let started = Instant::now();
    let (token, s) = match w.signed_in(&headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if !same_origin(&headers) || !tokens_match(&f.csrf, &s.csrf) {
        return forbidden();
    }
    if s.stage != Stage::Code {
        return redirect("/");
    }
    let step = WebStep::Code {
        user: s.user.clone(),
        code: f.code.0.clone(),
    };
    match w.sign_in(step, peer, started).await {
        Verdict::WebSignedIn { factor, .. } => {
            let Some(new) = w
                .sessions
                .promote(&token, Stage::TwoFactor, s.epoch.clone())
            else {
                return redirect("/signin");
            };
            if factor == Some(SecondFactor::RecoveryCode) {
                w.sessions.update(&new, |s| {
                    s.flash =
                        Some("You signed in with a recovery code; it cannot be used again.".into());
                });
            }
            redirect_with_cookie("/", session::set_cookie(&new))
        }
        Verdict::Refused(_) => w.page(
            StatusCode::UNAUTHORIZED,
            Some(&s),
            "Two-step verification",
            &html::code(
                &s.csrf,
                Some("That code is not right, or it was used already. Wait for the next code and try again."),
            ),
        ),
        Verdict::SignedIn(_)
        | Verdict::CodeRequired { .. }
        | Verdict::LoginDelay
        | Verdict::Unavailable => w.unavailable(Some(&s)),
    }
}

/// Shows, once, the page a POST kept for it (see [`Web::reveal`]).
async fn reveal(State(w): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let (token, s) = match w.signed_in(&headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match w.sessions.take_reveal(&token) {
        Some(body) => w.page(StatusCode::OK, Some(&s), "Shown once", &body),
        None => redirect("/"),
    }
}

/// A user name as typed, cut to the longest name an account can have.
fn bounded_name(raw: &str) -> &str {
    let mut end = raw.len().min(auth::MAX_USERNAME_BYTES);
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    &raw[..end]
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn signout(
    State(w): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some((token, s)) = w.session(&headers) {
        if !same_origin(&headers) || !tokens_match(&f.csrf, &s.csrf) {
            return forbidden();
        }
        w.sessions.remove(&token);
    }
    redirect_with_cookie("/signin", session::clear_cookie())
}

async fn enrol_start(
    State(w): State<Arc<Web>>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (token, s) = match acting(&w, &headers, &f.csrf).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match enrolled(&w, &s.user).await {
        Ok(true) if s.stage != Stage::TwoFactor => return forbidden(),
        Ok(_) => {}
        Err(_) => return w.unavailable(Some(&s)),
    }
    let Ok(enrolment) = w.now().auth.mfa_prepare(&s.user) else {
        return w.unavailable(Some(&s));
    };
    w.sessions
        .update(&token, |s| s.enrolment = Some(enrolment.secret));
    redirect("/mfa/setup")
}

/// The authenticator secret as a QR code of its `otpauth://` URI, inline SVG.
fn qr_svg(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(uri, qrcode::EcLevel::M).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build();
    // Inline in HTML: without the XML declaration.
    let start = svg.find("<svg")?;
    Some(svg[start..].to_owned())
}

async fn enrol_page(State(w): State<Arc<Web>>, headers: HeaderMap) -> Response {
    match w.signed_in(&headers).await {
        Ok((_, s)) => enrol_render(&w, &s, None, StatusCode::OK),
        Err(r) => r,
    }
}

fn enrol_render(w: &Web, s: &Session, error: Option<&str>, status: StatusCode) -> Response {
    let Some(secret) = s.enrolment.as_ref().filter(|_| s.stage != Stage::Code) else {
        return redirect("/");
    };
    let uri = auth::mfa::base32_decode(secret)
        .map(|raw| auth::mfa::otpauth_uri(w.now().auth.mfa_issuer(), &s.user, &raw));
    let (Some(uri), Some(svg)) = (uri.as_deref(), uri.as_deref().and_then(qr_svg)) else {
        return w.unavailable(Some(s));
    };
    let body = html::enrol(&s.csrf, &svg, secret, uri, error);
    w.page(status, Some(s), "Set up an authenticator app", &body)
}

async fn enrol_confirm(
    State(w): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> Response {
    let started = Instant::now();
    let (token, s) = match acting(&w, &headers, &f.csrf).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(secret) = s.enrolment.clone() else {
        return redirect("/");
    };
    // Only a session with both factors replaces an authenticator (checked again here:
    // one may have been set up since this enrolment began).
    match enrolled(&w, &s.user).await {
        Ok(true) if s.stage != Stage::TwoFactor => return forbidden(),
        Ok(_) => {}
        Err(_) => return w.unavailable(Some(&s)),
    }
    match w
        .now()
        .auth
        .mfa_confirm_secret(&s.user, &secret, &f.code)
        .await
    {
        Ok(codes) => {
            w.account_event(peer, &s.user, "mfa_enrolled", None);
            // The session now holds both factors: a fresh token for it, with the
            // account's new epoch; every other session of the account ends.
            let Ok(Some(epoch)) = w.epoch(&s.user).await else {
                return w.unavailable(Some(&s));
            };
            let Some(new) = w.sessions.promote(&token, Stage::TwoFactor, epoch) else {
                return redirect("/signin");
            };
            w.sessions.remove_user(&s.user, &new);
            let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
            let body = html::recovery_codes(&codes, "Two-step verification is on.");
            let mut r = w.reveal(&new, body);
            if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&new)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(AdminError::BadInput(_)) => {
            w.failure_delay(started).await;
            enrol_render(
                &w,
                &s,
                Some(
                    "That code is not the current one. Check the phone's clock and try the next code.",
                ),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        Err(_) => w.unavailable(Some(&s)),
    }
}

async fn renew_recovery_codes(
    State(w): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let (token, s) = match acting(&w, &headers, &f.csrf).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if s.stage != Stage::TwoFactor {
        return forbidden();
    }
    match w.now().auth.new_recovery_codes(&s.user).await {
        Ok(codes) => {
            w.account_event(peer, &s.user, "recovery_codes_renewed", None);
            let codes: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
            let body =
                html::recovery_codes(&codes, "New recovery codes: the old ones no longer work.");
            w.reveal(&token, body)
        }
        Err(_) => w.unavailable(Some(&s)),
    }
}

#[derive(Deserialize)]
struct AppPasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    expires_days: String,
    #[serde(default)]
    networks: String,
    #[serde(default)]
    read_only: Option<String>,
}

/// The app password form's fields, checked: label, expiry (ms), networks.
fn app_password_fields(
    f: &AppPasswordForm,
    now: i64,
) -> Result<(String, Option<i64>, Option<String>), String> {
    let label = f.label.trim();
    if label.is_empty() || label.chars().count() > 64 || label.chars().any(char::is_control) {
        return Err("Give the app password a name of 1 to 64 characters.".into());
    }
    let expires = match f.expires_days.trim() {
        "" => None,
        days => match days.parse::<i64>() {
            Ok(d @ 1..=3650) => Some(now.saturating_add(d * 86_400_000)),
            _ => return Err("The expiry must be a number of days from 1 to 3650.".into()),
        },
    };
    let entries: Vec<&str> = f
        .networks
        .split([',', ' ', '\n', '\r', '\t'])
        .filter(|e| !e.is_empty())
        .collect();
    let networks = if entries.is_empty() {
        None
    } else {
        Some(auth::defence::network_list(&entries).map_err(|e| format!("Networks: {e}"))?)
    };
    Ok((label.to_owned(), expires, networks))
}

async fn create_app_password(
    State(w): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<AppPasswordForm>,
) -> Response {
    let (token, s) = match acting(&w, &headers, &f.csrf).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if s.stage != Stage::TwoFactor {
        return forbidden();
    }
    let (label, expires, networks) = match app_password_fields(&f, w.now().auth.guard().now()) {
        Ok(x) => x,
        Err(why) => {
            w.sessions.update(&token, |s| s.flash = Some(why));
            return redirect("/");
        }
    };
    let read_only = f.read_only.is_some();
    match w
        .now()
        .auth
        .create_app_password(&s.user, &label, expires, networks, read_only)
        .await
    {
        Ok((id, password)) => {
            w.account_event(peer, &s.user, "app_password_created", Some(id));
            let body = html::new_app_password(
                &label,
                &password,
                &s.user,
                &w.now().config.hostname,
                &w.connection_hint(),
            );
            w.reveal(&token, body)
        }
        Err(_) => w.unavailable(Some(&s)),
    }
}

#[derive(Deserialize)]
struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: i64,
}

async fn revoke_app_password(
    State(w): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Response {
    let (token, s) = match acting(&w, &headers, &f.csrf).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match w
        .now()
        .auth
        .directory()
        .revoke_app_password(&s.user, f.id)
        .await
    {
        Ok(found) => {
            if found {
                w.account_event(peer, &s.user, "app_password_revoked", Some(f.id));
            }
            let note = if found {
                "App password revoked: it no longer signs in."
            } else {
                "That app password was already gone."
            };
            w.sessions.update(&token, |s| s.flash = Some(note.into()));
            redirect("/")
        }
        Err(_) => w.unavailable(Some(&s)),
    }
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: Secret,
    #[serde(default)]
    new: Secret,
    #[serde(default)]
    confirm: Secret,
}

async fn change_password(
    State(w): State<Arc<Web>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<PasswordForm>,
) -> Response {
    let started = Instant::now();
    let (token, s) = match acting(&w, &headers, &f.csrf).await {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let refuse = |why: String| {
        w.sessions.update(&token, |s| {
            s.flash = Some(format!("Password not changed: {why}"))
        });
        redirect("/")
    };
    // The current password again, under the guard: a session left open is not enough.
    match w
        .now()
        .auth
        .web_password(&s.user, f.current.as_bytes(), peer.ip())
        .await
    {
        Ok(_) => {}
        Err(AuthFailure::Rejected(_)) => {
            w.failure_delay(started).await;
            return refuse("the current password is not right.".into());
        }
        Err(_) => return w.unavailable(Some(&s)),
    }
    if *f.new != *f.confirm {
        return refuse("the two new passwords differ.".into());
    }
    let mfa_required = match w.now().auth.mfa_status(&s.user).await {
        Ok(st) => !st.password_alone_opens_pop3,
        Err(_) => return w.unavailable(Some(&s)),
    };
    let problems =
        match crate::assess_password(&w.now().config, &s.user, &f.new, mfa_required, true) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "web: the breached-password filter cannot be read");
                return w.unavailable(Some(&s));
            }
        };
    if !problems.is_empty() {
        w.account_event(peer, &s.user, "password_refused", None);
        return refuse(format!("it is {}.", policy::describe(&problems)));
    }
    match w.now().auth.set_password(&s.user, f.new.as_bytes()).await {
        Ok(true) => {
            w.account_event(peer, &s.user, "password_changed", None);
            // Everyone else signed in with the old password is out; this session
            // carries on with the account's new epoch.
            w.sessions.remove_user(&s.user, &token);
            let Ok(Some(epoch)) = w.epoch(&s.user).await else {
                return w.unavailable(Some(&s));
            };
            w.sessions.update(&token, |s| {
                s.epoch = epoch;
                s.flash = Some("Password changed. Mail apps that use it need the new one; app passwords keep working.".into());
            });
            redirect("/")
        }
        Ok(false) => redirect("/signin"),
        Err(AdminError::BadInput(why)) => refuse(why),
        Err(_) => w.unavailable(Some(&s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_posts_are_refused() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h), "curl sends neither header");
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h));
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            HeaderValue::from_static("mail.example.org:8443"),
        );
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://mail.example.org:8443"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://mail.example.org:8443"),
        );
        assert!(!same_origin(&h), "not over HTTPS");
    }

    #[test]
    fn token_comparison() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abc", "abd"));
        assert!(!tokens_match("abc", "abcd"));
        assert!(!tokens_match("", "a"));
    }

    #[test]
    fn app_password_fields_are_checked() {
        let form = |label: &str, days: &str, nets: &str| AppPasswordForm {
            csrf: String::new(),
            label: label.into(),
            expires_days: days.into(),
            networks: nets.into(),
            read_only: None,
        };
        let (label, exp, nets) =
            app_password_fields(&form(" phone ", "2", "192.0.2.7, 2001:db8::/48"), 1000).unwrap();
        assert_eq!(label, "phone");
        assert_eq!(exp, Some(1000 + 2 * 86_400_000));
        assert_eq!(nets.as_deref(), Some("192.0.2.7/32,2001:db8::/48"));
        assert!(app_password_fields(&form("", "", ""), 0).is_err());
        assert!(app_password_fields(&form("x", "0", ""), 0).is_err());
        assert!(app_password_fields(&form("x", "many", ""), 0).is_err());
        assert!(app_password_fields(&form("x", "", "not-a-net"), 0).is_err());
        assert!(app_password_fields(&form(&"x".repeat(65), "", ""), 0).is_err());
    }

    #[test]
    fn the_qr_code_is_inline_svg() {
        let svg =
            qr_svg("otpauth://totp/Poplar:alice?secret=JBSWY3DPEHPK3PXP&issuer=Poplar").unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{svg}"
        );
        assert!(!svg.contains("<script"));
    }
}
