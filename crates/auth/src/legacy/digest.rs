//! One-digest schemes of RFC 2307 and OpenLDAP, as Dovecot reads them: `{SHA}`,
//! `{SHA256}`, `{SHA512}` hold `H(password)`; `{SSHA}`, `{SSHA256}`, `{SSHA512}` hold
//! `H(password ‖ salt) ‖ salt`. SHA-1 is RFC 3174, SHA-2 FIPS 180-4.
//!
//! The value is base64 by default. Following Dovecot's `password_decode`, a `.HEX`,
//! `.B64` or `.BASE64` suffix on the scheme name forces an encoding, and an unsalted
//! value exactly twice the digest length is taken as hex. The normalized form is
//! `{SCHEME}` and padded standard base64.

use super::{Encoding, LegacyScheme, ParseError, Parsed, StoredHash, Work};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use subtle::ConstantTimeEq as _;

/// Base64 as other tools write it: padding optional, stray low bits tolerated.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

fn digest_len(scheme: LegacyScheme) -> usize {
    match scheme {
        LegacyScheme::Ssha | LegacyScheme::Sha1 => 20,
        LegacyScheme::Ssha256 | LegacyScheme::Sha256 => 32,
        _ => 64,
    }
}

/// Parses the value after `{SCHEME}` for one of the six digest schemes.
pub(super) fn parse(
    scheme: LegacyScheme,
    value: &str,
    encoding: Option<Encoding>,
) -> Result<Parsed, ParseError> {
    let malformed = ParseError::Malformed(scheme.name());
    let len = digest_len(scheme);
    let raw = match encoding {
        Some(encoding) => decode(value, encoding),
        None if scheme.is_unsalted() && value.len() == 2 * len => {
            decode(value, Encoding::Hex).or_else(|| decode(value, Encoding::Base64))
        }
        None => decode(value, Encoding::Base64),
    }
    .ok_or(malformed.clone())?;
    let fits = if scheme.is_unsalted() {
        raw.len() == len
    } else {
        // At least one byte of salt, as Dovecot requires.
        raw.len() > len
    };
    if !fits {
        return Err(malformed);
    }
    Ok(Parsed::Hash(StoredHash::new(
        scheme,
        format!("{{{}}}{}", scheme.name(), STANDARD.encode(&raw)),
        Work::Digest,
    )?))
}

/// Decodes hex (either case) or lenient base64; `None` if the text is not that.
pub(super) fn decode(value: &str, encoding: Encoding) -> Option<Vec<u8>> {
    match encoding {
        Encoding::Base64 => LENIENT_BASE64.decode(value).ok(),
        Encoding::Hex => decode_hex(value),
    }
}

pub(super) fn decode_hex(value: &str) -> Option<Vec<u8>> {
    if !value.len().is_multiple_of(2) {
        return None;
    }
    value
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).ok()?;
            if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None; // from_str_radix would accept a sign
            }
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

/// Checks `password` against a normalized `{SCHEME}base64` string.
pub(super) fn verify(scheme: LegacyScheme, stored: &str, password: &[u8]) -> bool {
    let Some(value) = stored
        .strip_prefix('{')
        .and_then(|rest| rest.strip_prefix(scheme.name()))
        .and_then(|rest| rest.strip_prefix('}'))
    else {
        return false;
    };
    let Ok(raw) = STANDARD.decode(value) else {
        return false;
    };
    let len = digest_len(scheme);
    if raw.len() < len {
        return false;
    }
    let (expected, salt) = raw.split_at(len);
    let computed = match scheme {
        LegacyScheme::Ssha | LegacyScheme::Sha1 => hash::<sha1::Sha1>(password, salt),
        LegacyScheme::Ssha256 | LegacyScheme::Sha256 => hash::<sha2::Sha256>(password, salt),
        _ => hash::<sha2::Sha512>(password, salt),
    };
    // Both sides have the digest's fixed length, so only the contents are compared.
    computed.ct_eq(expected).into()
}

fn hash<D: sha2::Digest>(password: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut hasher = D::new();
    hasher.update(password);
    hasher.update(salt);
    hasher.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decoding_is_strict() {
        assert_eq!(decode_hex("00ff7A"), Some(vec![0, 255, 0x7a]));
        assert_eq!(decode_hex("0"), None);
        assert_eq!(decode_hex("+1"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex("é0"), None);
    }

    #[test]
    fn rfc_3174_and_fips_180_vectors() {
        // SHA-1("abc") and SHA-256("abc"), unsalted, as {SHA} and {SHA256.HEX}.
        let sha1 = "{SHA}qZk+NkcGgWq6PiVxeFDCbJzQ2J0=";
        let sha256 = "{SHA256.HEX}ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        for stored in [sha1, sha256] {
            let Ok(Parsed::Hash(hash)) = super::super::parse(stored) else {
                panic!("{stored}");
            };
            assert!(hash.verify("abc"));
            assert!(!hash.verify("abd"));
        }
    }
}
