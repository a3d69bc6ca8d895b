//! The `[oauth]` configuration section: one `[[oauth.issuers]]` table per trusted
//! identity provider, each with its own audience, scopes and user claim.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[oauth]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    /// Every HTTP request (discovery, JWKS, introspection) gives up after this long.
    pub http_timeout_secs: u64,
    /// The trusted issuers. None: OAUTHBEARER and XOAUTH2 are not offered.
    pub issuers: Vec<IssuerConfig>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            http_timeout_secs: 5,
            issuers: Vec::new(),
        }
    }
}

/// `[[oauth.issuers]]`: one identity provider.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// A short name for logs and the audit trail.
    pub name: String,
    /// The exact `iss` of its tokens (and, with discovery, the base of
    /// `/.well-known/openid-configuration`).
    pub issuer: String,
    /// Accepted `aud` values: a token must name at least one.
    pub audience: Vec<String>,
    /// Scopes every token must carry (`scope` or `scp`).
    #[serde(default)]
    pub required_scopes: Vec<String>,
    /// The claim that names the user: `email`, `preferred_username`, `upn`, `sub`...
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Signing keys from this JWKS URL instead of OpenID discovery.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Signing keys from this JWKS file instead of the network (read on each refresh).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// The RFC 7662 introspection endpoint for opaque tokens; with `client_id` set and
    /// no URL, discovery's `introspection_endpoint` is used.
    #[serde(default)]
    pub introspection_url: Option<String>,
    /// Client credentials Poplar introspects with (HTTP Basic, RFC 7662 section 2.1).
    #[serde(default)]
    pub client_id: Option<String>,
    /// The client secret, inline. `poplar config check` prints it redacted.
    #[serde(default, serialize_with = "redacted")]
    pub client_secret: Option<String>,
    /// The client secret, from a file (preferred: keeps it out of the config file).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Signature algorithms accepted from this issuer (subset of RS256, PS256, ES256,
    /// EdDSA); each key is further pinned to its own `alg` or key type.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// The JWKS is fetched again after this long.
    #[serde(default = "default_refresh")]
    pub jwks_refresh_secs: u64,
    /// At most one fetch in this long when tokens name an unknown `kid` (so forged
    /// `kid`s cannot make Poplar hammer the issuer).
    #[serde(default = "default_min_refresh")]
    pub jwks_min_refresh_secs: u64,
    /// How long an active introspection answer is reused (never past the token's
    /// `exp`).
    #[serde(default = "default_introspection_cache")]
    pub introspection_cache_secs: u64,
}

fn redacted<S: serde::Serializer>(secret: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(_) => s.serialize_str("(redacted)"),
        None => s.serialize_none(),
    }
}

fn default_user_claim() -> String {
    "email".into()
}
fn default_algorithms() -> Vec<String> {
    ["RS256", "PS256", "ES256", "EdDSA"]
        .map(String::from)
        .to_vec()
}
fn default_leeway() -> u64 {
    30
}
fn default_refresh() -> u64 {
    3600
}
fn default_min_refresh() -> u64 {
    30
}
fn default_introspection_cache() -> u64 {
    60
}

/// The algorithms Poplar can verify.
pub const SUPPORTED_ALGORITHMS: [&str; 4] = ["RS256", "PS256", "ES256", "EdDSA"];

impl OAuthConfig {
    /// Checks what `poplar config check` can check without the network.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for (i, iss) in self.issuers.iter().enumerate() {
            let at = format!("oauth.issuers[{i}]");
            if iss.name.is_empty() || !names.insert(iss.name.as_str()) {
                return Err(format!("{at}.name must be set and unique"));
            }
            check_url(&iss.issuer).map_err(|e| format!("{at}.issuer: {e}"))?;
            if iss.audience.is_empty() || iss.audience.iter().any(String::is_empty) {
                return Err(format!(
                    "{at}.audience must name at least one audience (this server's API identifier)"
                ));
            }
            if iss.user_claim.is_empty() {
                return Err(format!("{at}.user_claim must not be empty"));
            }
            if let Some(url) = &iss.jwks_url {
                check_url(url).map_err(|e| format!("{at}.jwks_url: {e}"))?;
            }
            if iss.jwks_url.is_some() && iss.jwks_file.is_some() {
                return Err(format!("{at}: set jwks_url or jwks_file, not both"));
            }
            if let Some(url) = &iss.introspection_url {
                check_url(url).map_err(|e| format!("{at}.introspection_url: {e}"))?;
            }
            if iss.introspection_url.is_some() && iss.client_id.is_none() {
                return Err(format!("{at}: introspection needs client_id"));
            }
            if iss.client_id.is_some()
                && iss.client_secret.is_none() == iss.client_secret_file.is_none()
            {
                return Err(format!(
                    "{at}: client_id needs exactly one of client_secret, client_secret_file"
                ));
            }
            if iss.algorithms.is_empty() {
                return Err(format!("{at}.algorithms must not be empty"));
            }
            for alg in &iss.algorithms {
                if !SUPPORTED_ALGORITHMS.contains(&alg.as_str()) {
                    return Err(format!(
                        "{at}.algorithms: {alg:?} is not supported (RS256, PS256, ES256, EdDSA; never none or HMAC)"
                    ));
                }
            }
            // A local file may be read again at once; a URL must not be fetched on every
            // unknown key id a client makes up.
            if iss.jwks_min_refresh_secs == 0 && iss.jwks_file.is_none() {
                return Err(format!(
                    "{at}.jwks_min_refresh_secs must be at least 1 unless the keys come from jwks_file"
                ));
            }
            if iss.jwks_min_refresh_secs > iss.jwks_refresh_secs {
                return Err(format!(
                    "{at}: jwks_min_refresh_secs must not exceed jwks_refresh_secs"
                ));
            }
        }
        // An opaque token says nothing about its issuer: with two introspecting
        // issuers, one would be shown the other's users' tokens.
        if self
            .issuers
            .iter()
            .filter(|i| i.client_id.is_some())
            .count()
            > 1
        {
            return Err(
                "oauth: at most one issuer may have client_id (introspection of opaque tokens); an opaque token would otherwise be sent to issuers that did not issue it".into(),
            );
        }
        if self.http_timeout_secs == 0 {
            return Err("oauth.http_timeout_secs must be positive".into());
        }
        Ok(())
    }
}

/// HTTPS, or plain HTTP to a loopback address (a provider on the same host).
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Err(format!("{url:?} is not a URL"));
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&parsed) => Ok(()),
        _ => Err(format!(
            "{url:?} must use https (plain http only to a loopback address)"
        )),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
