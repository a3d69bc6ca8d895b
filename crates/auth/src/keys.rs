//! The server's key ring: the secrets that seal TOTP and APOP secrets and key the
//! hashes of app passwords, recovery codes and wrong attempts. It lives apart from the
//! directory it protects (a key file, a systemd credential or an environment variable),
//! so a copy of the directory alone opens nothing and lets nothing be guessed offline.
//!
//! A ring holds numbered keys, one of them active (what seals from now on), and a base
//! secret that never changes: it keys what must stay the same across rotations (the
//! SCRAM parameters shown for unknown names, which would otherwise change at a rotation
//! and tell unknown names from real ones) and names the ring (its fingerprint, which
//! the directory keeps to recognise it).
//!
//! The text form, one item per line (`#` comments and blank lines ignored):
//!
//! ```text
//! poplar-keys v1
//! base <hex>
//! key 1 <hex>
//! key 2 <hex>
//! active 2
//! ```

use std::fmt;

use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// The first line of a ring's text form.
const HEADER: &str = "poplar-keys v1";

/// One numbered key.
#[derive(Clone)]
pub struct RingKey {
    id: u32,
    secret: Zeroizing<Vec<u8>>,
}

impl RingKey {
    /// The key's number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The key itself.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

/// The server's keys; never printed (its `Debug` names the ids only).
#[derive(Clone)]
pub struct KeyRing {
    base: Zeroizing<Vec<u8>>,
    keys: Vec<RingKey>,
    active: u32,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("ids", &self.ids())
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// Why a ring's text was refused (never quoting a key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The first line is not `poplar-keys v1`.
    #[error("not a Poplar key ring (the first line must be \"{HEADER}\")")]
    Header,
    /// A line that is none of `base`, `key`, `active`.
    #[error("line {0}: not understood (expected base, key or active)")]
    Line(usize),
    /// A secret that is not hex of at least 16 bytes.
    #[error("line {0}: the key is not hex of at least 16 bytes")]
    Secret(usize),
    /// Two keys with one number, or two `base` or `active` lines.
    #[error("line {0}: given twice")]
    Twice(usize),
    /// No `base`, no key, or `active` naming no key.
    #[error("incomplete: {0}")]
    Incomplete(&'static str),
}

/// 32 random bytes.
fn random_secret() -> Option<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(vec![0u8; 32]);
    getrandom::fill(&mut bytes).ok()?;
    Some(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex of at least 16 bytes (what Poplar's keys have always been).
fn parse_hex(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let text = text.trim();
    if text.len() < 32 || !text.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(Zeroizing::new(bytes))
}

impl KeyRing {
    /// A new ring: a random base and key 1, active. `None` without randomness.
    pub fn generate() -> Option<Self> {
        Some(KeyRing {
            base: random_secret()?,
            keys: vec![RingKey {
                id: 1,
                secret: random_secret()?,
            }],
            active: 1,
        })
    }

    /// The ring an installation whose one key was `legacy` (hex, as the directory kept
    /// it) moves to: that key as key 1 and as the base, so everything sealed or keyed
    /// under it, the SCRAM parameters of unknown names included, stays as it was.
    pub fn adopt(legacy: &str) -> Option<Self> {
        let secret = parse_hex(legacy)?;
        Some(KeyRing {
            base: secret.clone(),
            keys: vec![RingKey { id: 1, secret }],
            active: 1,
        })
    }

    /// Whether `legacy` (hex) is one of this ring's keys.
    pub fn holds_legacy(&self, legacy: &str) -> bool {
        parse_hex(legacy).is_some_and(|s| self.keys.iter().any(|k| *k.secret == *s))
    }

    /// Reads the text form.
    pub fn parse(text: &str) -> Result<Self, RingError> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(n, l)| (n + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
        match lines.next() {
            Some((_, HEADER)) => {}
            _ => return Err(RingError::Header),
        }
        let (mut base, mut active, mut keys) = (None, None, Vec::<RingKey>::new());
        for (n, line) in lines {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["base", secret] => {
                    if base.is_some() {
                        return Err(RingError::Twice(n));
                    }
                    base = Some(parse_hex(secret).ok_or(RingError::Secret(n))?);
                }
                ["key", id, secret] => {
                    let id: u32 = id.parse().map_err(|_| RingError::Line(n))?;
                    if keys.iter().any(|k| k.id == id) {
                        return Err(RingError::Twice(n));
                    }
                    let secret = parse_hex(secret).ok_or(RingError::Secret(n))?;
                    keys.push(RingKey { id, secret });
                }
                ["active", id] => {
                    if active.is_some() {
                        return Err(RingError::Twice(n));
                    }
                    active = Some(id.parse::<u32>().map_err(|_| RingError::Line(n))?);
                }
                _ => return Err(RingError::Line(n)),
            }
        }
        let base = base.ok_or(RingError::Incomplete("no base line"))?;
        if keys.is_empty() {
            return Err(RingError::Incomplete("no key"));
        }
        let active = active.unwrap_or_else(|| keys.iter().map(|k| k.id).max().unwrap_or(1));
        if !keys.iter().any(|k| k.id == active) {
            return Err(RingError::Incomplete("the active key is not in the ring"));
        }
        keys.sort_by_key(|k| k.id);
        Ok(KeyRing { base, keys, active })
    }

    /// The text form (holds every secret: write it only where the ring belongs).
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::new());
        out.push_str(
            "# Poplar's server keys: they open every sealed secret in the directory. Keep\n\
             # this file readable only by root and the service's group, never beside a\n\
             # backup of the directory. `poplar key show` describes it without the keys.\n",
        );
        out.push_str(HEADER);
        out.push('\n');
        out.push_str(&format!("base {}\n", hex(&self.base)));
        for k in &self.keys {
            out.push_str(&format!("key {} {}\n", k.id, hex(&k.secret)));
        }
        out.push_str(&format!("active {}\n", self.active));
        out
    }

