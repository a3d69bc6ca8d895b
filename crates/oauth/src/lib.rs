//! OAuth 2.0 bearer tokens for OAUTHBEARER (RFC 7628) and XOAUTH2: the
//! [`auth::TokenVerifier`] the server plugs into the one place that decides sign-in.
//!
//! - JWT access tokens (RFC 9068 `at+jwt`, or `JWT`) are verified locally against the
//!   issuer's JWKS, found by OpenID discovery (`/.well-known/openid-configuration`) or
//!   configured as a URL or a file (see `jwt.rs` for the algorithm rules).
//! - The JWKS is kept in memory, fetched again every `jwks_refresh_secs` (a
//!   background task, [`OAuthVerifier::refresh_all`]) and when a token names an
//!   unknown `kid` (at most once per `jwks_min_refresh_secs`). A `kid` still unknown
//!   after a successful fetch is refused ([`TokenError::UnknownKey`]: rotated out, or
//!   never the issuer's). When the issuer cannot be reached, or the fetch is rate
//!   limited, the keys already held keep working and a token that needs a key Poplar
//!   does not hold is [`TokenError::Unavailable`] (`-ERR [SYS/TEMP]`), not a refusal.
//! - Opaque tokens go to RFC 7662 introspection with the configured client
//!   credentials; an active answer is cached for `introspection_cache_secs`, never past
//!   the token's `exp`; `active: false` is a refusal.

#![forbid(unsafe_code)]

mod config;
mod introspect;
mod jwt;

use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::{TokenClaims, TokenError, TokenFuture, TokenVerifier};
use serde_json::Value;
use tokio::sync::Mutex;

pub use config::{IssuerConfig, OAuthConfig, SUPPORTED_ALGORITHMS};

/// Checks bearer tokens against the configured issuers.
pub struct OAuthVerifier {
    http: reqwest::Client,
    issuers: Vec<Issuer>,
    introspection_cache: introspect::Cache,
}

/// One configured issuer and what was learnt from it.
struct Issuer {
    config: IssuerConfig,
    algorithms: Vec<jsonwebtoken::Algorithm>,
    client_secret: Option<String>,
    state: Mutex<IssuerState>,
}

#[derive(Default)]
struct IssuerState {
    /// From discovery.
    jwks_uri: Option<String>,
    introspection_endpoint: Option<String>,
    keys: Vec<jwt::SigningKey>,
    /// The last successful JWKS fetch.
    fetched: Option<Instant>,
    /// The last attempt, and whether it failed.
    attempted: Option<Instant>,
    last_failed: bool,
}

/// Why a fetch failed (for the log; never holds a token).
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Http(String),
    #[error("{0}")]
    Document(String),
}

