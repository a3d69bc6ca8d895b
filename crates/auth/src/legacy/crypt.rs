//! crypt(3) strings: SHA-crypt (`$5$`, `$6$`; Drepper's "Unix crypt using SHA-256 and
//! SHA-512"), bcrypt (`$2a$`, `$2b$`, `$2y$`; OpenBSD bcrypt(3), Openwall crypt_blowfish)
//! and yescrypt (`$y$`; Openwall, libxcrypt crypt(5)), plus recognition of the forms we
//! refuse: md5-crypt (`$1$`), DES and BSDi extended DES crypt.
//!
//! Parsing checks the whole layout and reads the cost ([`Work`]), which
//! [`StoredHash::new`] bounds, so that verification, which the `sha-crypt`, `bcrypt`
//! and `yescrypt` crates do in constant time, can only fail by mismatch.
//!
//! Common costs: SHA-crypt 5,000 rounds (glibc's default, written without `rounds=`),
//! 656,000 (passlib's `sha512_crypt`), 535,000 (its `sha256_crypt`); bcrypt 5 (Dovecot),
//! 10 to 12 (most libraries); yescrypt `j9T` (libxcrypt's default: N = 4096, r = 32,
//! 16 MiB).

use super::{LegacyScheme, ParseError, Parsed, StoredHash, Work};
use sha_crypt::PasswordVerifier as _;
use std::str::FromStr as _;

/// SHA-crypt's own floor; glibc writes nothing lower.
const MIN_SHA_CRYPT_ROUNDS: u32 = 1_000;

/// SHA-crypt's rounds when the string names none.
const DEFAULT_SHA_CRYPT_ROUNDS: u32 = 5_000;

/// bcrypt's own floor.
const MIN_BCRYPT_COST: u32 = 4;

/// Highest yescrypt time parameter `t` considered.
const MAX_YESCRYPT_T: u32 = 15;

/// The alphabet of crypt(3) base64 and of the salts crypt_gensalt writes.
fn is_crypt64(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
}

/// The characters the `sha-crypt` crate accepts in a salt (the MCF field alphabet):
/// crypt_gensalt's and a few more that `openssl passwd -salt` lets through.
fn is_mcf_field(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/' | b'+' | b'=' | b',' | b'-'))
}

/// Parses a crypt(3) string, with or without a crypt-family `{SCHEME}` prefix.
pub(super) fn parse(s: &str) -> Result<Parsed, ParseError> {
    let Some(rest) = s.strip_prefix('$') else {
        return Err(if is_des(s) {
            ParseError::Unsupported("DES-CRYPT".to_owned())
        } else {
            ParseError::Malformed("CRYPT")
        });
    };
    // An identifier and its closing `$`, so the fields below start at a char boundary.
    let Some((id, _)) = rest.split_once('$') else {
        return Err(ParseError::Malformed("CRYPT"));
    };
    let hash = match id {
        "6" => sha_crypt(s, LegacyScheme::Sha512Crypt)?,
        "5" => sha_crypt(s, LegacyScheme::Sha256Crypt)?,
        "2a" | "2b" | "2y" => bcrypt(s)?,
        "y" => yescrypt(s)?,
        "1" => return Err(ParseError::Unsupported("MD5-CRYPT".to_owned())),
        // `$2x$` is crypt_blowfish's bug-compatible mode for the pre-2011 sign-extension
        // bug; the bcrypt crate would verify it as `$2b$` and fail non-ASCII passwords.
        _ => return Err(super::unsupported_as_is(&format!("${id}$"))),
    };
    Ok(Parsed::Hash(hash))
}

/// DES crypt (13 characters) or BSDi extended DES (`_` and 19 characters).
fn is_des(s: &str) -> bool {
    (s.len() == 13 && is_crypt64(s)) || (s.len() == 20 && s.starts_with('_') && is_crypt64(&s[1..]))
}

/// `$5$[rounds=N$]salt$hash` or `$6$…`.
fn sha_crypt(s: &str, scheme: LegacyScheme) -> Result<StoredHash, ParseError> {
    let malformed = ParseError::Malformed(scheme.name());
    let hash_len = match scheme {
        LegacyScheme::Sha512Crypt => 86,
        _ => 43,
    };
    let mut fields: Vec<&str> = s[3..].split('$').collect();
    let mut rounds = DEFAULT_SHA_CRYPT_ROUNDS;
    if let Some(given) = fields.first().and_then(|f| f.strip_prefix("rounds=")) {
        if given.is_empty() || !given.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed);
        }
        // The format allows up to 999,999,999; the cost bound judges what is checked.
        match given.parse::<u32>() {
            Ok(n) if n >= MIN_SHA_CRYPT_ROUNDS => rounds = n,
            _ => return Err(malformed),
        }
        fields.remove(0);
    }
    let [salt, hash] = fields[..] else {
        return Err(malformed);
    };
    // glibc uses at most 16 salt characters and writes no more; the crate also wants
    // the salt in the MCF alphabet.
    if salt.is_empty() || salt.len() > 16 || !is_mcf_field(salt) {
        return Err(malformed);
    }
    if hash.len() != hash_len || !is_crypt64(hash) {
        return Err(malformed);
    }
    StoredHash::new(scheme, s.to_owned(), Work::ShaCrypt { rounds })
}

