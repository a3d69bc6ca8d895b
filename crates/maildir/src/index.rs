//! A per-maildrop cache of message sizes, so a warm sign-in reads no message files.
//!
//! Postfix and many delivery agents write no `,S=`/`,W=` size fields, so the POP3 size
//! of each message would have to be counted by reading it at every sign-in. Maildir
//! messages never change once delivered, so a size counted once stays true for the
//! same unique name and file length. `poplar-sizes` in the Maildir keeps
//! `unique<TAB>file length<TAB>POP3 size` lines; an entry is used only while the file
//! still has that length, and the file is rewritten (atomically) when the scan counted
//! anything new or found entries for messages that are gone. It is only a cache:
//! unreadable or garbled, it is ignored, and failing to write it costs speed only.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::Path;

/// The cache file's name in the Maildir root.
pub const SIZE_INDEX: &str = "poplar-sizes";

/// Sizes known from the last scan, and what this scan learns.
#[derive(Debug, Default)]
pub(crate) struct SizeIndex {
    known: HashMap<String, (u64, u64)>,
    used: HashMap<String, (u64, u64)>,
    changed: bool,
}

impl SizeIndex {
    /// Reads the cache; anything unreadable is simply not known.
    pub(crate) fn load(root: &Path) -> Self {
        let mut known = HashMap::new();
        if let Ok(text) = fs::read_to_string(root.join(SIZE_INDEX)) {
            for line in text.lines() {
                let mut f = line.split('\t');
                if let (Some(u), Some(Ok(len)), Some(Ok(size)), None) = (
                    f.next(),
                    f.next().map(str::parse),
                    f.next().map(str::parse),
                    f.next(),
                ) {
                    known.insert(u.to_owned(), (len, size));
                }
            }
        }
        Self {
            known,
            ..Self::default()
        }
    }

    /// The cached size of `unique` if the file still has length `len` and the size is
    /// one a file of that length can have (every octet an LF, plus the final CRLF).
    pub(crate) fn get(&mut self, unique: &str, len: u64) -> Option<u64> {
        let (l, size) = *self.known.get(unique)?;
        let possible = size <= len.saturating_mul(2).saturating_add(2);
        (l == len && possible).then(|| {
            self.used.insert(unique.to_owned(), (len, size));
            size
        })
    }

    /// Records a size counted by reading the file.
    pub(crate) fn insert(&mut self, unique: &str, len: u64, size: u64) {
        self.used.insert(unique.to_owned(), (len, size));
        self.changed = true;
    }

    /// Forgets what a scan attempt recorded (the scan starts over).
    pub(crate) fn restart(&mut self) {
        self.used.clear();
    }

    /// Writes the cache if it changed: only the messages this scan saw.
    pub(crate) fn save(self, root: &Path) {
        let stale = self.known.keys().any(|k| !self.used.contains_key(k));
        if !(self.changed || stale) {
            return;
        }
        let mut text = String::with_capacity(self.used.len() * 64);
        for (unique, (len, size)) in &self.used {
            // Unique parts never hold tabs or newlines in practice; skip any that do.
            if !unique.contains(['\t', '\n']) {
                text.push_str(&format!("{unique}\t{len}\t{size}\n"));
            }
        }
        let tmp = root.join(format!(".{SIZE_INDEX}.tmp"));
        let written = fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .and_then(|()| fs::rename(&tmp, root.join(SIZE_INDEX)));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}
