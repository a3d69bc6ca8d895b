//! JWT access tokens (RFC 9068, and the plain `JWT` type many providers still use)
//! checked locally against the issuer's published keys.
//!
//! The security choices, each against a known attack on JWT libraries:
//! - the header's `alg` is read by hand first: `none` and every HMAC algorithm are
//!   refused before any key is looked at (HMAC with a public key as the secret is the
//!   classic key-confusion forgery);
//! - each JWK is pinned to the algorithms its own `alg` (or, without one, its key type
//!   and curve) allows, intersected with the issuer's configured list;
//! - `exp`, `iss` and `aud` are required claims; `nbf` is checked when present.

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use auth::TokenError;

/// One usable signing key.
pub(crate) struct SigningKey {
    pub kid: Option<String>,
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// The algorithm names as configured, as jsonwebtoken's type.
pub(crate) fn parse_algorithms(names: &[String]) -> Vec<Algorithm> {
    names
        .iter()
        .filter_map(|n| match n.as_str() {
            "RS256" => Some(Algorithm::RS256),
            "PS256" => Some(Algorithm::PS256),
            "ES256" => Some(Algorithm::ES256),
            "EdDSA" => Some(Algorithm::EdDSA),
            _ => None,
        })
        .collect()
}

/// The usable signing keys of a JWKS document; keys of other types or uses are
/// skipped (a JWKS may hold encryption keys, or types this server does not verify).
pub(crate) fn parse_jwks(doc: &Value, allowed: &[Algorithm]) -> Result<Vec<SigningKey>, String> {
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err("no \"keys\" array".into());
    };
    let mut out = Vec::new();
    for raw in keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let family: Vec<Algorithm> = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => vec![Algorithm::RS256, Algorithm::PS256],
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                vec![Algorithm::ES256]
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                vec![Algorithm::EdDSA]
            }
            // Symmetric (`oct`) keys are never accepted: a JWKS is public.
            _ => continue,
        };
        let pinned: Vec<Algorithm> = match jwk.common.key_algorithm {
            Some(alg) => match key_algorithm(alg) {
                Some(alg) if family.contains(&alg) => vec![alg],
                _ => continue,
            },
            None => family,
        };
        let algorithms: Vec<Algorithm> =
            pinned.into_iter().filter(|a| allowed.contains(a)).collect();
        if algorithms.is_empty() {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        out.push(SigningKey {
            kid: jwk.common.key_id.clone(),
            key,
            algorithms,
        });
    }
    Ok(out)
}

fn key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    match alg {
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::PS256 => Some(Algorithm::PS256),
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
        _ => None,
    }
}

/// What the unverified header and payload say, enough to pick issuer and key.
pub(crate) struct Unverified {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub iss: Option<String>,
}

/// Whether `token` has the shape of a JWS compact serialization (three base64url
/// parts, the first a JSON object); anything else is treated as an opaque token.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    b64(header).is_some_and(|h| h.first() == Some(&b'{'))
}

fn b64(part: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()
}

/// Reads the header and the `iss` claim without trusting them.
pub(crate) fn inspect(token: &str) -> Result<Unverified, TokenError> {
    let mut parts = token.split('.');
    let header = parts.next().and_then(b64).ok_or(TokenError::Malformed)?;
    let payload = parts.next().and_then(b64).ok_or(TokenError::Malformed)?;
    let header: Value = serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
    let payload: Value = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed)?;
    // Refused by name, before anything else: unsigned tokens and HMAC (a shared
    // secret has no place in a public JWKS; with a public key as the "secret" it is
    // the key-confusion forgery).
    if alg.eq_ignore_ascii_case("none") || alg.to_ascii_uppercase().starts_with("HS") {
        return Err(TokenError::Algorithm);
    }
    let alg = match alg {
        "RS256" => Algorithm::RS256,
        "PS256" => Algorithm::PS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        _ => return Err(TokenError::Algorithm),
    };
    // RFC 9068 section 4: `at+jwt` (or its long form); many providers (Entra ID,
    // Keycloak) still send `JWT`.
    if let Some(typ) = header.get("typ") {
        let typ = typ
            .as_str()
            .ok_or(TokenError::Malformed)?
            .to_ascii_lowercase();
        if !matches!(typ.as_str(), "jwt" | "at+jwt" | "application/at+jwt") {
            return Err(TokenError::Malformed);
        }
    }
    // A token that carries its own key or a key URL is not trusted for it.
    if header.get("jwk").is_some() || header.get("jku").is_some() || header.get("x5u").is_some() {
        return Err(TokenError::Algorithm);
    }
    Ok(Unverified {
        alg,
        kid: header.get("kid").and_then(Value::as_str).map(String::from),
        iss: payload.get("iss").and_then(Value::as_str).map(String::from),
    })
}