pub(super) fn verify_sha_crypt(stored: &str, password: &[u8]) -> bool {
    sha_crypt::ShaCrypt::default()
        .verify_password(password, stored)
        .is_ok()
}

/// `$2b$NN$` + 22 characters of salt + 31 of hash.
fn bcrypt(s: &str) -> Result<StoredHash, ParseError> {
    let malformed = ParseError::Malformed(LegacyScheme::Bcrypt.name());
    if s.len() != 60 || !s.as_bytes()[4..6].iter().all(u8::is_ascii_digit) {
        return Err(malformed);
    }
    let parts = bcrypt::HashParts::from_str(s).map_err(|_| malformed.clone())?;
    let cost = parts.get_cost();
    if cost < MIN_BCRYPT_COST {
        return Err(malformed);
    }
    StoredHash::new(LegacyScheme::Bcrypt, s.to_owned(), Work::Bcrypt { cost })
}

pub(super) fn verify_bcrypt(stored: &str, password: &[u8]) -> bool {
    // Truncates at 72 bytes, as every bcrypt that made these hashes did.
    bcrypt::verify(password, stored).unwrap_or(false)
}

/// `$y$params$salt$hash`.
fn yescrypt(s: &str) -> Result<StoredHash, ParseError> {
    let malformed = ParseError::Malformed(LegacyScheme::Yescrypt.name());
    let [params, salt, hash] = s[3..].split('$').collect::<Vec<_>>()[..] else {
        return Err(malformed);
    };
    // libxcrypt writes a 256-bit hash (43 characters); any other length would make the
    // crate allocate and compute whatever the string asks for.
    // A base64 length of 1 mod 4 cannot be decoded.
    let salt_decodes = !salt.is_empty() && salt.len() % 4 != 1 && is_crypt64(salt);
    if !salt_decodes || hash.len() != 43 || !is_crypt64(hash) {
        return Err(malformed);
    }
    let params = yescrypt::Params::from_str(params).map_err(|_| malformed.clone())?;
    let passes = yescrypt_passes(&params).ok_or(malformed.clone())?;
    let work = Work::Yescrypt {
        n: params.n(),
        r: params.r(),
        p: params.p(),
        t: passes - 1,
    };
    if yescrypt::PasswordHashRef::new(s).is_err() {
        return Err(malformed);
    }
    StoredHash::new(LegacyScheme::Yescrypt, s.to_owned(), work)
}

/// `t + 1` for parameters with a small `t` and no `g` (upgrades), else `None`. The crate
/// does not expose `t`, so the parsed parameters are compared with candidates.
fn yescrypt_passes(params: &yescrypt::Params) -> Option<u32> {
    use yescrypt::Mode;
    (0..=MAX_YESCRYPT_T).find_map(|t| {
        [Mode::Rw, Mode::Worm, Mode::Classic]
            .into_iter()
            .any(|mode| {
                yescrypt::Params::new_with_all_params(
                    mode,
                    params.n(),
                    params.r(),
                    params.p(),
                    t,
                    0,
                )
                .is_ok_and(|candidate| candidate == *params)
            })
            .then_some(t + 1)
    })
}

pub(super) fn verify_yescrypt(stored: &str, password: &[u8]) -> bool {
    yescrypt::Yescrypt::default()
        .verify_password(password, stored)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn des_shapes_are_recognised() {
        assert!(is_des("abJnggxhB/yWI"));
        assert!(is_des("_J9..CCCCXBrJUJV154M"));
        assert!(!is_des("abJnggxhB/yW"));
        assert!(!is_des("abJnggxhB/yW!"));
    }

    #[test]
    fn yescrypt_time_parameter_is_found() {
        let default = yescrypt::Params::from_str("j9T").unwrap();
        assert_eq!(yescrypt_passes(&default), Some(1));
        let with_t =
            yescrypt::Params::new_with_all_params(yescrypt::Mode::Rw, 4096, 32, 1, 3, 0).unwrap();
        assert_eq!(yescrypt_passes(&with_t), Some(4));
    }

    #[test]
    fn yescrypt_memory_is_bounded() {
        // N = 2^20, r = 32: 4 GiB.
        let big = yescrypt::Params::new(yescrypt::Mode::Rw, 1 << 20, 32, 1).unwrap();
        let s = format!("$y${big}$saltsaltsaltsalt${}", "a".repeat(43));
        let Err(ParseError::Uncheckable(e)) = yescrypt(&s) else {
            panic!("4 GiB of yescrypt parsed");
        };
        assert_eq!(e.work.memory_kib(), 4 << 20);
        assert!(e.to_string().contains("needs 4 GiB of memory"), "{e}");
    }
}
