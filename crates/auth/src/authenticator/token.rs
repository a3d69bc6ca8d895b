//! OAUTHBEARER and XOAUTH2 (RFC 7628): sign-in with an OAuth 2.0 bearer token.
//!
//! Checking the token itself (signature, issuer, audience, lifetime, scope, or
//! introspection) needs the network, so it sits behind [`TokenVerifier`], which the
//! server implements (the `oauth` crate); this file decides what the verified claims
//! mean for the account, under the same guard (throttling, lockout, bans, networks)
//! as every other mechanism.

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::pin::Pin;

use directory::Directory;

use super::{AuthFailure, Authenticator, Identity, Reason};

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The user name taken from the issuer's configured claim (`email`,
    /// `preferred_username`, `upn`, `sub`...), not yet canonical.
    pub user: String,
    /// The configured name of the issuer that vouched for the token.
    pub issuer: String,
}

/// Why a token was not accepted. Everything but [`TokenError::Unavailable`] is a
/// refusal (`-ERR [AUTH]` after the RFC 7628 error step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT nor an opaque token the configuration can introspect, or a JWT with
    /// missing or malformed claims, or an unacceptable `typ`.
    #[error("malformed token")]
    Malformed,
    /// `alg: none`, an HMAC algorithm, or an algorithm the signing key does not allow.
    #[error("algorithm not allowed")]
    Algorithm,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// The `kid` is not in the issuer's JWKS, even after a fresh fetch (a key rotated
    /// out, or never the issuer's).
    #[error("unknown signing key")]
    UnknownKey,
    /// `exp` has passed (beyond the leeway).
    #[error("expired")]
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    #[error("not yet valid")]
    NotYetValid,
    /// No configured issuer has this `iss`.
    #[error("unknown issuer")]
    Issuer,
    /// The token is not meant for this server's audience.
    #[error("wrong audience")]
    Audience,
    /// A required scope is missing.
    #[error("missing scope")]
    Scope,
    /// Introspection says `active: false` (revoked or expired at the issuer).
    #[error("inactive")]
    Inactive,
    /// The configured user claim is absent.
    #[error("no user claim")]
    NoUser,
    /// The token cannot be checked now (issuer unreachable and no usable cached key).
    #[error("cannot be checked now")]
    Unavailable,
}

impl TokenError {
    /// The failure the server reports.
    pub fn failure(self) -> AuthFailure {
        let reason = match self {
            TokenError::Malformed => Reason::TokenMalformed,
            TokenError::Algorithm => Reason::TokenAlgorithm,
            TokenError::Signature => Reason::TokenSignature,
            TokenError::UnknownKey => Reason::TokenUnknownKey,
            TokenError::Expired => Reason::TokenExpired,
            TokenError::NotYetValid => Reason::TokenNotYetValid,
            TokenError::Issuer => Reason::TokenIssuer,
            TokenError::Audience => Reason::TokenAudience,
            TokenError::Scope => Reason::TokenScope,
            TokenError::Inactive => Reason::TokenInactive,
            TokenError::NoUser => Reason::TokenNoUser,
            TokenError::Unavailable => return AuthFailure::Unavailable,
        };
        AuthFailure::Rejected(reason)
    }
}

/// A boxed future, so [`TokenVerifier`] can be used as a trait object.
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<TokenClaims, TokenError>> + Send + 'a>>;

/// Checks a bearer token: the seam between the sign-in decision and the network
/// (JWKS, OpenID discovery, RFC 7662 introspection).
pub trait TokenVerifier: Send + Sync {
    /// Verifies `token` and returns its claims.
    fn verify<'a>(&'a self, token: &'a str) -> TokenFuture<'a>;
}

impl<D: Directory> Authenticator<D> {
    /// OAUTHBEARER and XOAUTH2: checks `token` and that the user it names is
    /// `authzid` (when the client named one) and an enabled account, under the
    /// sign-in defence. A token proves a sign-in at the identity provider (with its
    /// own second factor), so two-factor accounts may use it as they use app passwords.
    pub async fn verify_token(
        &self,
        authzid: Option<&str>,
        token: &[u8],
        source: IpAddr,
    ) -> Result<Identity, AuthFailure> {
        // Failures and successes are counted under the user the client named; a client
        // that named none is counted under the token's user once the token is verified
        // (a token that fails verification: under the empty name, i.e. per address).
        // Without a name, the address alone is checked first (bans, and throttling of
        // anonymous failures), so a banned or throttled client costs no network call to
        // the identity provider.
        if authzid.is_none() {
            self.guard.check("", source).await?;
        }
        let early = match authzid {
            Some(_) => None,
            None => Some(self.token_claims(token).await),
        };
        let name = match (authzid, &early) {
            (Some(named), _) => self.guard_name(named),
            (None, Some(Ok(claims))) => self.guard_name(&claims.user),
            (None, _) => String::new(),
        };
        // A bearer token cannot be guessed: it is judged even while the account is
        // locked for unfamiliar networks (a wrong one counts toward its source's ban).
        let ticket = self.guard.admit_past_lock(&name, source).await?;
        let claims = match early {
            Some(claims) => claims,
            None => self.token_claims(token).await,
        };
        let result = match claims {
            Ok(claims) => self.token_account(authzid, claims).await,
            Err(e) => Err(e),
        };
        // A refused token is usually sent again as it is (a client retrying): count it
        // once, as a repeated wrong password is.
        let attempt = matches!(result, Err(AuthFailure::Rejected(_)))
            .then(|| self.guard.attempt_hash(&name, token));
        self.guard.settle(ticket, result, attempt).await
    }

    /// The verified claims of `token`.
    async fn token_claims(&self, token: &[u8]) -> Result<TokenClaims, AuthFailure> {
        let Some(verifier) = &self.tokens else {
            return Err(AuthFailure::Unavailable);
        };
        let Ok(token) = std::str::from_utf8(token) else {
            return Err(AuthFailure::Rejected(Reason::TokenMalformed));
        };
        verifier.verify(token).await.map_err(TokenError::failure)
    }

    /// What verified claims mean for the account.
    async fn token_account(
        &self,
        authzid: Option<&str>,
        claims: TokenClaims,
    ) -> Result<Identity, AuthFailure> {
        let Ok(user) = self.policy.canonical(&claims.user) else {
            return Err(AuthFailure::Rejected(Reason::TokenNoUser));
        };
        // The provider's identity is the whole proof here: it must name the account as
        // it is, up to letter case (when user names are lower-cased). No Unicode
        // folding, no default domain appended: `ａｌｉｃｅ` or a bare `alice` at the
        // provider is not `alice@example.org` here.
        let as_given = if self.policy.lowercase {
            claims.user.to_lowercase()
        } else {
            claims.user.clone()
        };
        if user != as_given {
            return Err(AuthFailure::Rejected(Reason::TokenNoUser));
        }
        if let Some(named) = authzid
            && self.policy.canonical(named).ok().as_deref() != Some(user.as_str())
        {
            return Err(AuthFailure::Rejected(Reason::TokenUserMismatch));
        }
        let Some(record) = self.lookup(&user).await? else {
            return Err(AuthFailure::Rejected(Reason::UnknownUser));
        };
        if !record.enabled {
            return Err(AuthFailure::Rejected(Reason::Disabled));
        }
        Ok(Identity {
            user: record.name,
            maildir: PathBuf::from(record.maildir),
            allowed_networks: record.allowed_networks,
            new_network: false,
            read_only: false,
        })
    }
}