/// Verifies the signature with `key` and the registered claims.
pub(crate) fn verify(
    token: &str,
    key: &SigningKey,
    alg: Algorithm,
    issuer: &str,
    audience: &[String],
    leeway: u64,
) -> Result<serde_json::Map<String, Value>, TokenError> {
    if !key.algorithms.contains(&alg) {
        return Err(TokenError::Algorithm);
    }
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.set_issuer(&[issuer]);
    validation.set_audience(audience);
    validation.leeway = leeway;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    use jsonwebtoken::errors::ErrorKind as K;
    match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            K::InvalidSignature => TokenError::Signature,
            K::ExpiredSignature => TokenError::Expired,
            K::ImmatureSignature => TokenError::NotYetValid,
            K::InvalidIssuer => TokenError::Issuer,
            K::InvalidAudience => TokenError::Audience,
            K::InvalidAlgorithm | K::MissingAlgorithm | K::InvalidAlgorithmName => {
                TokenError::Algorithm
            }
            _ => TokenError::Malformed,
        }),
    }
}

/// The token's scopes: `scope` (space-separated, RFC 9068 and RFC 7662) or `scp`
/// (Entra ID: a string or a list).
pub(crate) fn scopes(claims: &serde_json::Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_whitespace().map(String::from)),
            Some(Value::Array(a)) => {
                out.extend(a.iter().filter_map(Value::as_str).map(String::from))
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    }

    #[test]
    fn refuses_none_and_hmac_by_name() {
        for alg in ["none", "NONE", "HS256", "hs512"] {
            let t = format!("{}.{}.", enc(&format!("{{\"alg\":\"{alg}\"}}")), enc("{}"));
            assert!(looks_like_jwt(&t));
            assert!(matches!(inspect(&t), Err(TokenError::Algorithm)), "{alg}");
        }
        let t = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"RS256","typ":"at+jwt","kid":"k"}"#),
            enc(r#"{"iss":"https://i"}"#)
        );
        let u = inspect(&t).unwrap();
        assert_eq!(
            (u.kid.as_deref(), u.iss.as_deref()),
            (Some("k"), Some("https://i"))
        );
        let t = format!(
            "{}.{}.sig",
            enc(r#"{"alg":"RS256","typ":"id+jwt"}"#),
            enc("{}")
        );
        assert!(matches!(inspect(&t), Err(TokenError::Malformed)));
        assert!(!looks_like_jwt("opaque-token"));
        assert!(!looks_like_jwt("a.b"));
    }

    #[test]
    fn jwks_pins_algorithms_and_skips_symmetric_keys() {
        let doc = serde_json::json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-256", "kid": "ec", "use": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "weird"}
        ]});
        let keys = parse_jwks(&doc, &[Algorithm::ES256, Algorithm::RS256]).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ec"));
        assert_eq!(keys[0].algorithms, vec![Algorithm::ES256]);
        assert!(parse_jwks(&doc, &[Algorithm::RS256]).unwrap().is_empty());
    }

    #[test]
    fn scopes_from_scope_and_scp() {
        let c = serde_json::json!({"scope": "a b", "scp": ["c"]});
        assert_eq!(scopes(c.as_object().unwrap()), vec!["a", "b", "c"]);
    }
}
