//! Verification of password hashes imported from other mail systems: imported legacy
//! hashes are checked as they are and replaced by argon2id at the next sign-in.
//!
//! Administrators who move from Dovecot, Courier, qpopper or an `/etc/shadow`-style list
//! bring hashes in the forms below. [`parse`] recognises them without hashing anything,
//! [`StoredHash::verify`] checks a password against one, and the caller then replaces it
//! with an argon2id hash. Everything here is sans-IO, synchronous and pure.
//!
//! - **SHA-crypt**, `$6$…` and `$5$…` (`{SHA512-CRYPT}`, `{SHA256-CRYPT}`, `{CRYPT}`):
//!   U. Drepper, "Unix crypt using SHA-256 and SHA-512" (2007),
//!   <https://www.akkadia.org/drepper/SHA-crypt.txt>.
//! - **bcrypt**, `$2a$`, `$2b$`, `$2y$` (`{BLF-CRYPT}`): N. Provos and D. Mazières, "A
//!   Future-Adaptable Password Scheme" (USENIX 1999); OpenBSD bcrypt(3); Openwall
//!   crypt_blowfish for `$2y$`.
//! - **yescrypt**, `$y$…` (`{YESCRYPT}`): Openwall yescrypt; libxcrypt crypt(5).
//! - **Argon2**, `$argon2id$…`, `$argon2i$…` (`{ARGON2ID}`, `{ARGON2I}`): RFC 9106 and
//!   the PHC string format.
//! - **PBKDF2-HMAC-SHA1**, `{PBKDF2}$1$salt$rounds$hex`: RFC 8018 §5.2; the layout of
//!   Dovecot's `password-scheme-pbkdf2.c`.
//! - **Salted digests**, `{SSHA}`, `{SSHA256}`, `{SSHA512}` = base64(H(password ‖ salt)
//!   ‖ salt), and **unsalted** `{SHA}`, `{SHA256}`, `{SHA512}`: RFC 2307 as OpenLDAP
//!   writes it; SHA-1 per RFC 3174, SHA-2 per FIPS 180-4.
//! - **Cleartext**, `{PLAIN}`, `{CLEAR}`, `{CLEARTEXT}`: [`Parsed::Cleartext`], for the
//!   importer to hash; never stored as is.
//!
//! Scheme names follow Dovecot's "Password Schemes" documentation and its
//! `password-scheme.c`: names are case-insensitive, may end in `.HEX`, `.B64` or
//! `.BASE64` to name the encoding, and a value with no `{SCHEME}` prefix is a crypt(3)
//! string, as in a Dovecot passwd-file. As in Dovecot, every crypt-family prefix
//! (`{CRYPT}`, `{SHA512-CRYPT}`, `{BLF-CRYPT}`…) is dispatched on the string itself.
//!
//! The old systems hashed the password's bytes as typed, so [`StoredHash::verify`] wants
//! the password as the client sent it, not its SASLprep form (the two differ only for
//! some non-ASCII input; the argon2id hash that replaces a legacy one is made from the
//! prepared form as usual).
//!
//! Refused on purpose: md5-crypt (`$1$`, `{MD5-CRYPT}`, `{MD5}`), DES crypt and every other
//! Dovecot scheme ([`ParseError::Unsupported`]); costs beyond what Poplar ever checks
//! ([`ParseError::Uncheckable`], see [`HashBounds::CHECKABLE`]); locked or empty entries
//! ([`ParseError::NoPassword`]). Errors name a scheme and its parameters, never the
//! stored value.
//!
//! Every parsed hash knows its cost ([`StoredHash::work`], the `cost` module): the memory
//! and the estimated time of one check, the same at import (which bounds it by the
//! configured [`HashBounds`]) and at sign-in (which runs it within the hashing pool's
//! memory budget).

mod cost;
mod crypt;
mod digest;
mod kdf;
mod passwd;

pub use cost::{Dimension, Exceeds, HashBounds, Work};
pub use passwd::{MailFields, parse_passwd_line, passwd_line_mail, passwd_line_user};

use zeroize::Zeroizing;

