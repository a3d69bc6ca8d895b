//! SASL PLAIN (RFC 4616) as carried by POP3 AUTH (RFC 5034).
//!
//! The message is `[authzid] NUL authcid NUL passwd`, UTF-8, base64 on the wire.
//! Preparation of the names and password (SASLprep) happens in the one place that
//! verifies credentials, so every mechanism prepares them the same way.
//!
//! When more mechanisms arrive (LOGIN, SCRAM, OAUTHBEARER) this module becomes the
//! `sasl` crate that DESIGN.md describes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::secret::Secret;

/// A decoded PLAIN message.
#[derive(Debug)]
pub struct PlainCredentials {
    /// The identity to act as; empty means the same as `authcid`.
    pub authzid: String,
    /// The identity whose password this is.
    pub authcid: String,
    /// The password.
    pub password: Secret,
}

/// Why a PLAIN response was refused before any credential check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainError {
    /// Not valid base64 (RFC 5034 section 4 requires `-ERR`).
    Base64,
    /// Not `authzid NUL authcid NUL passwd` in UTF-8.
    Malformed,
}

/// Decodes a base64 client response (`=` is the empty response of RFC 5034).
pub fn decode_response(text: &[u8]) -> Result<Zeroizing<Vec<u8>>, PlainError> {
    if text == b"=" {
        return Ok(Zeroizing::new(Vec::new()));
    }
    STANDARD
        .decode(text)
        .map(Zeroizing::new)
        .map_err(|_| PlainError::Base64)
}

/// Parses the decoded PLAIN message.
pub fn parse_plain(message: &[u8]) -> Result<PlainCredentials, PlainError> {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(PlainError::Malformed);
    };
    if authcid.is_empty() || password.contains(&0) {
        return Err(PlainError::Malformed);
    }
    let text = |b: &[u8]| {
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| PlainError::Malformed)
    };
    if std::str::from_utf8(password).is_err() {
        return Err(PlainError::Malformed);
    }
    Ok(PlainCredentials {
        authzid: text(authzid)?,
        authcid: text(authcid)?,
        password: Secret::new(password.to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_plain() {
        let raw = decode_response(b"AGFsaWNlAHBhc3Mgd29yZA==").unwrap();
        let c = parse_plain(&raw).unwrap();
        assert_eq!(c.authzid, "");
        assert_eq!(c.authcid, "alice");
        assert_eq!(c.password.expose(), b"pass word");
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode_response(b"!!!").unwrap_err(), PlainError::Base64);
        assert_eq!(parse_plain(b"alice").unwrap_err(), PlainError::Malformed);
        assert_eq!(parse_plain(b"\0\0pw").unwrap_err(), PlainError::Malformed);
        assert_eq!(
            parse_plain(b"\0a\0p\0w").unwrap_err(),
            PlainError::Malformed
        );
        assert_eq!(
            parse_plain(b"\0a\0\xff").unwrap_err(),
            PlainError::Malformed
        );
        assert!(decode_response(b"=").unwrap().is_empty());
    }
}
