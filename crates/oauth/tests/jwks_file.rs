//! The verifier against a JWKS file and tokens signed here (no network): every JWT rule,
//! and key rotation by rewriting the file. tests/test_oauth.py runs the same rules
//! against a real OpenID provider over HTTP.

use std::time::{SystemTime, UNIX_EPOCH};

use auth::{TokenError, TokenVerifier};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth::{OAuthConfig, OAuthVerifier};
use serde_json::{Value, json};

const ISS: &str = "https://idp.example.org/realms/mail";

struct Key {
    kid: String,
    pkcs8: Vec<u8>,
    jwk: Value,
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn ec_key(kid: &str) -> Key {
    let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new())
        .unwrap()
        .as_ref()
        .to_vec();
    let pair = EcdsaKeyPair::from_pkcs8(alg, &pkcs8).unwrap();
    let point = pair.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                     "x": b64url(&point[1..33]), "y": b64url(&point[33..65])});
    Key {
        kid: kid.into(),
        pkcs8,
        jwk,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims() -> Value {
    json!({"iss": ISS, "aud": "poplar", "exp": now() + 300, "iat": now(),
           "scope": "openid pop3", "email": "alice@example.org", "email_verified": true})
}

fn sign(key: &Key, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&key.pkcs8)).unwrap()
}

/// `claims()` with some changed; a null removes the claim.
fn with(changes: Value) -> Value {
    let mut c = claims();
    for (k, v) in changes.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn write_jwks(path: &std::path::Path, keys: &[&Key]) {
    let doc = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
    std::fs::write(path, doc.to_string()).unwrap();
}

fn verifier(jwks: &std::path::Path) -> OAuthVerifier {
    let toml = format!(
        "[[issuers]]\nname = \"file\"\nissuer = \"{ISS}\"\naudience = [\"poplar\"]\n\
         required_scopes = [\"pop3\"]\nleeway_secs = 0\njwks_min_refresh_secs = 0\n\
         jwks_file = \"{}\"\n",
        jwks.display()
    );
    let config: OAuthConfig = toml::from_str(&toml).unwrap();
    OAuthVerifier::new(&config).unwrap()
}

fn header_part(json: Value) -> String {
    b64url(json.to_string().as_bytes())
}

#[tokio::test]
async fn jwt_rules_and_rotation_through_a_jwks_file() {
    let tmp = tempfile::tempdir().unwrap();
    let jwks = tmp.path().join("jwks.json");
    let k1 = ec_key("k1");
    write_jwks(&jwks, &[&k1]);
    let v = verifier(&jwks);

    let good = sign(&k1, &claims());
    let ok = v.verify(&good).await.unwrap();
    assert_eq!(
        (ok.user.as_str(), ok.issuer.as_str()),
        ("alice@example.org", "file")
    );

    let parts: Vec<&str> = good.split('.').collect();
    let (head, payload, signature) = (parts[0], parts[1], parts[2]);
    let mut flipped = signature.to_string();
    let swap = if &signature[5..6] == "A" { "B" } else { "A" };
    flipped.replace_range(5..6, swap);
    let none = format!("{}.{payload}.", header_part(json!({"alg": "none"})));
    // HMAC keyed with the public key: the key-confusion forgery.
    let hs256 = {
        let key = EncodingKey::from_secret(k1.jwk.to_string().as_bytes());
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims(), &key).unwrap()
    };
    let bad_typ = format!(
        "{}.{payload}.{signature}",
        header_part(json!({"alg": "ES256", "kid": "k1", "typ": "dpop+jwt"}))
    );
    let cases: Vec<(String, TokenError)> = vec![
        (
            sign(&k1, &with(json!({"exp": now() - 5}))),
            TokenError::Expired,
        ),
        (
            sign(&k1, &with(json!({"nbf": now() + 300}))),
            TokenError::NotYetValid,
        ),
        (
            sign(&k1, &with(json!({"aud": "other"}))),
            TokenError::Audience,
        ),
        (
            sign(&k1, &with(json!({"iss": "https://evil.example"}))),
            TokenError::Issuer,
        ),
        (
            sign(&k1, &with(json!({"scope": "openid"}))),
            TokenError::Scope,
        ),
        (sign(&k1, &with(json!({"email": null}))), TokenError::NoUser),
        (
            sign(&k1, &with(json!({"email_verified": false}))),
            TokenError::NoUser,
        ),
        (
            sign(&k1, &with(json!({"email_verified": null}))),
            TokenError::NoUser,
        ),
        (
            sign(&k1, &with(json!({"exp": null}))),
            TokenError::Malformed,
        ),
        (format!("{head}.{payload}.{flipped}"), TokenError::Signature),
        (none, TokenError::Algorithm),
        (hs256, TokenError::Algorithm),
        (bad_typ, TokenError::Malformed),
        // Opaque, and no issuer can introspect it.
        ("an-opaque-token".into(), TokenError::Malformed),
        (sign(&ec_key("k9"), &claims()), TokenError::UnknownKey),
    ];
    for (n, (token, expected)) in cases.iter().enumerate() {
        assert_eq!(v.verify(token).await, Err(*expected), "case {n}");
    }

    // Rotation: k2 in, k1 out, same verifier.
    let k2 = ec_key("k2");
    write_jwks(&jwks, &[&k2]);
    assert!(v.verify(&sign(&k2, &claims())).await.is_ok());
    assert_eq!(v.verify(&good).await, Err(TokenError::UnknownKey));
    // The source goes away: held keys still work, an unknown key cannot be checked.
    std::fs::remove_file(&jwks).unwrap();
    assert!(v.verify(&sign(&k2, &claims())).await.is_ok());
    assert_eq!(
        v.verify(&sign(&ec_key("k3"), &claims())).await,
        Err(TokenError::Unavailable)
    );
}
