//! Scanning `new/` and `cur/` into one POP3 maildrop listing (RFC 1939 sections 5, 7).
//!
//! The listing is ordered by (modification time in whole seconds, unique part, path):
//! delivery agents set the mtime at delivery and renames by other programs keep it, so
//! message numbers and UIDLs stay stable from one session to the next.

use std::collections::HashSet;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::index::SizeIndex;
use crate::listing::{self, CachedFile, DirTimes};
use crate::name::{is_hidden, parse_name};
use crate::size::{CHUNK, crlf_size};
use crate::uidl::{UidlAssigner, load_overrides};
use crate::{Maildir, MessageEntry, StoreError};

/// The two directories that hold messages, in the order they are read: a message moved
/// from `new/` to `cur/` while scanning is then seen twice (and de-duplicated by inode)
/// rather than missed.
pub(crate) const MESSAGE_DIRS: [&str; 2] = ["new", "cur"];

/// The entries of `new/` and `cur/` with their names, hidden ones left out; a missing
/// directory counts as empty.
pub(crate) fn message_entries(root: &Path) -> io::Result<Vec<(fs::DirEntry, String)>> {
    let mut out = Vec::new();
    for dir in MESSAGE_DIRS {
        let entries = match fs::read_dir(root.join(dir)) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_hidden(&name) {
                out.push((entry, name));
            }
        }
    }
    Ok(out)
}

/// How often a scan is redone when files vanished under it (usually renamed by another
/// program, which would otherwise hide them from this session).
const SCAN_ATTEMPTS: usize = 3;

/// `O_NOFOLLOW | O_NONBLOCK` where their values are the generic Linux ones, so a
/// symlink is never followed and a FIFO swapped in never blocks the open. Elsewhere the
/// inode check in [`open_regular`] alone guards the open.
const OPEN_FLAGS: i32 = if cfg!(all(
    target_os = "linux",
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "loongarch64"
    )
)) {
    0o400000 | 0o4000
} else {
    0
};

/// Opens `path` for reading only if it is still the regular file `expected` described.
/// A file replaced in between (by a symlink or anything else) reads as `NotFound`.
pub(crate) fn open_regular(path: &Path, expected: &Metadata) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_file() && meta.dev() == expected.dev() && meta.ino() == expected.ino() {
        Ok(file)
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "message file was replaced",
        ))
    }
}

/// One message file found by a scan, before UIDLs are assigned.
struct Found {
    mtime: i64,
    unique: String,
    base: String,
    size: u64,
    path: PathBuf,
}

impl Maildir {
    /// One consistent snapshot of `new/` and `cur/` read as one maildrop.
    ///
    /// Hidden files (starting with `.`) and anything but regular files are skipped;
    /// symlinks are not followed. Files that vanish while scanning are skipped (after up
    /// to two rescans, since a vanished file has usually just been renamed). A missing
    /// `new/` or `cur/` reads as empty, so a Maildir not yet created is an empty maildrop.
    pub fn scan(&self) -> Result<Vec<MessageEntry>, StoreError> {
        let overrides = load_overrides(&self.root)?;
        let started = std::time::SystemTime::now();
        let times = DirTimes::read(&self.root);
        let cached = listing::load(&self.root, times);
        let from_cache = cached.is_some();
        let mut found: Vec<Found> = match cached {
            Some(cached) => cached
                .into_iter()
                .map(|c| {
                    let name = c.path.file_name().map(|n| n.to_string_lossy().into_owned());
                    let parts = parse_name(name.as_deref().unwrap_or_default());
                    Found {
                        mtime: c.mtime,
                        base: parts.base.to_owned(),
                        unique: parts.unique,
                        size: c.size,
                        path: c.path,
                    }
                })
                .collect(),
            None => self.scan_files()?,
        };
        // Saved in this order, a cached listing comes back already sorted.
        found.sort_by(|a, b| (a.mtime, &a.unique, &a.path).cmp(&(b.mtime, &b.unique, &b.path)));
        // Cache only a listing the directories still match after the scan.
        if !from_cache && DirTimes::read(&self.root) == times {
            let files: Vec<CachedFile> = found
                .iter()
                .map(|f| CachedFile {
                    mtime: f.mtime,
                    size: f.size,
                    path: f.path.clone(),
                })
                .collect();
            listing::save(&self.root, times, started, &files);
        }
        let mut uidls = UidlAssigner::new(overrides);
        Ok(found
            .into_iter()
            .map(|f| MessageEntry {
                uidl: uidls.assign(&f.unique, &f.base),
                unique: f.unique,
                size: f.size,
                path: f.path,
            })
            .collect())
    }

    /// Lists and sizes every message file (the listing cache missed).
    fn scan_files(&self) -> Result<Vec<Found>, StoreError> {
        let mut buf = vec![0u8; CHUNK];
        let mut found = Vec::new();
        let mut sizes = SizeIndex::load(&self.root);
        for _ in 0..SCAN_ATTEMPTS {
            found.clear();
            sizes.restart();
            if !self.scan_once(&mut buf, &mut found, &mut sizes)? {
                break;
            }
        }
        sizes.save(&self.root);
        Ok(found)
    }

