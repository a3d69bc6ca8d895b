//! Two factors: TOTP (RFC 6238 over RFC 4226 HOTP; SHA-1, 6 digits, 30 s, as every
//! authenticator app expects), recovery codes, and app passwords.
//!
//! App passwords are 16 characters from a 32-letter alphabet without look-alikes
//! (80 bits), shown in groups of four. Being random and long, they are verified with a
//! keyed hash (HMAC-SHA-256 under a key derived from the server key) instead of argon2:
//! a leaked directory gives an attacker nothing to guess at without the server key, and
//! a sign-in costs microseconds, not the ~40 ms of an argon2id verification.

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha1::Sha1;
use sha2::Sha256;
use zeroize::Zeroizing;

/// TOTP time step, seconds.
pub const STEP_SECS: i64 = 30;
/// Digits in a code.
pub const DIGITS: u32 = 6;
/// Bytes in a new TOTP secret (RFC 4226 recommends 160 bits).
pub const SECRET_BYTES: usize = 20;

/// The alphabet of app passwords and recovery codes: lower-case letters and digits
/// without 0/o and 1/l, so they can be read aloud and typed on a phone.
const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding (what otpauth URIs carry).
pub fn base32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes base32 (case-insensitive; spaces and `=` ignored); `None` if malformed.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !matches!(c, b' ' | b'=' | b'-')) {
        let v = BASE32.iter().position(|&b| b == c.to_ascii_uppercase())? as u32;
        buffer = ((buffer << 5) | v) & 0xffff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// The RFC 4226 HOTP value of `counter`, `DIGITS` long.
pub fn hotp(secret: &[u8], counter: u64) -> u32 {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let value = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    value % 10u32.pow(DIGITS)
}

/// The time step of a Unix time in milliseconds.
pub fn step_at(now_ms: i64) -> i64 {
    now_ms.div_euclid(1000).div_euclid(STEP_SECS)
}

/// The step whose code `code` is, within ±1 step of `now_ms` (clock drift), latest
/// first; `None` if it matches none. Comparison does not stop at the first digit.
pub fn totp_match(secret: &[u8], code: &str, now_ms: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let wanted: u32 = code.parse().ok()?;
    let now = step_at(now_ms);
    [now + 1, now, now - 1].into_iter().find(|&step| {
        u64::try_from(step).is_ok_and(|s| {
            subtle::ConstantTimeEq::ct_eq(
                &hotp(secret, s).to_be_bytes()[..],
                &wanted.to_be_bytes()[..],
            )
            .into()
        })
    })
}

/// The `otpauth://` URI an authenticator app scans.
pub fn otpauth_uri(issuer: &str, user: &str, secret: &[u8]) -> String {
    let issuer_enc = percent(issuer);
    format!(
        "otpauth://totp/{issuer_enc}:{}?secret={}&issuer={issuer_enc}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        percent(user),
        base32_encode(secret)
    )
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A new random TOTP secret.
pub fn new_secret() -> Option<Zeroizing<Vec<u8>>> {
    let mut secret = Zeroizing::new(vec![0u8; SECRET_BYTES]);
    getrandom::fill(&mut secret).ok()?;
    Some(secret)
}

/// `groups` groups of four random characters from the alphabet, joined by `-`.
fn random_groups(groups: usize) -> Option<Zeroizing<String>> {
    let mut bytes = Zeroizing::new(vec![0u8; groups * 4]);
    getrandom::fill(&mut bytes).ok()?;
    let mut out = Zeroizing::new(String::with_capacity(groups * 5));
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        // 256 is a multiple of 32: no bias.
        out.push(ALPHABET[usize::from(*b) % 32] as char);
    }
    Some(out)
}

/// A new app password: `xxxx-xxxx-xxxx-xxxx`, 80 bits.
pub fn new_app_password() -> Option<Zeroizing<String>> {
    random_groups(4)
}

/// A new recovery code: `xxxx-xxxx-xxxx`, 60 bits.
pub fn new_recovery_code() -> Option<Zeroizing<String>> {
    random_groups(3)
}

/// An app password or recovery code as typed, reduced to its characters: lower-case,
/// without spaces and dashes. `None` if it cannot be one (other characters or length).
pub fn normalize_code(typed: &[u8], len: usize) -> Option<Zeroizing<String>> {
    let text = std::str::from_utf8(typed).ok()?;
    let out: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (out.len() == len && out.bytes().all(|b| ALPHABET.contains(&b))).then(|| Zeroizing::new(out))
}

/// Length of a normalized app password.
pub const APP_PASSWORD_LEN: usize = 16;
/// Length of a normalized recovery code.
pub const RECOVERY_CODE_LEN: usize = 12;

/// Keyed hashes for app passwords and recovery codes, under the keys of the server's
/// key ring: made under the active key, looked up under every key (a rotation leaves
/// the codes made before it working), each stored hash naming its key (`k<id>:` before
/// the hex, none for key 1, as every hash made before rotation).
pub struct CodeHasher {
    keys: Vec<(u32, Zeroizing<[u8; 32]>)>,
    active: u32,
}

impl std::fmt::Debug for CodeHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeHasher(<key>)")
    }
}

