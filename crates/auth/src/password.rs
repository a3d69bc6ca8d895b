//! The one prepared form of a password (SASLprep, RFC 4013, as RFC 4616 §2 asks of
//! PLAIN and RFC 5802 §2.2 of SCRAM).
//!
//! Every mechanism and `poplar user passwd` pass the raw password through
//! [`prepare_password`] before hashing or verifying, so a stored hash never depends on
//! which path set it.

use stringprep::saslprep;
use zeroize::Zeroizing;

use crate::BadInput;

/// Longest prepared password, in bytes of UTF-8.
pub const MAX_PASSWORD_BYTES: usize = 4096;

/// Longest raw password worth preparing; soft hyphens and the like may shrink a raw
/// password, but work on absurd input is refused up front.
const MAX_RAW_PASSWORD_BYTES: usize = 4 * MAX_PASSWORD_BYTES;

/// Prepares a raw password: UTF-8, SASLprep (query rules, as the `stringprep` crate
/// gives them), non-empty, at most [`MAX_PASSWORD_BYTES`].
///
/// The result is zeroed on drop. Copies made inside the normalisation itself are not
/// under our control; they are short-lived heap buffers.
pub fn prepare_password(raw: &[u8]) -> Result<Zeroizing<String>, BadInput> {
    if raw.is_empty() {
        return Err(BadInput::Empty);
    }
    if raw.len() > MAX_RAW_PASSWORD_BYTES {
        return Err(BadInput::TooLong);
    }
    let text = std::str::from_utf8(raw).map_err(|_| BadInput::NotUtf8)?;
    // The stringprep error names the offending character; drop it, it is part of a secret.
    let prepared = Zeroizing::new(
        saslprep(text)
            .map_err(|_| BadInput::Prohibited)?
            .into_owned(),
    );
    if prepared.is_empty() {
        return Err(BadInput::Empty);
    }
    if prepared.len() > MAX_PASSWORD_BYTES {
        return Err(BadInput::TooLong);
    }
    Ok(prepared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(s: &str) -> Result<String, BadInput> {
        prepare_password(s.as_bytes()).map(|p| p.as_str().to_owned())
    }

    #[test]
    fn ascii_is_unchanged() {
        assert_eq!(prep("hunter2").unwrap(), "hunter2");
        assert_eq!(
            prep("pass word with spaces").unwrap(),
            "pass word with spaces"
        );
    }

    #[test]
    fn rfc4013_examples() {
        // RFC 4013 §3, the examples that are valid.
        assert_eq!(prep("I\u{00AD}X").unwrap(), "IX");
        assert_eq!(prep("user").unwrap(), "user");
        assert_eq!(prep("USER").unwrap(), "USER");
        assert_eq!(prep("\u{00AA}").unwrap(), "a");
        assert_eq!(prep("\u{2168}").unwrap(), "IX");
        // ...and the ones that are not.
        assert_eq!(prep("\u{0007}"), Err(BadInput::Prohibited));
        assert_eq!(prep("\u{0627}\u{0031}"), Err(BadInput::Prohibited));
    }

    #[test]
    fn special_spaces_and_soft_hyphens_match_their_saslprep_forms() {
        // U+00A0 maps to a plain space (RFC 3454 C.1.2 → SPACE).
        assert_eq!(
            prep("pass\u{00A0}word").unwrap(),
            prep("pass word").unwrap()
        );
        assert_eq!(
            prep("pass\u{00A0}word").unwrap(),
            stringprep::saslprep("pass\u{00A0}word").unwrap()
        );
        // U+00AD maps to nothing (RFC 3454 B.1).
        assert_eq!(prep("pass\u{00AD}word").unwrap(), prep("password").unwrap());
        assert_eq!(
            prep("pass\u{00AD}word").unwrap(),
            stringprep::saslprep("pass\u{00AD}word").unwrap()
        );
    }

    #[test]
    fn unicode_passwords() {
        assert_eq!(
            prep("pässwörd with spaces").unwrap(),
            "pässwörd with spaces"
        );
        // Decomposed and composed forms prepare to the same string.
        assert_eq!(prep("pa\u{0308}ss").unwrap(), prep("p\u{00E4}ss").unwrap());
    }

    #[test]
    fn refusals() {
        assert_eq!(prepare_password(b"").unwrap_err(), BadInput::Empty);
        assert_eq!(prep("\u{00AD}\u{2060}"), Err(BadInput::Empty));
        assert_eq!(
            prepare_password(b"\xff\xfe").unwrap_err(),
            BadInput::NotUtf8
        );
        assert_eq!(prep("a\0b"), Err(BadInput::Prohibited));
        assert_eq!(prep("tab\there"), Err(BadInput::Prohibited));
        assert_eq!(
            prep(&"a".repeat(MAX_PASSWORD_BYTES)).map(|p| p.len()),
            Ok(MAX_PASSWORD_BYTES)
        );
        assert_eq!(
            prep(&"a".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(BadInput::TooLong)
        );
        assert_eq!(prep(&"a".repeat(100_000)), Err(BadInput::TooLong));
        // Raw length above the cap but short after mapping: still within limits.
        let padded = format!("{}{}", "\u{00AD}".repeat(2400), "secret");
        assert_eq!(prep(&padded).unwrap(), "secret");
    }

    #[test]
    fn errors_do_not_echo_the_password() {
        let err = prep("secret\u{0007}").unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("secret"));
        assert!(!shown.contains("0007") && !shown.contains("\\u{7}"));
    }
}
