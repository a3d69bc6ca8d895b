//! OAUTHBEARER/XOAUTH2 sign-in decisions with a stand-in [`TokenVerifier`] (the real one,
//! in the `oauth` crate, needs the network; tests/test_oauth.py drives it against a real
//! OpenID provider). The guard applies to token failures as to passwords.

use std::net::IpAddr;
use std::sync::Arc;

use auth::defence::{LockoutPolicy, ManualClock};
use auth::{
    Argon2Params, AuthFailure, Authenticator, Reason, TokenClaims, TokenError, TokenFuture,
    TokenVerifier, UsernamePolicy,
};
use directory::{Directory as _, SqliteDirectory};

const SMALL: Argon2Params = Argon2Params {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

/// Tokens are `user:<name>` (valid, for that user) or `err:<kind>`.
struct Fake;

impl TokenVerifier for Fake {
    fn verify<'a>(&'a self, token: &'a str) -> TokenFuture<'a> {
        Box::pin(async move {
            if let Some(user) = token.strip_prefix("user:") {
                return Ok(TokenClaims {
                    user: user.to_owned(),
                    issuer: "fake".into(),
                });
            }
            Err(match token {
                "err:expired" => TokenError::Expired,
                "err:audience" => TokenError::Audience,
                "err:down" => TokenError::Unavailable,
                _ => TokenError::Signature,
            })
        })
    }
}

async fn fixture(policy: LockoutPolicy) -> (Authenticator<SqliteDirectory>, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = Arc::new(
        SqliteDirectory::open(&tmp.path().join("poplar.db"))
            .await
            .unwrap(),
    );
    let names = UsernamePolicy {
        lowercase: true,
        default_domain: None,
    };
    let auth = Authenticator::new(dir.clone(), names, SMALL, 2)
        .unwrap()
        .with_defence(
            policy,
            Arc::new(ManualClock::new(1_800_000_000_000)),
            b"server key",
        )
        .with_token_verifier(Arc::new(Fake));
    for user in ["alice@example.org", "bob@example.org", "off@example.org"] {
        auth.add_user(user, b"right password", format!("/m/{user}"))
            .await
            .unwrap();
    }
    dir.set_enabled("off@example.org", false).await.unwrap();
    (auth, tmp)
}

fn ip(n: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, n])
}

#[tokio::test]
async fn token_claims_decide_the_account() {
    let (auth, _tmp) = fixture(LockoutPolicy::default()).await;
    let ok = auth
        .verify_token(Some("Alice@Example.org"), b"user:alice@example.org", ip(1))
        .await
        .unwrap();
    assert_eq!(ok.user, "alice@example.org");
    // Without a named user, the token's user signs in.
    let ok = auth
        .verify_token(None, b"user:bob@example.org", ip(2))
        .await
        .unwrap();
    assert_eq!(ok.user, "bob@example.org");
    let cases: [(Option<&str>, &[u8], AuthFailure); 7] = [
        (
            Some("bob@example.org"),
            b"user:alice@example.org",
            AuthFailure::Rejected(Reason::TokenUserMismatch),
        ),
        (
            None,
            b"user:nobody@example.org",
            AuthFailure::Rejected(Reason::UnknownUser),
        ),
        (
            None,
            b"user:off@example.org",
            AuthFailure::Rejected(Reason::Disabled),
        ),
        (
            None,
            b"err:expired",
            AuthFailure::Rejected(Reason::TokenExpired),
        ),
        (
            None,
            b"err:audience",
            AuthFailure::Rejected(Reason::TokenAudience),
        ),
        (None, b"\xff", AuthFailure::Rejected(Reason::TokenMalformed)),
        (None, b"err:down", AuthFailure::Unavailable),
    ];
    for (n, (authzid, token, expected)) in cases.into_iter().enumerate() {
        let got = auth.verify_token(authzid, token, ip(10 + n as u8)).await;
        assert_eq!(got, Err(expected), "case {n}");
    }
}

#[tokio::test]
async fn the_guard_throttles_token_failures() {
    let policy = LockoutPolicy {
        throttle_after: 2,
        ..LockoutPolicy::default()
    };
    let (auth, _tmp) = fixture(policy).await;
    // throttle_after failures pass unhindered; the one after them starts a wait.
    for n in 0..3 {
        let bad = format!("err:bad{n}");
        assert_eq!(
            auth.verify_token(Some("alice@example.org"), bad.as_bytes(), ip(1))
                .await,
            Err(AuthFailure::Rejected(Reason::TokenSignature))
        );
    }
    // Now even a good token is refused unchecked from this address.
    assert_eq!(
        auth.verify_token(Some("alice@example.org"), b"user:alice@example.org", ip(1))
            .await,
        Err(AuthFailure::Rejected(Reason::Throttled))
    );
}
