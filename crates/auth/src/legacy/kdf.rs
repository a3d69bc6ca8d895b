//! Key-derivation schemes: Argon2 PHC strings (RFC 9106; the PHC string format), bare or
//! in Dovecot's `{ARGON2ID}`/`{ARGON2I}` wrapping (libsodium's `crypto_pwhash_str`), and
//! Dovecot's PBKDF2 scheme (RFC 8018 §5.2 with HMAC-SHA1).
//!
//! Dovecot's PBKDF2 layout, from `password-scheme-pbkdf2.c`: `$1$<salt>$<rounds>$<hex>`,
//! where the salt is used as its literal bytes (16 characters of `./0-9A-Za-z` when
//! Dovecot makes it), rounds is decimal (default 5000) and the key is 20 bytes of
//! HMAC-SHA1 output in hex.

use super::digest::decode_hex;
use super::{LegacyScheme, ParseError, Parsed, StoredHash, Work};
use argon2::password_hash::phc::PasswordHash;
use argon2::{Argon2, PasswordVerifier as _};
use subtle::ConstantTimeEq as _;

/// Highest Argon2 lane count accepted (lanes run one after another here). Memory and
/// passes are bounded by their cost ([`super::HashBounds::CHECKABLE`]).
pub(crate) const MAX_ARGON2_LANES: u32 = 16;

/// Length of Dovecot's PBKDF2 key: one SHA-1 output.
const PBKDF2_KEY_LEN: usize = 20;

/// Parses an Argon2 PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
pub(super) fn parse_argon2(s: &str, label: &'static str) -> Result<Parsed, ParseError> {
    let malformed = ParseError::Malformed(label);
    let hash = PasswordHash::new(s).map_err(|_| malformed.clone())?;
    let scheme = match hash.algorithm.as_str() {
        "argon2id" => LegacyScheme::Argon2id,
        "argon2i" => LegacyScheme::Argon2i,
        "argon2d" => return Err(ParseError::Unsupported("ARGON2D".to_owned())),
        _ => return Err(malformed),
    };
    let malformed = ParseError::Malformed(scheme.name());
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(malformed);
    }
    if let Some(version) = hash.version {
        argon2::Version::try_from(version).map_err(|_| malformed.clone())?;
    }
    let params = argon2::Params::try_from(&hash).map_err(|_| malformed.clone())?;
    if params.p_cost() > MAX_ARGON2_LANES {
        return Err(malformed);
    }
    let work = Work::Argon2 {
        memory_kib: params.m_cost(),
        passes: params.t_cost(),
        lanes: params.p_cost(),
    };
    Ok(Parsed::Hash(StoredHash::new(scheme, s.to_owned(), work)?))
}

pub(super) fn verify_argon2(stored: &str, password: &[u8]) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    // Algorithm, version and parameters all come from the string; the output is
    // compared in constant time inside `password-hash`.
    Argon2::default().verify_password(password, &hash).is_ok()
}

/// The fields of a Dovecot PBKDF2 value.
struct Pbkdf2<'a> {
    salt: &'a str,
    rounds: u32,
    key: [u8; PBKDF2_KEY_LEN],
}

fn split_pbkdf2(value: &str) -> Option<Pbkdf2<'_>> {
    let rest = value.strip_prefix("$1$")?;
    let [salt, rounds, hex] = rest.split('$').collect::<Vec<_>>()[..] else {
        return None;
    };
    // Control characters cannot come from Dovecot and would break line-based stores.
    if salt.chars().any(char::is_control) {
        return None;
    }
    if rounds.is_empty() || !rounds.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The cost bound judges the count (Dovecot's default is 5,000).
    let rounds = rounds.parse::<u32>().ok().filter(|&n| n >= 1)?;
    let key = decode_hex(hex)?.try_into().ok()?;
    Some(Pbkdf2 { salt, rounds, key })
}

/// Parses the value after `{PBKDF2}`.
pub(super) fn parse_pbkdf2(value: &str) -> Result<Parsed, ParseError> {
    let fields =
        split_pbkdf2(value).ok_or(ParseError::Malformed(LegacyScheme::Pbkdf2Sha1.name()))?;
    let hex: String = fields.key.iter().map(|b| format!("{b:02x}")).collect();
    Ok(Parsed::Hash(StoredHash::new(
        LegacyScheme::Pbkdf2Sha1,
        format!("{{PBKDF2}}$1${}${}${hex}", fields.salt, fields.rounds),
        Work::Pbkdf2 {
            iterations: fields.rounds,
        },
    )?))
}

pub(super) fn verify_pbkdf2(stored: &str, password: &[u8]) -> bool {
    let Some(fields) = stored.strip_prefix("{PBKDF2}").and_then(split_pbkdf2) else {
        return false;
    };
    let mut key = [0u8; PBKDF2_KEY_LEN];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, fields.salt.as_bytes(), fields.rounds, &mut key);
    key.ct_eq(&fields.key).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6070_pbkdf2_vector() {
        // RFC 6070 §2: P = "password", S = "salt", c = 4096.
        let stored = "{PBKDF2}$1$salt$4096$4B007901B765489ABEAD49D926F721D065A429C1";
        let Ok(Parsed::Hash(hash)) = super::super::parse(stored) else {
            panic!("parse");
        };
        assert_eq!(
            hash.as_stored(),
            "{PBKDF2}$1$salt$4096$4b007901b765489abead49d926f721d065a429c1"
        );
        assert!(hash.verify("password"));
        assert!(!hash.verify("Password"));
    }

    #[test]
    fn pbkdf2_fields_are_checked() {
        for value in [
            "$1$salt$0$4b007901b765489abead49d926f721d065a429c1",
            "$1$salt$+5$4b007901b765489abead49d926f721d065a429c1",
            "$1$salt$4294967296$4b007901b765489abead49d926f721d065a429c1",
            "$1$salt$4096$4b007901b765489abead49d926f721d065a429",
            "$1$salt$4096$4b007901b765489abead49d926f721d065a429c1$",
            "$2$salt$4096$4b007901b765489abead49d926f721d065a429c1",
            "$1$salt$4096",
        ] {
            assert!(split_pbkdf2(value).is_none(), "{value}");
        }
    }
}