    /// Reads both directories into `found`; returns whether any file vanished meanwhile.
    fn scan_once(
        &self,
        buf: &mut [u8],
        found: &mut Vec<Found>,
        sizes: &mut SizeIndex,
    ) -> io::Result<bool> {
        let mut vanished = false;
        let mut seen = HashSet::new();
        for (entry, name) in message_entries(&self.root)? {
            let path = entry.path();
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    vanished = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Same inode twice: renamed from new/ to cur/ during this scan.
            if !meta.is_file() || !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            let parts = parse_name(&name);
            let size = match (parts.size, parts.vsize) {
                // Trust the name only when its file size is right and its CRLF size
                // is possible for that file size.
                (Some(s), Some(w)) if s == meta.len() && s <= w && w <= s.saturating_mul(2) => w,
                _ => match sizes.get(&parts.unique, meta.len()) {
                    Some(size) => size,
                    None => {
                        match open_regular(&path, &meta).and_then(|mut f| crlf_size(&mut f, buf)) {
                            Ok(size) => {
                                sizes.insert(&parts.unique, meta.len(), size);
                                size
                            }
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                vanished = true;
                                continue;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                },
            };
            found.push(Found {
                mtime: meta.mtime(),
                base: parts.base.to_owned(),
                unique: parts.unique,
                size,
                path,
            });
        }
        Ok(vanished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{maildir, put};

    #[test]
    fn scans_new_and_cur_in_stable_order() {
        let (_dir, md) = maildir();
        put(&md, "cur/200.b.host:2,S", b"b\n", 200);
        put(&md, "new/100.z.host", b"z\r\n", 100);
        put(&md, "new/200.a.host", b"a\nmore", 200);
        put(&md, "cur/.hidden", b"x", 50);
        fs::create_dir(md.root().join("cur/subdir")).expect("mkdir");
        std::os::unix::fs::symlink(md.root().join("new/100.z.host"), md.root().join("cur/9.l"))
            .expect("symlink");
        let list = md.scan().expect("scan");
        let uidls: Vec<_> = list.iter().map(|e| e.uidl.as_str()).collect();
        assert_eq!(uidls, ["100.z.host", "200.a.host", "200.b.host"]);
        let sizes: Vec<_> = list.iter().map(|e| e.size).collect();
        assert_eq!(sizes, [3, 9, 3]);
        assert_eq!(list[2].path, md.root().join("cur/200.b.host:2,S"));
    }

    #[test]
    fn open_regular_refuses_a_swapped_file() {
        let (_dir, md) = maildir();
        let a = put(&md, "cur/1.a.host", b"a", 1);
        let b = put(&md, "cur/2.b.host", b"b", 2);
        let meta_a = fs::symlink_metadata(&a).expect("lstat");
        assert!(open_regular(&a, &meta_a).is_ok());
        let err = open_regular(&b, &meta_a).expect_err("other inode");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        fs::remove_file(&a).expect("rm");
        std::os::unix::fs::symlink(&b, &a).expect("symlink");
        assert!(open_regular(&a, &meta_a).is_err());
    }

    #[test]
    fn missing_maildir_is_empty() {
        let md = Maildir::new("/nonexistent/poplar/Maildir");
        assert!(md.scan().expect("scan").is_empty());
    }

    #[test]
    fn trusts_w_only_when_s_matches() {
        let (_dir, md) = maildir();
        put(&md, "cur/1.a.host,S=4,W=6:2,", b"a\nb\n", 1);
        put(&md, "cur/2.b.host,S=5,W=99:2,", b"a\nb\n", 2);
        put(&md, "cur/3.c.host,S=4,W=99:2,", b"a\nb\n", 3);
        put(&md, "cur/4.d.host,S=4,W=5", b"abcd", 4);
        let list = md.scan().expect("scan");
        let sizes: Vec<_> = list.iter().map(|e| e.size).collect();
        // Wrong S, and impossible W: the file is counted instead.
        assert_eq!(sizes, [6, 6, 6, 5]);
        assert_eq!(list[0].unique, "1.a.host");
    }

    #[test]
    fn uidl_survives_flag_rename_and_move_to_cur() {
        let (_dir, md) = maildir();
        let old = put(&md, "new/300.x.host,S=2", b"x\n", 300);
        put(&md, "new/301.y.host", b"y\n", 301);
        let before = md.scan().expect("scan");
        fs::rename(&old, md.root().join("cur/300.x.host,S=2:2,S")).expect("rename");
        let after = md.scan().expect("scan");
        let ids = |l: &[MessageEntry]| l.iter().map(|e| e.uidl.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&before), ids(&after));
        assert_eq!(after[0].path, md.root().join("cur/300.x.host,S=2:2,S"));
    }

    #[test]
    fn duplicate_uniques_and_overrides() {
        let (_dir, md) = maildir();
        put(&md, "new/5.dup.host,S=1", b"1", 5);
        put(&md, "cur/5.dup.host,S=2:2,", b"22", 5);
        let long = format!("6.{}.host", "l".repeat(80));
        put(&md, &format!("cur/{long}:2,S"), b"", 6);
        put(&md, "cur/7.o.host:2,", b"o", 7);
        md.set_uidl_override(&[("7.o.host".into(), "legacy-7".into())])
            .expect("override");
        let list = md.scan().expect("scan");
        assert_eq!(list[0].uidl, "5.dup.host");
        assert_eq!(list[1].uidl.len(), 40);
        assert_eq!(list[2].uidl, crate::uidl::hash_uidl(&[&long]));
        assert_eq!(list[2].size, 0);
        assert_eq!(list[3].uidl, "legacy-7");
    }

    #[test]
    fn delivery_after_scan_is_not_in_it() {
        let (_dir, md) = maildir();
        md.deliver(b"first\n").expect("deliver");
        let list = md.scan().expect("scan");
        md.deliver(b"second\n").expect("deliver");
        assert_eq!(list.len(), 1);
        assert_eq!(md.scan().expect("scan").len(), 2);
    }
}

#[cfg(test)]
mod index_tests {
    use crate::index::SIZE_INDEX;
    use crate::test_support::{maildir, put};

    #[test]
    fn sizes_are_cached_and_checked_against_the_file_length() {
        let (_dir, md) = maildir();
        put(&md, "cur/1.a.host:2,S", b"a\nb\n", 100);
        put(&md, "new/2.b.host", b"ccc\n", 101);
        let first = md.scan().expect("scan");
        let index = std::fs::read_to_string(md.root().join(SIZE_INDEX)).expect("index");
        assert!(index.contains("1.a.host\t4\t6\n"), "{index}");
        // A poisoned entry with a wrong length is not trusted...
        std::fs::write(
            md.root().join(SIZE_INDEX),
            "1.a.host\t999\t1\n2.b.host\t4\t5\n",
        )
        .unwrap();
        let second = md.scan().expect("scan");
        assert_eq!(second[0].size, 6);
        // ...one with the right length is (the cache is what saves the reads).
        assert_eq!(second[1].size, 5);
        assert_eq!(first[1].size, 5);
        // Entries of deleted messages are dropped on the next scan.
        std::fs::remove_file(md.root().join("new/2.b.host")).unwrap();
        md.scan().expect("scan");
        let index = std::fs::read_to_string(md.root().join(SIZE_INDEX)).expect("index");
        assert!(!index.contains("2.b.host"), "{index}");
    }
}

#[cfg(test)]
mod listing_tests {
    use crate::listing::LISTING_CACHE;
    use crate::test_support::{maildir, put};
    use std::time::{Duration, SystemTime};

    fn age_dirs(root: &std::path::Path) {
        let old = SystemTime::now() - Duration::from_secs(100);
        for dir in ["new", "cur"] {
            let f = std::fs::File::open(root.join(dir)).expect("open dir");
            f.set_modified(old).expect("set mtime");
        }
    }

    #[test]
    fn a_quiet_maildrop_is_listed_from_the_cache_until_it_changes() {
        let (_dir, md) = maildir();
        put(&md, "cur/1.a.host:2,S", b"a\n", 100);
        put(&md, "new/2.b.host", b"bb\n", 101);
        // Just changed: not cached (a change in the same clock tick could hide).
        md.scan().expect("scan");
        assert!(!md.root().join(LISTING_CACHE).exists());
        age_dirs(md.root());
        let first = md.scan().expect("scan");
        let cache = md.root().join(LISTING_CACHE);
        let text = std::fs::read_to_string(&cache).expect("cache written");
        // Prove the next scan reads the cache: doctor a size in it.
        std::fs::write(
            &cache,
            text.replace("\t4\tnew/2.b.host", "\t77\tnew/2.b.host"),
        )
        .unwrap();
        let second = md.scan().expect("scan");
        assert_eq!(first[1].size, 4);
        assert_eq!(second[1].size, 77);
        assert_eq!(second[1].uidl, first[1].uidl);
        // A delivery changes new/: the cache no longer applies.
        put(&md, "new/3.c.host", b"c\n", 102);
        let third = md.scan().expect("scan");
        assert_eq!(third.len(), 3);
        assert_eq!(third[1].size, 4);
        // A cached path must stay inside new/ or cur/.
        age_dirs(md.root());
        md.scan().expect("scan");
        let text = std::fs::read_to_string(&cache).expect("cache");
        std::fs::write(&cache, text.replace("cur/1.a.host", "cur/../../etc/passwd")).unwrap();
        assert_eq!(md.scan().expect("scan").len(), 3);
        assert!(
            md.scan()
                .expect("scan")
                .iter()
                .all(|e| e.path.starts_with(md.root()))
        );
    }
}