/// Longest stored value accepted. Real hashes are under 200 bytes; the cap bounds the
/// work of decoding and of hashing long salts.
const MAX_STORED_LEN: usize = 1024;

/// A password-hash scheme that can be imported and verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyScheme {
    /// SHA-crypt with SHA-512 (`$6$`).
    Sha512Crypt,
    /// SHA-crypt with SHA-256 (`$5$`).
    Sha256Crypt,
    /// bcrypt (`$2a$`, `$2b$`, `$2y$`).
    Bcrypt,
    /// yescrypt (`$y$`).
    Yescrypt,
    /// Salted SHA-1 (`{SSHA}`).
    Ssha,
    /// Salted SHA-256 (`{SSHA256}`).
    Ssha256,
    /// Salted SHA-512 (`{SSHA512}`).
    Ssha512,
    /// Unsalted SHA-1 (`{SHA}`).
    Sha1,
    /// Unsalted SHA-256 (`{SHA256}`).
    Sha256,
    /// Unsalted SHA-512 (`{SHA512}`).
    Sha512,
    /// Argon2id PHC string (`$argon2id$`).
    Argon2id,
    /// Argon2i PHC string (`$argon2i$`).
    Argon2i,
    /// Dovecot's PBKDF2-HMAC-SHA1 (`{PBKDF2}$1$…`).
    Pbkdf2Sha1,
}

impl LegacyScheme {
    /// The Dovecot name of the scheme, e.g. `"SHA512-CRYPT"`, for reports and the audit.
    pub fn name(&self) -> &'static str {
        match self {
            LegacyScheme::Sha512Crypt => "SHA512-CRYPT",
            LegacyScheme::Sha256Crypt => "SHA256-CRYPT",
            LegacyScheme::Bcrypt => "BLF-CRYPT",
            LegacyScheme::Yescrypt => "YESCRYPT",
            LegacyScheme::Ssha => "SSHA",
            LegacyScheme::Ssha256 => "SSHA256",
            LegacyScheme::Ssha512 => "SSHA512",
            LegacyScheme::Sha1 => "SHA",
            LegacyScheme::Sha256 => "SHA256",
            LegacyScheme::Sha512 => "SHA512",
            LegacyScheme::Argon2id => "ARGON2ID",
            LegacyScheme::Argon2i => "ARGON2I",
            LegacyScheme::Pbkdf2Sha1 => "PBKDF2",
        }
    }

    /// Weak: one fast digest with no work factor, so a stolen directory falls to
    /// guessing at GPU speed. Accepted for sign-in (then re-hashed), but worth a line in
    /// `poplar audit` until the user signs in again.
    pub fn is_weak(&self) -> bool {
        !self.is_slow()
    }

    /// Unsalted: equal passwords have equal hashes and precomputed tables apply. The
    /// weakest forms of all (`{SHA}`, `{SHA256}`, `{SHA512}`).
    pub fn is_unsalted(&self) -> bool {
        matches!(
            self,
            LegacyScheme::Sha1 | LegacyScheme::Sha256 | LegacyScheme::Sha512
        )
    }

    fn is_slow(&self) -> bool {
        !matches!(
            self,
            LegacyScheme::Ssha
                | LegacyScheme::Ssha256
                | LegacyScheme::Ssha512
                | LegacyScheme::Sha1
                | LegacyScheme::Sha256
                | LegacyScheme::Sha512
        )
    }
}

/// What a stored password value turned out to be.
#[derive(Clone)]
pub enum Parsed {
    /// A hash that [`StoredHash::verify`] can check.
    Hash(StoredHash),
    /// A cleartext password (`{PLAIN}` and its aliases): the importer hashes it; it is
    /// never stored as is.
    Cleartext(Zeroizing<String>),
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Parsed::Hash(hash) => f.debug_tuple("Hash").field(hash).finish(),
            // Never print a password, not even in a test failure.
            Parsed::Cleartext(_) => f.write_str("Cleartext(<redacted>)"),
        }
    }
}