    /// The ring's name: SHA-256 of its base secret, in hex. The directory keeps it to
    /// recognise the ring its secrets were sealed under; it tells nothing of the keys.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"poplar key ring fingerprint v1\0");
        h.update(&*self.base);
        hex(&h.finalize())
    }

    /// The secret that never changes with a rotation (SCRAM's parameters for unknown
    /// names).
    pub fn base(&self) -> &[u8] {
        &self.base
    }

    /// The key that seals and keys from now on.
    pub fn active(&self) -> &RingKey {
        self.keys
            .iter()
            .find(|k| k.id == self.active)
            .expect("the active key is in the ring (checked when made)")
    }

    /// A key by its number.
    pub fn get(&self, id: u32) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Every key, oldest first.
    pub fn keys(&self) -> &[RingKey] {
        &self.keys
    }

    /// The keys' numbers, oldest first.
    pub fn ids(&self) -> Vec<u32> {
        self.keys.iter().map(|k| k.id).collect()
    }

    /// Adds a new random key, not active yet (numbered after every key the ring has
    /// held: a retired number is never reused while a newer one exists). Its number.
    pub fn add_key(&mut self) -> Option<u32> {
        let id = self.keys.iter().map(|k| k.id).max().unwrap_or(0) + 1;
        self.keys.push(RingKey {
            id,
            secret: random_secret()?,
        });
        Some(id)
    }

    /// Seals and keys with key `id` from now on.
    pub fn activate(&mut self, id: u32) -> Result<(), RingError> {
        if self.get(id).is_none() {
            return Err(RingError::Incomplete("no such key in the ring"));
        }
        self.active = id;
        Ok(())
    }

    /// Removes key `id` (never the active one).
    pub fn remove(&mut self, id: u32) -> Result<(), RingError> {
        if id == self.active {
            return Err(RingError::Incomplete("the active key cannot be retired"));
        }
        let before = self.keys.len();
        self.keys.retain(|k| k.id != id);
        if self.keys.len() == before {
            return Err(RingError::Incomplete("no such key in the ring"));
        }
        Ok(())
    }
}

/// What TOTP keys are sealed for.
pub const TOTP_PURPOSE: &[u8] = b"poplar totp secret encryption v1";

/// What is sealed, opened and keyed with, derived from one version of the ring.
pub struct KeySet {
    ring: KeyRing,
    /// APOP secrets.
    pub apop: crate::apop::ApopVault,
    /// TOTP keys.
    pub totp: crate::apop::ApopVault,
    /// App passwords and recovery codes.
    pub codes: crate::mfa::CodeHasher,
}

