//! Unique-id listings (RFC 1939 section 7): stable, valid and distinct UIDLs.
//!
//! A UIDL is 1 to 70 characters in 0x21..=0x7E and must stay the same for a message
//! across sessions. Poplar uses the Maildir unique part when it is valid, a hash of it
//! otherwise, and lets a per-maildrop override file (`poplar-uidl`, lines
//! `<unique> <uidl>`) keep the UIDLs a previous POP3 server handed out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Name of the override file in the Maildir root.
pub(crate) const OVERRIDE_FILE: &str = "poplar-uidl";

/// Whether `uidl` is a valid RFC 1939 unique-id: 1..=70 octets in 0x21..=0x7E.
pub fn is_valid_uidl(uidl: &str) -> bool {
    (1..=70).contains(&uidl.len()) && uidl.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Lowercase hex of SHA-256 over `parts` (joined by '\n'), truncated to 40 characters.
pub(crate) fn hash_uidl(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hasher.update(b"\n");
        }
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    digest[..20].iter().map(|b| format!("{b:02x}")).collect()
}

/// The UIDL a unique part gets without overrides or collisions.
pub(crate) fn natural_uidl(unique: &str) -> String {
    if is_valid_uidl(unique) {
        unique.to_owned()
    } else {
        hash_uidl(&[unique])
    }
}

/// Reads the override map; a missing file is an empty map. Malformed lines and
/// invalid UIDLs are ignored, so a damaged file never blocks a maildrop.
pub(crate) fn load_overrides(root: &Path) -> io::Result<HashMap<String, String>> {
    let text = match fs::read(root.join(OVERRIDE_FILE)) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(e),
    };
    let mut map = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_ascii_whitespace();
        if let (Some(unique), Some(uidl), None) = (words.next(), words.next(), words.next())
            && is_valid_uidl(uidl)
        {
            map.insert(unique.to_owned(), uidl.to_owned());
        }
    }
    Ok(map)
}

/// Merges `pairs` (unique, uidl) into the override file, replacing it atomically.
pub(crate) fn save_overrides(root: &Path, pairs: &[(String, String)]) -> io::Result<()> {
    for (unique, uidl) in pairs {
        let bad_unique = unique.is_empty()
            || unique.starts_with('#')
            || unique.chars().any(|c| c.is_whitespace() || c.is_control());
        if bad_unique || !is_valid_uidl(uidl) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "UIDL override pair is not valid",
            ));
        }
    }
    let mut merged: BTreeMap<String, String> = load_overrides(root)?.into_iter().collect();
    merged.extend(pairs.iter().cloned());
    let mut text = String::from("# unique-part uidl, written by poplar\n");
    for (unique, uidl) in &merged {
        text.push_str(unique);
        text.push(' ');
        text.push_str(uidl);
        text.push('\n');
    }
    crate::atomic::replace(root, OVERRIDE_FILE, &text)
}

/// Hands out UIDLs for one scan, in scan order, so that every UIDL is distinct.
pub(crate) struct UidlAssigner<'a> {
    overrides: &'a HashMap<String, String>,
    used: HashSet<String>,
}

impl<'a> UidlAssigner<'a> {
    pub(crate) fn new(overrides: &'a HashMap<String, String>) -> Self {
        Self {
            overrides,
            used: HashSet::new(),
        }
    }

    /// The UIDL for a message with this unique part and file base name (before `:`).
    /// The first message keeps its override or natural UIDL; a later one whose UIDL is
    /// taken gets a hash of its unique part and base name (plus a counter if needed).
    pub(crate) fn assign(&mut self, unique: &str, base: &str) -> String {
        let preferred = match self.overrides.get(unique) {
            Some(uidl) => uidl.clone(),
            None => natural_uidl(unique),
        };
        let mut candidate = preferred;
        let mut attempt = 0u64;
        while self.used.contains(&candidate) {
            candidate = if attempt == 0 {
                hash_uidl(&[unique, base])
            } else {
                hash_uidl(&[unique, base, &attempt.to_string()])
            };
            attempt += 1;
        }
        self.used.insert(candidate.clone());
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity() {
        assert!(is_valid_uidl("1700000000.M1P2.host"));
        assert!(is_valid_uidl(&"x".repeat(70)));
        assert!(!is_valid_uidl(&"x".repeat(71)));
        assert!(!is_valid_uidl(""));
        assert!(!is_valid_uidl("a b"));
        assert!(!is_valid_uidl("caf\u{e9}"));
    }

    #[test]
    fn long_or_odd_names_are_hashed() {
        let long = "y".repeat(80);
        let h = natural_uidl(&long);
        assert_eq!(h.len(), 40);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(h, natural_uidl(&long), "stable");
        // SHA-256("abc") starts with ba7816bf...
        assert_eq!(
            hash_uidl(&["abc"]),
            "ba7816bf8f01cfea414140de5dae2223b00361a3"
        );
        assert_eq!(natural_uidl("a b").len(), 40);
        assert_eq!(natural_uidl("ok.1"), "ok.1");
    }

    #[test]
    fn duplicates_get_distinct_uidls() {
        let mut overrides = HashMap::new();
        overrides.insert("b".to_owned(), "a".to_owned());
        let mut a = UidlAssigner::new(&overrides);
        assert_eq!(a.assign("a", "a,S=1"), "a");
        let second = a.assign("a", "a,S=2");
        assert_eq!(second, hash_uidl(&["a", "a,S=2"]));
        // An override colliding with a UIDL already given is replaced by a hash.
        let third = a.assign("b", "b");
        assert_eq!(third, hash_uidl(&["b", "b"]));
        let fourth = a.assign("a", "a,S=2");
        assert!(![String::from("a"), second, third].contains(&fourth));
    }

    #[test]
    fn overrides_round_trip_and_ignore_junk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        assert!(load_overrides(root).expect("load").is_empty());
        fs::write(
            root.join(OVERRIDE_FILE),
            "# comment\n\nu1 old1\nmalformed\nu2 has three words\nu3 \u{e9}\n",
        )
        .expect("write");
        let map = load_overrides(root).expect("load");
        assert_eq!(map.len(), 1);
        assert_eq!(map["u1"], "old1");
        save_overrides(
            root,
            &[("u1".into(), "new1".into()), ("u4".into(), "x4".into())],
        )
        .expect("save");
        let map = load_overrides(root).expect("load");
        assert_eq!((map["u1"].as_str(), map["u4"].as_str()), ("new1", "x4"));
        assert!(save_overrides(root, &[("u 5".into(), "x".into())]).is_err());
        assert!(save_overrides(root, &[("u5".into(), "".into())]).is_err());
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(root).expect("read_dir").collect();
        assert_eq!(names.len(), 1);
    }
}