/// A verifiable legacy hash, in the normalized form [`StoredHash::as_stored`] gives.
///
/// Only [`parse`] makes one, so the string is known to be well formed and within
/// [`HashBounds::CHECKABLE`]; `Debug` shows the scheme and its parameters only, since a
/// hash is material for offline guessing.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredHash {
    scheme: LegacyScheme,
    /// Self-describing: a crypt(3) or PHC string, or `{SCHEME}` and the value.
    stored: String,
    /// The parameters that set its cost.
    work: Work,
}

impl std::fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredHash")
            .field("scheme", &self.scheme)
            .field("work", &self.work)
            .finish_non_exhaustive()
    }
}

impl StoredHash {
    /// A hash the parsers found well formed, refused if it costs more than Poplar ever
    /// checks.
    fn new(scheme: LegacyScheme, stored: String, work: Work) -> Result<Self, ParseError> {
        HashBounds::CHECKABLE
            .check_as(scheme, &work, true)
            .map_err(ParseError::Uncheckable)?;
        Ok(StoredHash {
            scheme,
            stored,
            work,
        })
    }

    /// The scheme of the hash.
    pub fn scheme(&self) -> LegacyScheme {
        self.scheme
    }

    /// The parameters that set what a check costs: [`Work::memory_kib`] and
    /// [`Work::estimate_us`].
    pub fn work(&self) -> Work {
        self.work
    }

    /// Whether a check is within `bounds` (for example the configured import bounds).
    pub fn check_bounds(&self, bounds: &HashBounds) -> Result<(), Exceeds> {
        bounds.check(self.scheme, &self.work)
    }

    /// The string to store in the directory: self-describing (`"{SSHA256}base64…"`,
    /// `"$6$…"`, `"$argon2id$…"`, `"{PBKDF2}$1$…"`) and parsed back by [`parse`] to the
    /// same hash.
    pub fn as_stored(&self) -> &str {
        &self.stored
    }

    /// Whether `password` (its UTF-8 bytes, exactly as the old system hashed them)
    /// matches. Digests we compute ourselves are compared in constant time; the crates
    /// for the crypt(3) and PHC schemes do the same. Never panics: a hash the crates
    /// refuse simply does not match.
    pub fn verify(&self, password: &str) -> bool {
        let password = password.as_bytes();
        match self.scheme {
            LegacyScheme::Sha512Crypt | LegacyScheme::Sha256Crypt => {
                crypt::verify_sha_crypt(&self.stored, password)
            }
            LegacyScheme::Bcrypt => crypt::verify_bcrypt(&self.stored, password),
            LegacyScheme::Yescrypt => crypt::verify_yescrypt(&self.stored, password),
            LegacyScheme::Argon2id | LegacyScheme::Argon2i => {
                kdf::verify_argon2(&self.stored, password)
            }
            LegacyScheme::Pbkdf2Sha1 => kdf::verify_pbkdf2(&self.stored, password),
            LegacyScheme::Ssha
            | LegacyScheme::Ssha256
            | LegacyScheme::Ssha512
            | LegacyScheme::Sha1
            | LegacyScheme::Sha256
            | LegacyScheme::Sha512 => digest::verify(self.scheme, &self.stored, password),
        }
    }
}

/// Why a stored value cannot be imported. Messages name a scheme, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A scheme Poplar does not verify (md5-crypt, DES crypt, CRAM-MD5, …): the user
    /// needs a new password.
    #[error("unsupported scheme {0}")]
    Unsupported(String),
    /// A known scheme whose value does not parse.
    #[error("malformed {0} hash")]
    Malformed(&'static str),
    /// A hash whose memory or estimated time is beyond what Poplar ever checks
    /// ([`HashBounds::CHECKABLE`]): no setting and no override makes it usable.
    #[error("{0}")]
    Uncheckable(Exceeds),
    /// An empty password, or an entry locked with `!` or `*` (shadow conventions), or
    /// the `x` placeholder of `/etc/passwd`.
    #[error("no usable password")]
    NoPassword,
}

