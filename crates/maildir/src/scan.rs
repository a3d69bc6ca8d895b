//! Scanning `new/` and `cur/` into one POP3 maildrop listing (RFC 1939 sections 5, 7).
//!
//! The listing is ordered by (delivery time in whole seconds, unique part, path). The
//! delivery time is the one a Maildir unique name starts with (`<seconds>.<rest>`, as
//! every delivery agent writes it), else the file's modification time: renames by other
//! programs keep both, so message numbers and UIDLs stay stable from one session to the
//! next, and a Maildir restored from a backup with fresh modification times keeps its
//! order.
//!
//! A name that carries its delivery time and Dovecot's `,S=`/`,W=` sizes (a plausible
//! pair: `S <= W <= 2 S`, with `W` at most [`MAX_UNCHECKED_SIZE`]) is listed without a
//! `stat`, as Dovecot does; for every other file the size is taken from the name if its
//! `S` is the file's length, else from the size cache or counted, against the file's
//! length. So every size in a listing is either at most [`MAX_UNCHECKED_SIZE`] or
//! bounded by the length of a real file (at most twice it, plus the final CRLF).

use std::collections::HashSet;
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirEntryExt as _, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::index::SizeIndex;
use crate::listing::{self, Source};
use crate::name::{is_hidden, parse_name};
use crate::size::{CHUNK, crlf_size};
use crate::uidl::{UidlAssigner, is_valid_uidl, load_overrides, natural_uidl};
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
        let Some(entries) = read_dir(root, dir)? else {
            continue;
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

/// `root/dir`'s entries; `None` if the directory does not exist.
fn read_dir(root: &Path, dir: &str) -> io::Result<Option<fs::ReadDir>> {
    match fs::read_dir(root.join(dir)) {
        Ok(entries) => Ok(Some(entries)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
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

/// The largest `,W=` size a name is believed for without a `stat`: 4 GiB. No mail
/// system comes near it (Postfix's default `message_size_limit` is 10 MB, common limits
/// are 25 to 150 MB), and `u64` totals of such sizes cannot overflow short of 2^32
/// messages. A name claiming more (`,S=18446744073709551615`) is stat'ed: its `W` is
/// used only if its `S` is the file's real length (so `W` is at most twice a real
/// length), else the file is counted. A real message over 4 GiB costs one `stat`.
pub(crate) const MAX_UNCHECKED_SIZE: u64 = 1 << 32;

/// One message file found by a scan, before UIDLs are assigned.
struct Found {
    /// Delivery time in seconds: from the name, else the modification time.
    time: i64,
    unique: String,
    size: u64,
    path: PathBuf,
}

/// The delivery time a Maildir unique name starts with: `<seconds>.` (at most 12
/// digits, so it fits and is a plausible time).
fn delivery_time(unique: &str) -> Option<i64> {
    let (secs, _) = unique.split_once('.')?;
    if secs.is_empty() || secs.len() > 12 || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    secs.parse().ok()
}

impl Maildir {
    /// One consistent snapshot of `new/` and `cur/` read as one maildrop.
    ///
    /// Hidden files (starting with `.`) and anything but regular files are skipped;
    /// symlinks are not followed. Files that vanish while scanning are skipped (after up
    /// to two rescans, since a vanished file has usually just been renamed). A missing
    /// `new/` or `cur/` reads as empty, so a Maildir not yet created is an empty maildrop.
    pub fn scan(&self) -> Result<Vec<MessageEntry>, StoreError> {
        let source = Source::read(&self.root)?;
        let started = std::time::SystemTime::now();
        if let Some(entries) = listing::load(&self.root, &source) {
            return Ok(entries);
        }
        let overrides = load_overrides(&self.root)?;
        let mut found = self.scan_files()?;
        // Paths are distinct, so the order is total.
        // Twins (one unique part, two files) are ordered by their base names, which
        // renames keep, so the same twin keeps the plain UIDL session after session.
        found.sort_unstable_by(|a, b| {
            (a.time, &a.unique)
                .cmp(&(b.time, &b.unique))
                .then_with(|| base_of(&a.path).cmp(&base_of(&b.path)))
                .then_with(|| a.path.cmp(&b.path))
        });
        let entries = with_uidls(found, &overrides);
        // Cache only a listing the directories still match after the scan.
        if source.still_matches(&self.root) {
            listing::save(&self.root, &source, started, &entries);
        }
        Ok(entries)
    }

    /// Lists and sizes every message file (the listing cache missed).
    fn scan_files(&self) -> Result<Vec<Found>, StoreError> {
        let mut buf = Vec::new();
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
        buf: &mut Vec<u8>,
        found: &mut Vec<Found>,
        sizes: &mut SizeIndex,
    ) -> io::Result<bool> {
        let mut vanished = false;
        // Every file's inode: a name seen twice for one inode is a message renamed
        // while this scan read the directories (new/ to cur/, or a flag change).
        let mut inodes: Vec<(u64, usize)> = Vec::new();
        for dir in MESSAGE_DIRS {
            let Some(entries) = read_dir(&self.root, dir)? else {
                continue;
            };
            for entry in entries {
                let entry = entry?;
                // The path is kept; the name is read from it (one allocation, not two).
                let path = entry.path();
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                if is_hidden(&name) {
                    continue;
                }
                // The type from the directory entry itself: no stat, never a symlink.
                match entry.file_type() {
                    Ok(t) if t.is_file() => {}
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        vanished = true;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                let ino = entry.ino();
                let parts = parse_name(&name);
                // Only owned parts from here on, so the path can move into the listing.
                let (unique, size_fields) = (parts.unique, (parts.size, parts.vsize));
                drop(name);
                let named_size = match size_fields {
                    (Some(s), Some(w)) if s <= w && w <= s.saturating_mul(2) => Some((s, w)),
                    _ => None,
                };
                let (time, size) = match (delivery_time(&unique), named_size) {
                    (Some(time), Some((_, w))) if w <= MAX_UNCHECKED_SIZE => (time, w),
                    (time, named) => {
                        // Through the directory's handle: no path lookup from the root.
                        let meta = match entry.metadata() {
                            Ok(meta) if meta.is_file() => meta,
                            Ok(_) => continue,
                            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                vanished = true;
                                continue;
                            }
                            Err(e) => return Err(e),
                        };
                        let time = time.unwrap_or_else(|| meta.mtime());
                        match named {
                            // Trust the name only when its file size is right.
                            Some((s, w)) if s == meta.len() => (time, w),
                            _ => match sizes.get(&unique, meta.len()) {
                                Some(size) => (time, size),
                                None => {
                                    if buf.is_empty() {
                                        buf.resize(CHUNK, 0);
                                    }
                                    match open_regular(&path, &meta)
                                        .and_then(|mut f| crlf_size(&mut f, buf))
                                    {
                                        Ok(size) => {
                                            sizes.insert(&unique, meta.len(), size);
                                            (time, size)
                                        }
                                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                                            vanished = true;
                                            continue;
                                        }
                                        Err(e) => return Err(e),
                                    }
                                }
                            },
                        }
                    }
                };
                inodes.push((ino, found.len()));
                found.push(Found {
                    time,
                    unique,
                    size,
                    path,
                });
            }
        }
        // A renamed message is listed once, under the name read first (opening it
        // follows the rename). Another file with the same inode (another filesystem,
        // so another unique part) is kept.
        inodes.sort_unstable();
        let mut twice = vec![false; found.len()];
        for pair in inodes.windows(2) {
            let ((a, i), (b, j)) = (pair[0], pair[1]);
            if a == b && found[i].unique == found[j].unique {
                twice[i.max(j)] = true;
            }
        }
        if twice.contains(&true) {
            let mut k = 0;
            found.retain(|_| {
                k += 1;
                !twice[k - 1]
            });
        }
        Ok(vanished)
    }
}

/// The part of a file name before the `:` info (what renames keep).
pub(crate) fn base_of(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    parse_name(&name).base.to_owned()
}

/// The listing with every message's UIDL: its override or natural UIDL, and for a
/// later message whose UIDL is taken, a hash (see [`UidlAssigner`]). Repeats are rare,
/// so the common case only checks that there are none.
fn with_uidls(
    found: Vec<Found>,
    overrides: &std::collections::HashMap<String, String>,
) -> Vec<MessageEntry> {
    let mut entries: Vec<MessageEntry> = found
        .into_iter()
        .map(|f| MessageEntry {
            uidl: match overrides.get(&f.unique) {
                Some(uidl) => uidl.clone(),
                None if is_valid_uidl(&f.unique) => f.unique,
                None => natural_uidl(&f.unique),
            },
            size: f.size,
            path: f.path,
        })
        .collect();
    // Natural UIDLs of a standard Maildir come out in increasing order (the listing is
    // ordered by the name's leading time, then the name): then they are distinct
    // without hashing any. Otherwise a set tells.
    let increasing = entries.windows(2).all(|w| w[0].uidl < w[1].uidl);
    if increasing {
        return entries;
    }
    let mut seen = HashSet::with_capacity(entries.len());
    if entries.iter().all(|e| seen.insert(e.uidl.as_str())) {
        return entries;
    }
    drop(seen);
    let mut assigner = UidlAssigner::new(overrides);
    for e in &mut entries {
        let name = e.path.file_name().unwrap_or_default().to_string_lossy();
        let parts = parse_name(&name);
        e.uidl = assigner.assign(&parts.unique, parts.base);
    }
    entries
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
        assert_eq!(list[0].unique(), "1.a.host");
    }

    #[test]
    fn implausible_sizes_in_names_are_not_believed() {
        let (_dir, md) = maildir();
        let max = u64::MAX;
        let half = 1u64 << 63;
        let over = MAX_UNCHECKED_SIZE + 1;
        put(&md, &format!("cur/1.a.host,S={max},W={max}:2,"), b"a\n", 1);
        // Two large values that sum past u64.
        put(
            &md,
            &format!("cur/2.b.host,S={half},W={half}:2,S"),
            b"bb\n",
            2,
        );
        put(&md, &format!("new/3.c.host,S={half},W={max}"), b"ccc\n", 3);
        // A huge W alone (and one that does not even parse).
        put(&md, &format!("new/4.d.host,S=2,W={max}"), b"d\n", 4);
        put(&md, "new/5.e.host,S=2,W=18446744073709551616", b"e\n", 5);
        // Just over the bound: stat'ed and counted.
        put(&md, &format!("new/6.f.host,S={over},W={over}"), b"f\n", 6);
        // At the bound: believed without a stat, as documented.
        let at = MAX_UNCHECKED_SIZE;
        put(&md, &format!("new/7.g.host,S={at},W={at}"), b"g\n", 7);
        let list = md.scan().expect("scan");
        let sizes: Vec<_> = list.iter().map(|e| e.size).collect();
        assert_eq!(sizes, [3, 4, 5, 3, 3, 3, MAX_UNCHECKED_SIZE]);
        // A name over the bound whose S is the real length is still believed, after
        // the stat (a sparse file: nothing is read or written).
        let big = put(
            &md,
            &format!("new/8.h.host,S={over},W={}", over + 7),
            b"",
            8,
        );
        File::options()
            .write(true)
            .open(&big)
            .and_then(|f| f.set_len(over))
            .expect("sparse file");
        let list = md.scan().expect("scan");
        assert_eq!(list[7].size, over + 7);
        let total = list.iter().try_fold(0u64, |t, e| t.checked_add(e.size));
        assert_eq!(total, Some(21 + MAX_UNCHECKED_SIZE + over + 7));
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
        // Nor is a size no file of that length can have.
        std::fs::write(
            md.root().join(SIZE_INDEX),
            "1.a.host\t4\t11\n2.b.host\t4\t18446744073709551615\n",
        )
        .unwrap();
        let third = md.scan().expect("scan");
        assert_eq!((third[0].size, third[1].size), (6, 5));
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
    use crate::test_support::{age_dirs, maildir, put};

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
            text.replace(
                "\n4\t2.b.host\tnew/2.b.host",
                "\n77\t2.b.host\tnew/2.b.host",
            ),
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

#[cfg(test)]
mod order_and_cache_tests {
    use super::delivery_time;
    use crate::listing::LISTING_CACHE;
    use crate::test_support::{age_dirs, maildir, put};

    #[test]
    fn delivery_time_comes_from_the_name() {
        assert_eq!(delivery_time("1700000000.M1P2.host"), Some(1_700_000_000));
        assert_eq!(delivery_time("17.x"), Some(17));
        assert_eq!(delivery_time("x17.host"), None);
        assert_eq!(delivery_time("1700000000"), None);
        assert_eq!(delivery_time(".host"), None);
        assert_eq!(delivery_time("1234567890123.host"), None);
    }

    #[test]
    fn the_name_orders_and_sizes_without_the_file() {
        let (_dir, md) = maildir();
        // A restored Maildir: modification times say the opposite of the names.
        put(&md, "cur/200.b.host,S=2,W=3:2,S", b"b\n", 10);
        put(&md, "cur/100.a.host,S=2,W=3:2,S", b"a\n", 20);
        // No time in the name: the modification time orders it.
        put(&md, "cur/host-c,S=2,W=3", b"c\n", 150);
        let list = md.scan().expect("scan");
        let uidls: Vec<_> = list.iter().map(|e| e.uidl.as_str()).collect();
        assert_eq!(uidls, ["100.a.host", "host-c", "200.b.host"]);
        // A plausible S/W pair with a time in the name is not checked against the file
        // (no stat); without a time it is, and a wrong S means counting.
        put(&md, "cur/300.d.host,S=9,W=12", b"d\n", 300);
        put(&md, "cur/host-e,S=9,W=12", b"e\n", 300);
        let list = md.scan().expect("scan");
        assert_eq!((list[3].uidl.as_str(), list[3].size), ("300.d.host", 12));
        assert_eq!((list[4].uidl.as_str(), list[4].size), ("host-e", 3));
    }

    #[test]
    fn a_renamed_message_seen_under_two_names_in_cur_is_listed_once() {
        // A flag change during the scan, simulated by a hard link: one inode, two names.
        let (_dir, md) = maildir();
        let p = put(&md, "cur/100.a.host,S=2,W=3:2,", b"a\n", 100);
        std::fs::hard_link(&p, md.root().join("cur/100.a.host,S=2,W=3:2,S")).expect("link");
        put(&md, "cur/101.b.host,S=2,W=3:2,", b"b\n", 101);
        let list = md.scan().expect("scan");
        let uidls: Vec<_> = list.iter().map(|e| e.uidl.as_str()).collect();
        assert_eq!(uidls, ["100.a.host", "101.b.host"]);
    }

    #[test]
    fn twins_keep_their_uidls_when_one_moves_to_cur() {
        // Two files with one unique part: the one whose base name sorts first keeps
        // the plain UIDL, wherever the other one is.
        let (_dir, md) = maildir();
        // By path, cur/...S=2 comes before new/...S=1, and after the move cur/...S=1
        // before cur/...S=2: ordering by path would swap the twins' UIDLs.
        put(&md, "new/7.t.host,S=1", b"1", 7);
        put(&md, "cur/7.t.host,S=2:2,", b"22", 7);
        let before = md.scan().expect("scan");
        std::fs::rename(
            md.root().join("new/7.t.host,S=1"),
            md.root().join("cur/7.t.host,S=1:2,S"),
        )
        .expect("rename");
        let after = md.scan().expect("scan");
        let pairs = |l: &[crate::MessageEntry]| {
            l.iter()
                .map(|e| (e.uidl.clone(), e.size))
                .collect::<Vec<_>>()
        };
        assert_eq!(pairs(&before), pairs(&after));
        assert_eq!(
            before[0].size, 3,
            "the S=1 twin (\"1\" plus the CRLF it lacks)"
        );
        assert_eq!(before[0].uidl, "7.t.host");
    }

    #[test]
    fn a_cache_cut_short_is_not_trusted() {
        let (_dir, md) = maildir();
        put(&md, "cur/1.a.host:2,S", b"a\n", 1);
        put(&md, "cur/2.b.host:2,S", b"bb\n", 2);
        age_dirs(md.root());
        md.scan().expect("scan");
        let cache = md.root().join(LISTING_CACHE);
        let text = std::fs::read_to_string(&cache).expect("cache");
        // Doctor the first size (to see whether the cache is used), then cut the last line.
        let doctored = text.replace("\n3\t1.a.host\t", "\n9\t1.a.host\t");
        let cut = &doctored[..doctored.trim_end().rfind('\n').unwrap() + 1];
        std::fs::write(&cache, cut).unwrap();
        let list = md.scan().expect("scan");
        assert_eq!((list.len(), list[0].size), (2, 3));
        // Whole, the doctored cache is used: the check above is not vacuous.
        std::fs::write(&cache, &doctored).unwrap();
        assert_eq!(md.scan().expect("scan")[0].size, 9);
    }

    #[test]
    fn a_message_moved_to_cur_during_a_scan_is_listed_once() {
        // Simulated by a hard link: the same inode in new/ and cur/.
        let (_dir, md) = maildir();
        let p = put(&md, "new/100.a.host", b"a\n", 100);
        std::fs::hard_link(&p, md.root().join("cur/100.a.host:2,S")).expect("link");
        put(&md, "cur/101.b.host:2,", b"b\n", 101);
        let list = md.scan().expect("scan");
        let uidls: Vec<_> = list.iter().map(|e| e.uidl.as_str()).collect();
        assert_eq!(uidls, ["100.a.host", "101.b.host"]);
    }

    #[test]
    fn the_cache_keeps_uidls_and_follows_the_override_file() {
        let (_dir, md) = maildir();
        put(&md, "cur/5.dup.host,S=1:2,", b"1", 5);
        put(&md, "new/5.dup.host,S=2", b"22", 5);
        put(&md, "cur/7.o.host:2,", b"o\n", 7);
        age_dirs(md.root());
        let first = md.scan().expect("scan");
        let cache = md.root().join(LISTING_CACHE);
        let text = std::fs::read_to_string(&cache).expect("cache written");
        assert!(text.starts_with("poplar-listing v3 "), "{text}");
        // The repeated unique part's hashed UIDL is stored as it is.
        assert!(text.contains(&first[1].uidl), "{text}");
        assert!(text.contains("\n3\t7.o.host\tcur/7.o.host:2,\n"), "{text}");
        let second = md.scan().expect("scan");
        assert_eq!(first, second);
        // Prove the second scan came from the cache, then that an override replaces it.
        std::fs::write(&cache, text.replace("\n3\t7.o.host\t", "\n9\t7.o.host\t")).unwrap();
        assert_eq!(md.scan().expect("scan")[2].size, 9);
        md.set_uidl_override(&[("7.o.host".into(), "legacy-7".into())])
            .expect("override");
        let third = md.scan().expect("scan");
        assert_eq!((third[2].uidl.as_str(), third[2].size), ("legacy-7", 3));
        // A cache line with an invalid UIDL makes the whole cache ignored.
        let text = std::fs::read_to_string(&cache).expect("cache");
        assert!(
            text.contains("\tlegacy-7\t"),
            "rewritten after the override: {text}"
        );
        std::fs::write(&cache, text.replace("\tlegacy-7\t", "\tlegacy 7\t")).unwrap();
        assert_eq!(md.scan().expect("scan")[2].uidl, "legacy-7");
        // A version 2 cache (which may hold a size believed from an implausible name)
        // is ignored.
        age_dirs(md.root());
        md.scan().expect("scan");
        let text = std::fs::read_to_string(&cache).expect("cache");
        let old = text
            .replacen("poplar-listing v3 ", "poplar-listing v2 ", 1)
            .replace("\n3\t7.o.host\t", "\n18446744073709551615\t7.o.host\t");
        assert_ne!(old, text);
        std::fs::write(&cache, old).unwrap();
        assert_eq!(md.scan().expect("scan")[2].size, 3);
    }
}
