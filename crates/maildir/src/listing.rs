//! A per-maildrop cache of the finished listing, trusted only while the Maildir has not
//! changed, so a warm sign-in neither lists, stats, sorts nor numbers the message files.
//!
//! Every delivery, rename (flag change, `new/` to `cur/`) and deletion in a Maildir
//! changes the modification time of `new/` or `cur/`. `poplar-listing` records both
//! times, and the state of the UIDL override file (`poplar-uidl`), with the listing
//! made from them: messages in maildrop order with their POP3 sizes and UIDLs. While
//! all three are unchanged the listing is still true. It is written only when both
//! times are at least [`SETTLE`] older than the scan, so a change landing in the same
//! clock tick as the scan cannot hide behind an unchanged time. Unreadable, stale or
//! malformed in any line, it is ignored as a whole; it is only a cache.
//!
//! Format (version 3): a header line `poplar-listing v3 <new/ mtime ns> <cur/ mtime ns>
//! <override stamp> <number of messages>`, then one line per message, `<size>\t<uidl>\t<new|cur>/<file name>`.
//! Version 2 files are ignored: they may hold a size believed from an implausible
//! `,S=`/`,W=` name (see `scan::MAX_UNCHECKED_SIZE`).

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::MessageEntry;
use crate::name::is_hidden;
use crate::uidl::{OVERRIDE_FILE, is_valid_uidl};

/// The cache file's name in the Maildir root.
pub const LISTING_CACHE: &str = "poplar-listing";

/// How long the directories must have been quiet before a listing is cached.
const SETTLE: Duration = Duration::from_secs(2);

/// The modification times of `new/` and `cur/`, in nanoseconds (0 when missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirTimes([i128; 2]);

impl DirTimes {
    pub(crate) fn read(root: &Path) -> Self {
        let time = |dir: &str| fs::metadata(root.join(dir)).map_or(0, |m| nanos(&m));
        Self([time("new"), time("cur")])
    }

    /// Both directories were last changed at least [`SETTLE`] before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        self.0.iter().all(|&t| now - t >= SETTLE.as_nanos() as i128)
    }
}

fn nanos(m: &fs::Metadata) -> i128 {
    i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
}

/// Everything a listing is made from besides the file names themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    times: DirTimes,
    /// `-` without an override file, else its modification time, length and inode
    /// (it is always replaced by rename, so any change shows in one of them).
    overrides: String,
}

impl Source {
    /// Read before the override file's content and the directories are: a change
    /// made meanwhile then makes the cache stale rather than wrong.
    pub(crate) fn read(root: &Path) -> io::Result<Self> {
        // Followed like the reading of the file follows it.
        let overrides = match fs::metadata(root.join(OVERRIDE_FILE)) {
            Ok(m) => format!("{}.{}.{}", nanos(&m), m.len(), m.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => "-".to_owned(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            times: DirTimes::read(root),
            overrides,
        })
    }

    /// Whether the directories still have the times this source saw.
    pub(crate) fn still_matches(&self, root: &Path) -> bool {
        DirTimes::read(root) == self.times
    }

    fn header(&self) -> String {
        format!(
            "poplar-listing v3 {} {} {}",
            self.times.0[0], self.times.0[1], self.overrides
        )
    }
}

/// The cached listing, if it was made from exactly this source and every line is sound.
pub(crate) fn load(root: &Path, source: &Source) -> Option<Vec<MessageEntry>> {
    let text = fs::read_to_string(root.join(LISTING_CACHE)).ok()?;
    let (head, body) = text.split_once('\n')?;
    // The header ends with the number of lines: a file cut short is never trusted.
    let count: usize = head
        .strip_prefix(&source.header())?
        .strip_prefix(' ')?
        .parse()
        .ok()?;
    if !(body.is_empty() || body.ends_with('\n')) || count_lines(body.as_bytes()) != count {
        return None;
    }
    let root = root.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(count);
    for line in body.split_terminator('\n') {
        let mut f = line.splitn(3, '\t');
        let size = f.next()?.parse().ok()?;
        let uidl = f.next()?;
        let rel = f.next()?;
        // Only names inside new/ or cur/, never a path that leaves the Maildir.
        let (dir, name) = rel.split_once('/')?;
        if !matches!(dir, "new" | "cur") || name.is_empty() || name.contains('/') || is_hidden(name)
        {
            return None;
        }
        if !is_valid_uidl(uidl) {
            return None;
        }
        let mut path = Vec::with_capacity(root.len() + 1 + rel.len());
        path.extend_from_slice(root);
        path.push(b'/');
        path.extend_from_slice(rel.as_bytes());
        out.push(MessageEntry {
            uidl: uidl.to_owned(),
            size,
            path: PathBuf::from(std::ffi::OsString::from_vec(path)),
        });
    }
    Some(out)
}

fn count_lines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// Stores a listing made from `source`, if its directories had settled by `started`.
pub(crate) fn save(root: &Path, source: &Source, started: SystemTime, entries: &[MessageEntry]) {
    if !source.times.settled(started) {
        return;
    }
    let mut text = Vec::with_capacity(64 + entries.len() * 64);
    text.extend_from_slice(source.header().as_bytes());
    text.push(b' ');
    pop3_proto::response::push_decimal(&mut text, entries.len() as u64);
    text.push(b'\n');
    for e in entries {
        // The last two components of the path: `new|cur` and the file name, which
        // must be UTF-8 without tabs or line breaks (else nothing is cached).
        let path = e.path.as_os_str().as_bytes();
        let Some(slash) = path.iter().rposition(|&b| b == b'/') else {
            return;
        };
        let (rel, name) = (&path[slash.saturating_sub(3)..], &path[slash + 1..]);
        if !(rel.starts_with(b"new/") || rel.starts_with(b"cur/"))
            || slash < 4
            || path[slash - 4] != b'/'
            || name.contains(&b'\t')
            || name.contains(&b'\n')
            || !(name.is_ascii() || std::str::from_utf8(name).is_ok())
        {
            return;
        }
        pop3_proto::response::push_decimal(&mut text, e.size);
        text.push(b'\t');
        text.extend_from_slice(e.uidl.as_bytes());
        text.push(b'\t');
        text.extend_from_slice(rel);
        text.push(b'\n');
    }
    let tmp = root.join(format!(".{LISTING_CACHE}.tmp"));
    let written = fs::File::create(&tmp)
        .and_then(|mut file| file.write_all(&text))
        .and_then(|()| fs::rename(&tmp, root.join(LISTING_CACHE)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
}