/// Parses a stored password value as found in a Dovecot passwd-file, an SQL column or a
/// `user:hash` list. Hashes nothing, so it is cheap.
pub fn parse(stored: &str) -> Result<Parsed, ParseError> {
    if stored.len() > MAX_STORED_LEN {
        return Err(ParseError::Malformed("oversized"));
    }
    if stored.is_empty() || stored == "x" || stored.starts_with(['!', '*']) {
        return Err(ParseError::NoPassword);
    }
    match stored.strip_prefix('{') {
        Some(rest) => {
            let (name, value) = rest
                .split_once('}')
                .ok_or(ParseError::Malformed("{SCHEME}"))?;
            parse_prefixed(name, value)
        }
        None if stored.starts_with("$argon2") => kdf::parse_argon2(stored, "ARGON2"),
        None => crypt::parse(stored),
    }
}

/// Whether `stored` is a legacy form the Authenticator should replace after a
/// successful sign-in: true for everything [`parse`] accepts except a bare
/// `$argon2id$` PHC string (whose parameters the argon2 hasher itself judges).
pub fn is_legacy(stored: &str) -> bool {
    match parse(stored) {
        Ok(Parsed::Hash(hash)) => {
            !(hash.scheme == LegacyScheme::Argon2id && stored.starts_with("$argon2id$"))
        }
        Ok(Parsed::Cleartext(_)) => true,
        Err(_) => false,
    }
}

/// The encoding named by a `.HEX`, `.B64` or `.BASE64` scheme suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Hex,
    Base64,
}

fn parse_prefixed(name: &str, value: &str) -> Result<Parsed, ParseError> {
    let upper = name.to_ascii_uppercase();
    let (base, encoding) = match upper.split_once('.') {
        None => (upper.as_str(), None),
        Some((base, "HEX")) => (base, Some(Encoding::Hex)),
        Some((base, "B64" | "BASE64")) => (base, Some(Encoding::Base64)),
        Some(_) => return Err(unsupported(name)),
    };
    let scheme = match base {
        "PLAIN" | "CLEAR" | "CLEARTEXT" => return cleartext(value, encoding),
        "SSHA" => LegacyScheme::Ssha,
        "SSHA256" => LegacyScheme::Ssha256,
        "SSHA512" => LegacyScheme::Ssha512,
        "SHA" | "SHA1" => LegacyScheme::Sha1,
        "SHA256" => LegacyScheme::Sha256,
        "SHA512" => LegacyScheme::Sha512,
        _ if encoding.is_some() => return Err(unsupported(name)),
        // Dovecot verifies all of these with crypt(3), whatever the string holds.
        "CRYPT" | "DES-CRYPT" | "SHA256-CRYPT" | "SHA512-CRYPT" | "BLF-CRYPT" | "YESCRYPT" => {
            return crypt::parse(value);
        }
        "ARGON2ID" | "ARGON2I" => return kdf::parse_argon2(value, "ARGON2"),
        "PBKDF2" => return kdf::parse_pbkdf2(value),
        _ => return Err(unsupported(name)),
    };
    digest::parse(scheme, value, encoding)
}

/// `{PLAIN}` and its aliases: the password itself, possibly hex or base64 encoded.
fn cleartext(value: &str, encoding: Option<Encoding>) -> Result<Parsed, ParseError> {
    let bytes = match encoding {
        None => Zeroizing::new(value.as_bytes().to_vec()),
        Some(encoding) => {
            Zeroizing::new(digest::decode(value, encoding).ok_or(ParseError::Malformed("PLAIN"))?)
        }
    };
    if bytes.is_empty() {
        return Err(ParseError::NoPassword);
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| ParseError::Malformed("PLAIN"))?;
    Ok(Parsed::Cleartext(Zeroizing::new(text.to_owned())))
}

/// An `Unsupported` error naming the `{SCHEME}` `name`, upper-cased as Dovecot names
/// are case-insensitive.
fn unsupported(name: &str) -> ParseError {
    unsupported_as_is(&name.to_ascii_uppercase())
}

/// An `Unsupported` error naming `name` if it looks like a scheme name: the value itself
/// never goes into an error.
fn unsupported_as_is(name: &str) -> ParseError {
    let plausible = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'$'));
    ParseError::Unsupported(if plausible {
        name.to_owned()
    } else {
        "unknown".to_owned()
    })
}
