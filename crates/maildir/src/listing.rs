//! A per-maildrop cache of the whole listing, trusted only while the Maildir has not
//! changed, so a warm sign-in neither lists nor stats the message files.
//!
//! Every delivery, rename (flag change, `new/` to `cur/`) and deletion in a Maildir
//! changes the modification time of `new/` or `cur/`. `poplar-listing` records both
//! times with the listing made from them; while they are unchanged the listing is
//! still true. It is written only when both times are at least [`SETTLE`] older than
//! the scan, so a change landing in the same clock tick as the scan cannot hide behind
//! an unchanged time. Unreadable or stale, it is ignored; it is only a cache.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The cache file's name in the Maildir root.
pub const LISTING_CACHE: &str = "poplar-listing";

/// How long the directories must have been quiet before a listing is cached.
const SETTLE: Duration = Duration::from_secs(2);

/// The modification times of `new/` and `cur/`, in nanoseconds (0 when missing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirTimes([i128; 2]);

impl DirTimes {
    pub(crate) fn read(root: &Path) -> Self {
        let time = |dir: &str| {
            fs::metadata(root.join(dir)).map_or(0, |m| {
                i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
            })
        };
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

/// One cached message: what the scan would have found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachedFile {
    pub mtime: i64,
    pub size: u64,
    pub path: PathBuf,
}

/// The cached listing, if it was made from exactly these directory times.
pub(crate) fn load(root: &Path, times: DirTimes) -> Option<Vec<CachedFile>> {
    let text = fs::read_to_string(root.join(LISTING_CACHE)).ok()?;
    let mut lines = text.lines();
    if lines.next()? != header(times) {
        return None;
    }
    lines
        .map(|line| {
            let mut f = line.splitn(3, '\t');
            let mtime = f.next()?.parse().ok()?;
            let size = f.next()?.parse().ok()?;
            let rel = f.next()?;
            // Only names inside new/ or cur/, never a path that leaves the Maildir.
            let (dir, name) = rel.split_once('/')?;
            if !matches!(dir, "new" | "cur") || name.is_empty() || name.contains('/') {
                return None;
            }
            Some(CachedFile {
                mtime,
                size,
                path: root.join(dir).join(name),
            })
        })
        .collect()
}

/// Stores a listing made while the directories had `times`, if they had settled.
pub(crate) fn save(root: &Path, times: DirTimes, started: SystemTime, files: &[CachedFile]) {
    if !times.settled(started) {
        return;
    }
    let mut text = header(times);
    text.push('\n');
    for f in files {
        let (Some(name), Some(dir)) = (
            f.path.file_name().and_then(|n| n.to_str()),
            f.path
                .parent()
                .and_then(|d| d.file_name())
                .and_then(|d| d.to_str()),
        ) else {
            return;
        };
        if name.contains(['\t', '\n']) {
            return;
        }
        text.push_str(&format!("{}\t{}\t{dir}/{name}\n", f.mtime, f.size));
    }
    let tmp = root.join(format!(".{LISTING_CACHE}.tmp"));
    let written = fs::File::create(&tmp)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| fs::rename(&tmp, root.join(LISTING_CACHE)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
}

fn header(times: DirTimes) -> String {
    format!("poplar-listing v1 {} {}", times.0[0], times.0[1])
}