impl OAuthVerifier {
    /// A verifier for `config` (already validated). Reads client secret files now.
    pub fn new(config: &OAuthConfig) -> Result<Self, String> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.http_timeout_secs))
            .connect_timeout(Duration::from_secs(config.http_timeout_secs))
            // Never follow a redirect: a token or client secret must go only where the
            // configuration says.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Poplar/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("oauth: HTTP client: {e}"))?;
        let mut issuers = Vec::new();
        for c in &config.issuers {
            let client_secret = match (&c.client_secret, &c.client_secret_file) {
                (Some(s), _) => Some(s.clone()),
                (None, Some(path)) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| format!("oauth.issuers {}: client_secret_file: {e}", c.name))?
                        .trim()
                        .to_owned(),
                ),
                (None, None) => None,
            };
            issuers.push(Issuer {
                algorithms: jwt::parse_algorithms(&c.algorithms),
                config: c.clone(),
                client_secret,
                state: Mutex::new(IssuerState::default()),
            });
        }
        Ok(Self {
            http,
            issuers,
            introspection_cache: introspect::Cache::default(),
        })
    }

    /// Fetches every issuer's keys that are due (at start, then on a schedule). Errors
    /// are logged; the keys already held stay.
    pub async fn refresh_all(&self) {
        for issuer in &self.issuers {
            let mut state = issuer.state.lock().await;
            let due = state.fetched.is_none_or(|t| {
                t.elapsed() >= Duration::from_secs(issuer.config.jwks_refresh_secs)
            });
            if due && self.may_fetch(issuer, &state) {
                self.refresh(issuer, &mut state).await;
            }
        }
    }

    /// The shortest refresh interval, for the background task's period.
    pub fn refresh_period(&self) -> Option<Duration> {
        self.issuers
            .iter()
            .map(|i| Duration::from_secs(i.config.jwks_refresh_secs.max(1)))
            .min()
    }

    fn may_fetch(&self, issuer: &Issuer, state: &IssuerState) -> bool {
        state
            .attempted
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(issuer.config.jwks_min_refresh_secs))
    }

    async fn refresh(&self, issuer: &Issuer, state: &mut IssuerState) {
        state.attempted = Some(Instant::now());
        match self.fetch_keys(issuer, state).await {
            Ok(keys) => {
                tracing::info!(issuer = %issuer.config.name, keys = keys.len(), "OAuth signing keys fetched");
                state.keys = keys;
                state.fetched = Some(Instant::now());
                state.last_failed = false;
            }
            Err(e) => {
                tracing::warn!(issuer = %issuer.config.name, error = %e, "could not fetch OAuth signing keys; keeping the cached ones");
                state.last_failed = true;
            }
        }
    }

    async fn fetch_keys(
        &self,
        issuer: &Issuer,
        state: &mut IssuerState,
    ) -> Result<Vec<jwt::SigningKey>, FetchError> {
        let doc = if let Some(path) = &issuer.config.jwks_file {
            let text = tokio::fs::read_to_string(path)
                .await
                .map_err(|e| FetchError::Document(format!("{}: {e}", path.display())))?;
            serde_json::from_str(&text).map_err(|e| FetchError::Document(e.to_string()))?
        } else {
            let url = match &issuer.config.jwks_url {
                Some(url) => url.clone(),
                None => self.discover(issuer, state).await?,
            };
            self.get_json(&url).await?
        };
        jwt::parse_jwks(&doc, &issuer.algorithms).map_err(FetchError::Document)
    }

    /// OpenID discovery: the JWKS URI (and the introspection endpoint), checked to
    /// belong to the configured issuer.
    async fn discover(
        &self,
        issuer: &Issuer,
        state: &mut IssuerState,
    ) -> Result<String, FetchError> {
        if let Some(uri) = &state.jwks_uri {
            return Ok(uri.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.config.issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&url).await?;
        // OpenID Connect Discovery section 4.3: the document's issuer must be the one
        // asked for.
        if doc.get("issuer").and_then(Value::as_str) != Some(issuer.config.issuer.as_str()) {
            return Err(FetchError::Document(
                "discovery document names another issuer".into(),
            ));
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| FetchError::Document("discovery document has no jwks_uri".into()))?;
        config::check_url(jwks_uri).map_err(FetchError::Document)?;
        state.jwks_uri = Some(jwks_uri.to_owned());
        state.introspection_endpoint = doc
            .get("introspection_endpoint")
            .and_then(Value::as_str)
            .filter(|u| config::check_url(u).is_ok())
            .map(String::from);
        Ok(jwks_uri.to_owned())
    }

    async fn get_json(&self, url: &str) -> Result<Value, FetchError> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| FetchError::Http(e.without_url().to_string()))?;
        if !response.status().is_success() {
            return Err(FetchError::Http(format!(
                "{url}: HTTP {}",
                response.status()
            )));
        }
        response
            .json()
            .await
            .map_err(|e| FetchError::Document(e.without_url().to_string()))
    }

    async fn verify_jwt(&self, token: &str) -> Result<TokenClaims, TokenError> {
        let header = jwt::inspect(token)?;
        let iss = header.iss.as_deref().ok_or(TokenError::Malformed)?;
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.config.issuer == iss)
            .ok_or(TokenError::Issuer)?;
        if !issuer.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm);
        }
        let mut state = issuer.state.lock().await;
        let has_key = |state: &IssuerState| match &header.kid {
            Some(kid) => state.keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
            None => state
                .keys
                .iter()
                .any(|k| k.algorithms.contains(&header.alg)),
        };
        if !has_key(&state) {
            // A key Poplar has not seen: the issuer may have rotated one in. Within the
            // rate limit Poplar cannot know whether it did, so the token cannot be
            // checked now (try again later) rather than refused.
            if !self.may_fetch(issuer, &state) {
                return Err(TokenError::Unavailable);
            }
            self.refresh(issuer, &mut state).await;
            if !has_key(&state) {
                return Err(if state.last_failed || state.fetched.is_none() {
                    TokenError::Unavailable
                } else {
                    TokenError::UnknownKey
                });
            }
        }
        let candidates = state.keys.iter().filter(|k| match &header.kid {
            Some(kid) => k.kid.as_deref() == Some(kid),
            None => k.algorithms.contains(&header.alg),
        });
        let c = &issuer.config;
        let mut last = TokenError::Signature;
        for key in candidates {
            match jwt::verify(
                token,
                key,
                header.alg,
                &c.issuer,
                &c.audience,
                c.leeway_secs,
            ) {
                Ok(claims) => return claims_of(issuer, &claims),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// Scope and user checks shared by JWTs and introspection answers.
fn claims_of(
    issuer: &Issuer,
    claims: &serde_json::Map<String, Value>,
) -> Result<TokenClaims, TokenError> {
    let scopes = jwt::scopes(claims);
    if !issuer
        .config
        .required_scopes
        .iter()
        .all(|s| scopes.contains(s))
    {
        return Err(TokenError::Scope);
    }
    let user = claims
        .get(&issuer.config.user_claim)
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or(TokenError::NoUser)?;
    // An address the provider has not verified names nobody: on many providers users
    // may type any address into their profile.
    if issuer.config.user_claim == "email"
        && claims.get("email_verified").and_then(Value::as_bool) != Some(true)
    {
        return Err(TokenError::NoUser);
    }
    Ok(TokenClaims {
        user: user.to_owned(),
        issuer: issuer.config.name.clone(),
    })
}

impl TokenVerifier for OAuthVerifier {
    fn verify<'a>(&'a self, token: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            if jwt::looks_like_jwt(token) {
                self.verify_jwt(token).await
            } else {
                self.introspect(token).await
            }
        })
    }
}

/// Starts the scheduled JWKS refresh: once now, then every
/// [`OAuthVerifier::refresh_period`], until `stop` resolves.
pub fn spawn_refresher(
    verifier: Arc<OAuthVerifier>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let Some(period) = verifier.refresh_period() else {
        return;
    };
    tokio::spawn(async move {
        let run = async {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                verifier.refresh_all().await;
            }
        };
        tokio::select! {
            () = run => {}
            () = stop => {}
        }
    });
}
