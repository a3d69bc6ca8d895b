//! APOP (RFC 1939 section 7): the client proves it knows a shared secret by sending
//! MD5(timestamp || secret) for the timestamp in the server's greeting.
//!
//! APOP is the weakest way to sign in that Poplar offers, and off by default: MD5 is
//! broken for collisions, a captured exchange lets an attacker test guesses offline at
//! billions per second, and the server must keep the secret itself (recoverable), not a
//! one-way hash. Poplar therefore keeps a separate APOP secret per user (never the
//! account password), encrypts it at rest with AES-256-GCM under a key derived from the
//! server's key ring (kept apart from the directory), binds each ciphertext to its user name, and offers APOP only where
//! the plaintext mechanisms are allowed too (under TLS or in a trusted network).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// Sealed under key 1 of the ring (what every install had before rotation).
const VERSION: &str = "v1:";
/// Sealed under another key of the ring: `v2:<key id>:`.
const VERSION_2: &str = "v2:";

/// What APOP secrets are sealed for.
pub const APOP_PURPOSE: &[u8] = b"poplar apop secret encryption v1";

/// Encrypts and decrypts one kind of recoverable secret (APOP secrets, TOTP keys)
/// under keys derived from the server's key ring: sealing uses the active key, opening
/// the key the value names.
pub struct ApopVault {
    /// Per key id, AES-256-GCM under HMAC(key, purpose).
    keys: Vec<(u32, LessSafeKey)>,
    active: u32,
}

impl std::fmt::Debug for ApopVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApopVault(<key>)")
    }
}

fn derive(server_key: &[u8], purpose: &[u8]) -> LessSafeKey {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(server_key).expect("HMAC takes keys of any length");
    mac.update(purpose);
    let derived = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
    let key = UnboundKey::new(&AES_256_GCM, derived.as_ref()).expect("AES-256 takes 32 bytes");
    LessSafeKey::new(key)
}

impl ApopVault {
    /// An APOP vault over one server key (key 1), for tests.
    #[cfg(test)]
    fn new(server_key: &[u8]) -> Self {
        ApopVault {
            keys: vec![(1, derive(server_key, APOP_PURPOSE))],
            active: 1,
        }
    }

    /// A vault over every key of `ring`, sealing under its active key.
    pub fn from_ring(ring: &crate::KeyRing, purpose: &[u8]) -> Self {
        ApopVault {
            keys: ring
                .keys()
                .iter()
                .map(|k| (k.id(), derive(k.secret(), purpose)))
                .collect(),
            active: ring.active().id(),
        }
    }

    /// The key a sealed value names (`v1:` is key 1), if it has the form of one.
    pub fn sealed_under(sealed: &str) -> Option<u32> {
        if sealed.starts_with(VERSION) {
            return Some(1);
        }
        let (id, _) = sealed.strip_prefix(VERSION_2)?.split_once(':')?;
        id.parse().ok()
    }

    /// Whether this vault holds key `id`.
    pub fn holds(&self, id: u32) -> bool {
        self.keys.iter().any(|(k, _)| *k == id)
    }

    /// Encrypts `secret` for `user` under the active key: `v1:` (key 1) or `v2:<id>:`,
    /// then base64(nonce || ciphertext || tag).
    pub fn seal(&self, user: &str, secret: &str) -> Option<String> {
        let key = &self.keys.iter().find(|(id, _)| *id == self.active)?.1;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom_fill(&mut nonce)?;
        let mut data = Zeroizing::new(secret.as_bytes().to_vec());
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(user.as_bytes()),
            &mut *data,
        )
        .ok()?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        let prefix = if self.active == 1 {
            VERSION.to_owned()
        } else {
            format!("{VERSION_2}{}:", self.active)
        };
        Some(format!("{prefix}{}", STANDARD.encode(out)))
    }

    /// Decrypts what [`ApopVault::seal`] made for the same user; `None` if it was
    /// tampered with, made for someone else or under a key this vault does not hold.
    pub fn open(&self, user: &str, sealed: &str) -> Option<Zeroizing<String>> {
        let id = Self::sealed_under(sealed)?;
        let body = if id == 1 && sealed.starts_with(VERSION) {
            &sealed[VERSION.len()..]
        } else {
            sealed.strip_prefix(VERSION_2)?.split_once(':')?.1
        };
        let key = &self.keys.iter().find(|(k, _)| *k == id)?.1;
        let raw = STANDARD.decode(body).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut data = Zeroizing::new(ciphertext.to_vec());
        let plain = key
            .open_in_place(nonce, Aad::from(user.as_bytes()), &mut data)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok().map(Zeroizing::new)
    }
}

/// Whether `digest` (lower-case hex) is MD5(timestamp || secret), compared in constant
/// time.
pub fn digest_matches(timestamp: &str, secret: &str, digest: &str) -> bool {
    let mut md5 = Md5::new();
    md5.update(timestamp.as_bytes());
    md5.update(secret.as_bytes());
    let expected: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
    expected.as_bytes().ct_eq(digest.as_bytes()).into()
}

fn getrandom_fill(buf: &mut [u8]) -> Option<()> {
    aws_lc_rs::rand::fill(buf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1939_example() {
        // RFC 1939 section 7: secret "tanstaaf".
        assert!(digest_matches(
            "<1896.697170952@dbc.mtview.ca.us>",
            "tanstaaf",
            "c4c9334bac560ecc979e58001b3e22fb"
        ));
        assert!(!digest_matches(
            "<1896.697170952@dbc.mtview.ca.us>",
            "tanstaaF",
            "c4c9334bac560ecc979e58001b3e22fb"
        ));
    }

    #[test]
    fn sealed_secrets_open_only_for_their_user_and_key() {
        let vault = ApopVault::new(b"server key one");
        let sealed = vault.seal("alice", "tanstaaf").unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("tanstaaf"));
        assert_ne!(
            sealed,
            vault.seal("alice", "tanstaaf").unwrap(),
            "fresh nonce"
        );
        assert_eq!(vault.open("alice", &sealed).unwrap().as_str(), "tanstaaf");
        assert!(vault.open("bob", &sealed).is_none());
        assert!(
            ApopVault::new(b"server key two")
                .open("alice", &sealed)
                .is_none()
        );
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(vault.open("alice", &tampered).is_none());
        assert!(vault.open("alice", "garbage").is_none());
    }
}
