//! OAUTHBEARER (RFC 7628) and XOAUTH2 (Google's and Microsoft's format): the client
//! presents an OAuth 2.0 bearer token (RFC 6750). This module only parses; the token is
//! checked by the caller (the `auth` crate), and the RFC 7628 section 3.2.2 error step
//! (a JSON challenge, the client's `%x01`, then the failure) is run by the protocol.
//!
//! ```text
//! OAUTHBEARER:  gs2-header %x01 *(key "=" value %x01) %x01      (RFC 7628 section 3.1)
//!               gs2-header = ("n" / "y") "," ["a=" saslname] ","
//! XOAUTH2:      "user=" user %x01 "auth=Bearer " token %x01 %x01
//! ```

use crate::secret::Secret;
use crate::{Failure, Step};

const KVSEP: u8 = 0x01;

/// OAUTHBEARER's initial client response.
pub(crate) fn parse_oauthbearer(message: &[u8]) -> Step {
    // The client's answer to an error challenge is a lone %x01; as a first message it
    // carries no token.
    let Some((gs2, rest)) = split_once(message, KVSEP) else {
        return Step::Fail(Failure::Malformed);
    };
    let Ok(gs2) = std::str::from_utf8(gs2) else {
        return Step::Fail(Failure::Malformed);
    };
    let Some(authzid) = gs2_authzid(gs2) else {
        return Step::Fail(Failure::Malformed);
    };
    let Some(pairs) = kvpairs(rest) else {
        return Step::Fail(Failure::Malformed);
    };
    let mut token = None;
    for (key, value) in pairs {
        if key == b"auth" {
            // RFC 7628 section 3.1: exactly one auth value.
            if token.is_some() {
                return Step::Fail(Failure::Malformed);
            }
            token = Some(bearer_token(value));
        }
        // host, port, and any other key (RFC 7628 section 3.1 allows extensions) are
        // ignored.
    }
    match token {
        Some(Some(token)) => Step::VerifyToken {
            authzid,
            token: Secret::new(token.to_vec()),
        },
        _ => Step::Fail(Failure::Malformed),
    }
}

/// XOAUTH2's initial client response.
pub(crate) fn parse_xoauth2(message: &[u8]) -> Step {
    let Some(pairs) = kvpairs(message) else {
        return Step::Fail(Failure::Malformed);
    };
    let (mut user, mut token) = (None, None);
    for (key, value) in pairs {
        match key {
            b"user" if user.is_none() => user = std::str::from_utf8(value).ok(),
            b"auth" if token.is_none() => token = bearer_token(value),
            b"user" | b"auth" => return Step::Fail(Failure::Malformed),
            _ => {}
        }
    }
    match (user, token) {
        (Some(user), Some(token)) if !user.is_empty() => Step::VerifyToken {
            authzid: Some(user.to_owned()),
            token: Secret::new(token.to_vec()),
        },
        _ => Step::Fail(Failure::Malformed),
    }
}

fn split_once(data: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = data.iter().position(|&b| b == sep)?;
    Some((&data[..at], &data[at + 1..]))
}

/// `n,a=user,` or `y,,` (the client supports channel binding but the server offers
/// none, which is fine: OAUTHBEARER has no -PLUS form). `p=` is refused (RFC 7628
/// section 3.1: channel binding is not supported).
fn gs2_authzid(gs2: &str) -> Option<Option<String>> {
    let rest = gs2.strip_prefix("n,").or_else(|| gs2.strip_prefix("y,"))?;
    let authzid = rest.strip_suffix(',')?;
    if authzid.is_empty() {
        return Some(None);
    }
    let name = authzid.strip_prefix("a=")?;
    // saslname: "," and "=" are escaped as =2C and =3D (RFC 5801 section 4).
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            ',' => return None,
            '=' => match (chars.next(), chars.next()) {
                (Some('2'), Some('C')) => out.push(','),
                (Some('3'), Some('D')) => out.push('='),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    (!out.is_empty()).then_some(Some(out))
}

/// `key=value %x01 ... %x01`: every pair ends with %x01 and one more ends the list.
/// Keys are letters (RFC 7628 section 3.1); values printable text.
fn kvpairs(data: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let body = data.strip_suffix(&[KVSEP])?;
    if body.is_empty() {
        return Some(Vec::new());
    }
    let body = body.strip_suffix(&[KVSEP])?;
    body.split(|&b| b == KVSEP)
        .map(|pair| {
            let (key, value) = split_once(pair, b'=')?;
            let key_ok = !key.is_empty() && key.iter().all(u8::is_ascii_alphabetic);
            let value_ok = value
                .iter()
                .all(|&b| (0x20..0x7f).contains(&b) || matches!(b, b'\t' | b'\r' | b'\n'));
            (key_ok && value_ok).then_some((key, value))
        })
        .collect()
}

/// `Bearer <b64token>` (RFC 6750 section 2.1), the scheme case-insensitive.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = split_once(value, b' ')?;
    if !scheme.eq_ignore_ascii_case(b"Bearer") {
        return None;
    }
    let token = token.trim_ascii_start();
    let b64token = |b: &u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(b);
    (!token.is_empty() && token.iter().all(b64token)).then_some(token)
}