fn code_key(server_key: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut mac = Hmac::<Sha256>::new_from_slice(server_key).expect("HMAC takes any key");
    mac.update(b"poplar app passwords and recovery codes v1");
    Zeroizing::new(mac.finalize().into_bytes().into())
}

impl CodeHasher {
    /// Over one server key (key 1), for tests.
    #[cfg(test)]
    fn new(server_key: &[u8]) -> Self {
        CodeHasher {
            keys: vec![(1, code_key(server_key))],
            active: 1,
        }
    }

    /// Over every key of `ring`, hashing under its active key.
    pub fn from_ring(ring: &crate::KeyRing) -> Self {
        CodeHasher {
            keys: ring
                .keys()
                .iter()
                .map(|k| (k.id(), code_key(k.secret())))
                .collect(),
            active: ring.active().id(),
        }
    }

    fn hash_with(id: u32, key: &[u8; 32], scope: &str, normalized: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        mac.update(normalized.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if id == 1 { hex } else { format!("k{id}:{hex}") }
    }

    /// The stored form of a normalized code under the active key; `scope` binds it
    /// (`app`, or the user for recovery codes).
    pub fn hash(&self, scope: &str, normalized: &str) -> String {
        let (id, key) = self
            .keys
            .iter()
            .find(|(id, _)| *id == self.active)
            .expect("the active key is in the ring");
        Self::hash_with(*id, key, scope, normalized)
    }

    /// The stored forms under every key, the active one first: what a lookup tries.
    pub fn candidates(&self, scope: &str, normalized: &str) -> Vec<String> {
        let mut keys: Vec<&(u32, Zeroizing<[u8; 32]>)> = self.keys.iter().collect();
        keys.sort_by_key(|(id, _)| *id != self.active);
        keys.iter()
            .map(|(id, key)| Self::hash_with(*id, key, scope, normalized))
            .collect()
    }

    /// Whether `stored` was made under the active key (else it is re-keyed at its next
    /// use).
    pub fn is_current(&self, stored: &str) -> bool {
        Self::made_under(stored) == self.active
    }

    /// The key a stored hash was made under.
    pub fn made_under(stored: &str) -> u32 {
        stored
            .strip_prefix('k')
            .and_then(|rest| rest.split_once(':'))
            .and_then(|(id, _)| id.parse().ok())
            .unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_vectors() {
        // RFC 6238 appendix B, SHA-1, 8 digits there; the last 6 digits here.
        let secret = b"12345678901234567890";
        for (t, code) in [
            (59i64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            let step = u64::try_from(t / STEP_SECS).unwrap();
            assert_eq!(format!("{:06}", hotp(secret, step)), code[2..], "t={t}");
        }
    }

    #[test]
    fn drift_of_one_step_and_no_more() {
        let secret = b"12345678901234567890";
        let now = 1_111_111_111_000;
        let at = |step: i64| format!("{:06}", hotp(secret, u64::try_from(step).unwrap()));
        let s = step_at(now);
        assert_eq!(totp_match(secret, &at(s), now), Some(s));
        assert_eq!(totp_match(secret, &at(s - 1), now), Some(s - 1));
        assert_eq!(totp_match(secret, &at(s + 1), now), Some(s + 1));
        assert_eq!(totp_match(secret, &at(s - 2), now), None);
        assert_eq!(totp_match(secret, &at(s + 2), now), None);
        assert_eq!(totp_match(secret, "12345", now), None);
        assert_eq!(totp_match(secret, "abcdef", now), None);
    }

    #[test]
    fn base32_round_trip() {
        assert_eq!(
            base32_encode(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        for n in 0..40 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base32_decode(&base32_encode(&data)).unwrap(), data);
        }
        assert_eq!(base32_decode("gezd gnbv"), base32_decode("GEZDGNBV"));
        assert!(base32_decode("GEZ1").is_none());
    }

    #[test]
    fn codes() {
        let p = new_app_password().unwrap();
        assert_eq!(p.len(), 19);
        assert_eq!(p.matches('-').count(), 3);
        let n = normalize_code(
            p.to_uppercase().replace('-', " ").as_bytes(),
            APP_PASSWORD_LEN,
        )
        .unwrap();
        assert_eq!(*n, p.replace('-', ""));
        assert!(normalize_code(b"abcd-efgh-jkmn-pqr0", APP_PASSWORD_LEN).is_none());
        assert!(normalize_code(b"short", APP_PASSWORD_LEN).is_none());
        let r = new_recovery_code().unwrap();
        assert!(normalize_code(r.as_bytes(), RECOVERY_CODE_LEN).is_some());
        let h = CodeHasher::new(b"k");
        assert_eq!(h.hash("app", "x"), h.hash("app", "x"));
        assert_ne!(h.hash("app", "x"), h.hash("alice", "x"));
        assert_ne!(
            h.hash("app", "x"),
            CodeHasher::new(b"other").hash("app", "x")
        );
    }

    #[test]
    fn uri() {
        let uri = otpauth_uri(
            "Poplar mail.example.org",
            "alice@example.org",
            b"12345678901234567890",
        );
        assert_eq!(
            uri,
            "otpauth://totp/Poplar%20mail.example.org:alice@example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Poplar%20mail.example.org&algorithm=SHA1&digits=6&period=30"
        );
    }
}
