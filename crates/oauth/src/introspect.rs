//! RFC 7662 token introspection for opaque access tokens, with a short cache of
//! positive answers keyed by the token's SHA-256 (the token itself is never kept).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use auth::{TokenClaims, TokenError};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::{Issuer, OAuthVerifier, claims_of};

/// Most answers kept at once; beyond it expired ones are dropped, then all.
const CACHE_CAP: usize = 10_000;

/// Active answers: token hash → (claims, valid until).
#[derive(Default)]
pub(crate) struct Cache(std::sync::Mutex<HashMap<[u8; 32], (TokenClaims, Instant)>>);

impl Cache {
    fn get(&self, key: &[u8; 32]) -> Option<TokenClaims> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(claims, _)| claims.clone())
    }

    fn put(&self, key: [u8; 32], claims: TokenClaims, until: Instant) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_CAP {
            let now = Instant::now();
            map.retain(|_, (_, u)| *u > now);
            if map.len() >= CACHE_CAP {
                map.clear();
            }
        }
        map.insert(key, (claims, until));
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl OAuthVerifier {
    /// An opaque token: asks each issuer that has introspection, in order, until one
    /// knows it.
    pub(crate) async fn introspect(&self, token: &str) -> Result<TokenClaims, TokenError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.introspection_cache.get(&key) {
            return Ok(claims);
        }
        let mut verdict = Err(TokenError::Malformed);
        for issuer in self.issuers.iter().filter(|i| i.config.client_id.is_some()) {
            match self.introspect_at(issuer, token).await {
                Ok((claims, until)) => {
                    self.introspection_cache.put(key, claims.clone(), until);
                    return Ok(claims);
                }
                // A refusal that names this issuer (scope, audience, user) is final.
                Err(
                    e @ (TokenError::Scope
                    | TokenError::Audience
                    | TokenError::NoUser
                    | TokenError::Expired),
                ) => {
                    return Err(e);
                }
                Err(TokenError::Unavailable) => verdict = Err(TokenError::Unavailable),
                Err(e) => {
                    if verdict != Err(TokenError::Unavailable) {
                        verdict = Err(e);
                    }
                }
            }
        }
        verdict
    }

    async fn introspect_at(
        &self,
        issuer: &Issuer,
        token: &str,
    ) -> Result<(TokenClaims, Instant), TokenError> {
        let c = &issuer.config;
        let endpoint = match &c.introspection_url {
            Some(url) => url.clone(),
            None => {
                let mut state = issuer.state.lock().await;
                if state.introspection_endpoint.is_none() {
                    // Discovery also names the introspection endpoint.
                    let _ = self.discover(issuer, &mut state).await;
                }
                state
                    .introspection_endpoint
                    .clone()
                    .ok_or(TokenError::Unavailable)?
            }
        };
        let client_id = c.client_id.as_deref().unwrap_or_default();
        let response = self
            .http
            .post(&endpoint)
            .basic_auth(client_id, issuer.client_secret.as_deref())
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(issuer = %c.name, error = %e.without_url(), "introspection failed");
                TokenError::Unavailable
            })?;
        if !response.status().is_success() {
            tracing::warn!(issuer = %c.name, status = %response.status(), "introspection refused");
            return Err(TokenError::Unavailable);
        }
        let answer: serde_json::Map<String, Value> =
            response.json().await.map_err(|_| TokenError::Unavailable)?;
        if answer.get("active") != Some(&Value::Bool(true)) {
            return Err(TokenError::Inactive);
        }
        if let Some(iss) = answer.get("iss").and_then(Value::as_str)
            && iss != c.issuer
        {
            return Err(TokenError::Issuer);
        }
        let now = now_secs();
        // NumericDate may carry a fraction (RFC 7519 section 2); a value that is no
        // number at all is refused rather than read as "never expires".
        let exp = match answer.get("exp") {
            None => None,
            Some(v) => match v.as_f64() {
                Some(x) if x >= 0.0 => Some(x.floor() as u64),
                _ => return Err(TokenError::Malformed),
            },
        };
        if exp.is_some_and(|exp| exp + c.leeway_secs < now) {
            return Err(TokenError::Expired);
        }
        // RFC 7662 makes `aud` optional; when the answer has one it must name us.
        match answer.get("aud") {
            None => {}
            Some(Value::String(a)) if c.audience.contains(a) => {}
            Some(Value::Array(list))
                if list
                    .iter()
                    .filter_map(Value::as_str)
                    .any(|a| c.audience.iter().any(|x| x == a)) => {}
            Some(_) => return Err(TokenError::Audience),
        }
        let claims = claims_of(issuer, &answer)?;
        let mut ttl = Duration::from_secs(c.introspection_cache_secs);
        if let Some(exp) = exp {
            ttl = ttl.min(Duration::from_secs(exp.saturating_sub(now)));
        }
        Ok((claims, Instant::now() + ttl))
    }
}