/// The error a failed OAUTHBEARER exchange reports (RFC 7628 section 3.2.2), as the
/// JSON the server sends as its challenge.
pub fn error_json(
    status: &str,
    scope: Option<&str>,
    openid_configuration: Option<&str>,
) -> Vec<u8> {
    let mut json = format!("{{\"status\":{}", quote(status));
    if let Some(scope) = scope {
        json.push_str(&format!(",\"scope\":{}", quote(scope)));
    }
    if let Some(url) = openid_configuration {
        json.push_str(&format!(",\"openid-configuration\":{}", quote(url)));
    }
    json.push('}');
    json.into_bytes()
}

/// The error a failed XOAUTH2 exchange reports, in the shape Gmail sends (clients
/// written for Gmail and Outlook parse `status` and `schemes`).
pub fn xoauth2_error_json(status: &str, scope: Option<&str>) -> Vec<u8> {
    let mut json = format!("{{\"status\":{},\"schemes\":\"Bearer\"", quote(status));
    if let Some(scope) = scope {
        json.push_str(&format!(",\"scope\":{}", quote(scope)));
    }
    json.push('}');
    json.into_bytes()
}

/// A JSON string literal (the values come from configuration, but are escaped all the
/// same).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_of(step: Step) -> (Option<String>, Vec<u8>) {
        match step {
            Step::VerifyToken { authzid, token } => (authzid, token.expose().to_vec()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oauthbearer_as_curl_and_thunderbird_send_it() {
        let msg = b"n,a=user@example.com,\x01host=server.example.com\x01port=995\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01";
        let (authzid, token) = token_of(parse_oauthbearer(msg));
        assert_eq!(authzid.as_deref(), Some("user@example.com"));
        assert_eq!(token, b"vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==");
        let (authzid, token) = token_of(parse_oauthbearer(b"n,,\x01auth=bearer a.b.c\x01\x01"));
        assert_eq!((authzid, token), (None, b"a.b.c".to_vec()));
        let (authzid, _) = token_of(parse_oauthbearer(b"y,a=x=2Cy=3D,\x01auth=Bearer t\x01\x01"));
        assert_eq!(authzid.as_deref(), Some("x,y="));
    }

    #[test]
    fn oauthbearer_refuses_malformed() {
        for bad in [
            &b"\x01"[..],
            b"n,,\x01\x01",
            b"p=tls-exporter,,\x01auth=Bearer t\x01\x01",
            b"n,a=u,\x01auth=Bearer t\x01",
            b"n,a=u,\x01auth=Basic dXNlcjpwdw==\x01\x01",
            b"n,a=u,\x01auth=Bearer \x01\x01",
            b"n,a=u,\x01auth=Bearer t\x01auth=Bearer u\x01\x01",
            b"n,a=u=2,\x01auth=Bearer t\x01\x01",
            b"n,a=,\x01auth=Bearer t\x01\x01",
            b"n,a=u,\x01auth=Bearer t t\x01\x01",
            b"n,a=u,\x01k\x01auth=Bearer t\x01\x01",
        ] {
            assert!(
                matches!(parse_oauthbearer(bad), Step::Fail(Failure::Malformed)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn xoauth2() {
        let (user, token) = token_of(parse_xoauth2(
            b"user=alice@example.com\x01auth=Bearer ya29.x-y_z\x01\x01",
        ));
        assert_eq!(user.as_deref(), Some("alice@example.com"));
        assert_eq!(token, b"ya29.x-y_z");
        for bad in [
            &b"user=alice\x01auth=Bearer t\x01"[..],
            b"auth=Bearer t\x01\x01",
            b"user=\x01auth=Bearer t\x01\x01",
            b"user=alice\x01\x01",
        ] {
            assert!(
                matches!(parse_xoauth2(bad), Step::Fail(Failure::Malformed)),
                "{bad:?}"
            );
        }
    }

    proptest::proptest! {
        /// Any bytes: no panic, and a token is only ever handed on when it is a
        /// well-formed b64token.
        #[test]
        fn parsers_survive_any_input(data in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            for step in [parse_oauthbearer(&data), parse_xoauth2(&data)] {
                if let Step::VerifyToken { token, .. } = step {
                    proptest::prop_assert!(bearer_token(&[b"Bearer ", token.expose()].concat()).is_some());
                }
            }
        }
    }

    #[test]
    fn error_json_shapes() {
        assert_eq!(
            error_json("invalid_token", Some("pop3"), Some("https://idp/.well-known/openid-configuration")),
            br#"{"status":"invalid_token","scope":"pop3","openid-configuration":"https://idp/.well-known/openid-configuration"}"#
        );
        assert_eq!(
            xoauth2_error_json("401", None),
            br#"{"status":"401","schemes":"Bearer"}"#
        );
        assert_eq!(quote("a\"b\\\n"), r#""a\"b\\\u000a""#);
    }
}