impl KeySet {
    fn of(ring: KeyRing) -> Self {
        KeySet {
            apop: crate::apop::ApopVault::from_ring(&ring, crate::apop::APOP_PURPOSE),
            totp: crate::apop::ApopVault::from_ring(&ring, TOTP_PURPOSE),
            codes: crate::mfa::CodeHasher::from_ring(&ring),
            ring,
        }
    }

    /// The ring these keys come from.
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }
}

/// Reads the ring again from where it came from (the key file).
pub type Reread = Box<dyn Fn() -> Option<KeyRing> + Send + Sync>;

/// The key ring in force, shared by everything that seals or keys: replaced whole when
/// the ring changes (a rotation adds or activates a key; the file watcher, a SIGHUP or
/// a value naming a key not known yet has it read again), never changed in place.
pub struct Keys {
    set: std::sync::RwLock<std::sync::Arc<KeySet>>,
    reread: Option<Reread>,
    /// When the ring was last read again on a miss (at most once a second).
    last_reread: std::sync::Mutex<Option<std::time::Instant>>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("ring", self.current().ring())
            .finish_non_exhaustive()
    }
}

/// Why a ring read again was not put in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplaceError {
    /// Its base differs: another installation's ring, never this one's next version.
    #[error(
        "the key ring read again is another ring (fingerprint {0}), not a new version of this one"
    )]
    Other(String),
}

impl Keys {
    /// `ring` in force, never read again.
    pub fn new(ring: KeyRing) -> std::sync::Arc<Self> {
        Self::with_reread(ring, None)
    }

    /// `ring` in force; `reread` reads it again when a sealed value or a code names a
    /// key it does not hold (another node rotated).
    pub fn with_reread(ring: KeyRing, reread: Option<Reread>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Keys {
            set: std::sync::RwLock::new(std::sync::Arc::new(KeySet::of(ring))),
            reread,
            last_reread: std::sync::Mutex::new(None),
        })
    }

    /// The keys in force.
    pub fn current(&self) -> std::sync::Arc<KeySet> {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts a new version of the ring in force (same base: the same ring with keys
    /// added, activated or retired). `Ok(true)` if anything changed.
    pub fn replace(&self, ring: KeyRing) -> Result<bool, ReplaceError> {
        let mut set = self.set.write().unwrap_or_else(|e| e.into_inner());
        if ring.fingerprint() != set.ring.fingerprint() {
            return Err(ReplaceError::Other(ring.fingerprint()));
        }
        // The whole ring, secrets included: a key retired and another added under the
        // same number is a change too.
        if *ring.to_text() == *set.ring.to_text() {
            return Ok(false);
        }
        tracing::info!(
            keys = ?ring.ids(),
            active = ring.active().id(),
            "key ring reloaded"
        );
        *set = std::sync::Arc::new(KeySet::of(ring));
        Ok(true)
    }

    /// Reads the ring again after a miss (a value naming a key not held, a code not
    /// found), at most once a second; the keys in force afterwards, and whether they
    /// changed.
    pub fn refresh(&self) -> (std::sync::Arc<KeySet>, bool) {
        let Some(reread) = &self.reread else {
            return (self.current(), false);
        };
        {
            let mut last = self.last_reread.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1)) {
                return (self.current(), false);
            }
            *last = Some(std::time::Instant::now());
        }
        let changed = reread().is_some_and(|ring| self.replace(ring).unwrap_or(false));
        (self.current(), changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_debug_without_keys() {
        let ring = KeyRing::generate().unwrap();
        let text = ring.to_text();
        let back = KeyRing::parse(&text).unwrap();
        assert_eq!(back.fingerprint(), ring.fingerprint());
        assert_eq!(back.active().secret(), ring.active().secret());
        assert_eq!(back.ids(), vec![1]);
        let debug = format!("{ring:?}");
        assert!(!debug.contains(&hex(ring.active().secret())), "{debug}");
        assert!(!debug.contains(&hex(ring.base())), "{debug}");
    }

    #[test]
    fn keys_are_added_activated_and_retired_but_never_the_active_one() {
        let mut ring = KeyRing::generate().unwrap();
        let fingerprint = ring.fingerprint();
        let two = ring.add_key().unwrap();
        assert_eq!((two, ring.active().id()), (2, 1), "added, not active");
        ring.activate(2).unwrap();
        assert!(ring.activate(7).is_err());
        assert!(ring.remove(2).is_err(), "the active key stays");
        ring.remove(1).unwrap();
        assert_eq!(ring.ids(), vec![2]);
        assert_eq!(ring.add_key(), Some(3), "numbers are not reused");
        assert_eq!(ring.fingerprint(), fingerprint, "the same ring throughout");
        let back = KeyRing::parse(&ring.to_text()).unwrap();
        assert_eq!((back.ids(), back.active().id()), (vec![2, 3], 2));
    }

    #[test]
    fn a_new_version_of_the_ring_replaces_the_keys_in_force_another_ring_never() {
        let mut ring = KeyRing::generate().unwrap();
        let keys = Keys::new(ring.clone());
        let sealed_under_1 = keys.current().totp.seal("alice", "SECRET").unwrap();
        assert!(sealed_under_1.starts_with("v1:"));
        ring.add_key().unwrap();
        ring.activate(2).unwrap();
        assert!(keys.replace(ring.clone()).unwrap());
        assert!(!keys.replace(ring.clone()).unwrap(), "nothing new");
        let set = keys.current();
        let sealed_under_2 = set.totp.seal("alice", "SECRET").unwrap();
        assert!(sealed_under_2.starts_with("v2:2:"), "{sealed_under_2}");
        for sealed in [&sealed_under_1, &sealed_under_2] {
            assert_eq!(set.totp.open("alice", sealed).unwrap().as_str(), "SECRET");
            assert!(set.apop.open("alice", sealed).is_none(), "purposes apart");
        }
        let app = set.codes.hash("app", "abcd");
        assert!(app.starts_with("k2:") && set.codes.is_current(&app));
        let old = set.codes.candidates("app", "abcd");
        assert_eq!(old.len(), 2);
        assert_eq!(old[0], app, "the active key first");
        assert!(!set.codes.is_current(&old[1]) && !old[1].contains(':'));
        let other = KeyRing::generate().unwrap();
        assert!(keys.replace(other).is_err());
        // Retired: what was sealed under key 1 no longer opens.
        ring.remove(1).unwrap();
        keys.replace(ring).unwrap();
        assert!(keys.current().totp.open("alice", &sealed_under_1).is_none());
    }

    #[test]
    fn an_adopted_key_stays_what_it_was() {
        let legacy = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let ring = KeyRing::adopt(legacy).unwrap();
        assert_eq!(hex(ring.active().secret()), legacy);
        assert_eq!(
            hex(ring.base()),
            legacy,
            "SCRAM fakes keep their parameters"
        );
        assert!(ring.holds_legacy(legacy));
        assert!(!KeyRing::generate().unwrap().holds_legacy(legacy));
        assert!(KeyRing::adopt("not hex").is_none());
    }

    #[test]
    fn bad_rings_are_refused_without_quoting_a_key() {
        let k = "ab".repeat(32);
        let ok = format!("poplar-keys v1\nbase {k}\nkey 1 {k}\nkey 2 {k}\nactive 2\n");
        assert_eq!(KeyRing::parse(&ok).unwrap().active().id(), 2);
        let cases = [
            (format!("base {k}\nkey 1 {k}\n"), RingError::Header),
            (
                format!("poplar-keys v1\nbase {k}\nkey 1 zz{k}\n"),
                RingError::Secret(3),
            ),
            (
                format!("poplar-keys v1\nbase {k}\nkey 1 {k}\nkey 1 {k}\n"),
                RingError::Twice(4),
            ),
            (
                format!("poplar-keys v1\nkey 1 {k}\n"),
                RingError::Incomplete("no base line"),
            ),
            (
                format!("poplar-keys v1\nbase {k}\nkey 1 {k}\nactive 3\n"),
                RingError::Incomplete("the active key is not in the ring"),
            ),
            (
                format!("poplar-keys v1\nbase {k}\nkey 1 {k}\nsecret {k}\n"),
                RingError::Line(4),
            ),
        ];
        for (text, want) in cases {
            let err = KeyRing::parse(&text).err().unwrap();
            assert_eq!(err, want);
            assert!(!err.to_string().contains(&k));
        }
        // Without `active`, the newest key seals.
        let newest = format!("poplar-keys v1\nbase {k}\nkey 1 {k}\nkey 4 {k}\n");
        assert_eq!(KeyRing::parse(&newest).unwrap().active().id(), 4);
    }
}
