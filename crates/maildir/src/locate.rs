//! Finding, opening and deleting scanned messages (RFC 1939 RETR, TOP and UPDATE).
//!
//! Other programs sharing the Maildir (Dovecot, Courier, a mail client over IMAP) may
//! rename a message while a POP3 session holds it: to change its flags (the `:2,` info)
//! or to move it from `new/` to `cur/`. Such a renaming keeps the base name (the name
//! before `:`, the unique part with its `,S=`/`,W=` fields), so a message that is no
//! longer where it was scanned is looked for under the same base name. Only that: a
//! file that merely shares the unique part (a twin: another delivery of the same
//! message, a copy) is another message, and so is any file that is itself an entry of
//! the listing. A message not found that way is gone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::name::parse_name;
use crate::scan::{base_of, message_entries, open_regular};
use crate::{DeleteError, Maildir, MessageEntry, StoreError};

/// How often a message that vanishes between being located and opened is looked for again.
const OPEN_ATTEMPTS: usize = 3;

/// Regular files in `new/` and `cur/` by unique part: (base name before `:`, path).
type UniqueIndex = HashMap<String, Vec<(String, PathBuf)>>;

/// Where the messages of one listing went if they were renamed since the scan: the
/// files of `new/` and `cur/`, read on first use (one directory listing however many
/// messages moved), and the listing's own paths, which are never taken for another
/// message renamed.
pub(crate) struct Renames<'a> {
    listing: &'a [MessageEntry],
    index: Option<(UniqueIndex, HashSet<&'a Path>)>,
}

impl<'a> Renames<'a> {
    /// For the messages of `listing` (empty: no other message is known).
    pub(crate) fn new(listing: &'a [MessageEntry]) -> Self {
        Self {
            listing,
            index: None,
        }
    }

    /// The file `entry` was renamed to, if one is found (see the module documentation).
    fn find(&mut self, maildir: &Maildir, entry: &MessageEntry) -> io::Result<Option<PathBuf>> {
        let (index, listed) = match &mut self.index {
            Some(built) => built,
            None => {
                let listed = self.listing.iter().map(|e| e.path.as_path()).collect();
                self.index.insert((maildir.unique_index()?, listed))
            }
        };
        Ok(pick(index, listed, entry))
    }
}

impl Maildir {
    /// Opens a scanned message for reading, following it if it was renamed meanwhile
    /// (same base name, see the module documentation).
    ///
    /// Only a regular file is opened, never through a symlink. Returns
    /// [`StoreError::Gone`] if the message no longer exists.
    pub fn open_message(&self, entry: &MessageEntry) -> Result<File, StoreError> {
        for _ in 0..OPEN_ATTEMPTS {
            let path = match fs::symlink_metadata(&entry.path) {
                Ok(meta) if meta.is_file() => entry.path.clone(),
                Ok(_) => return Err(StoreError::Gone),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match Renames::new(&[]).find(self, entry)? {
                        Some(path) => path,
                        None => return Err(StoreError::Gone),
                    }
                }
                Err(e) => return Err(e.into()),
            };
            let opened = fs::symlink_metadata(&path).and_then(|meta| {
                if meta.is_file() {
                    open_regular(&path, &meta)
                } else {
                    Err(io::ErrorKind::NotFound.into())
                }
            });
            match opened {
                Ok(file) => return Ok(file),
                // Renamed again between finding and opening: look once more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Gone)
    }

    /// Deletes the given messages of `listing` (the POP3 UPDATE state).
    ///
    /// `entries` are messages of `listing`, the scan the session works on. A message
    /// renamed since the scan is followed under its base name, never to a file that
    /// only shares its unique part nor to another message of `listing` (see the module
    /// documentation): such a message, like one deleted by another program, is gone
    /// and counts as deleted, and no other file is touched.
    ///
    /// Every message is tried even if some fail. On failure, [`DeleteError::failed`]
    /// holds the indexes into `entries` of the messages still present. The directories
    /// touched are fsynced afterwards, on a best-effort basis: the unlinks have
    /// happened whatever that reports.
    pub fn delete(
        &self,
        listing: &[MessageEntry],
        entries: &[&MessageEntry],
    ) -> Result<(), DeleteError> {
        let mut failed = Vec::new();
        let mut first_error = None;
        let mut touched = BTreeSet::new();
        let mut renames = Renames::new(listing);
        for (i, entry) in entries.iter().enumerate() {
            let result = match remove(&entry.path, &mut touched) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => match renames.find(self, entry) {
                    Ok(Some(path)) => remove(&path, &mut touched),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                },
                other => other,
            };
            match result {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    failed.push(i);
                    first_error.get_or_insert(e);
                }
            }
        }
        for dir in touched {
            // Durability of the unlinks; they are done whatever this reports.
            let _ = File::open(&dir).and_then(|d| d.sync_all());
        }
        match first_error {
            None => Ok(()),
            Some(first_error) => Err(DeleteError {
                failed,
                first_error,
            }),
        }
    }

    /// Where `entry` is now: its scanned path if a regular file is still there, else
    /// the file it was renamed to (see [`Renames`]), else `None`.
    pub(crate) fn current_path(
        &self,
        renames: &mut Renames<'_>,
        entry: &MessageEntry,
    ) -> io::Result<Option<PathBuf>> {
        match fs::symlink_metadata(&entry.path) {
            Ok(meta) if meta.is_file() => Ok(Some(entry.path.clone())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => renames.find(self, entry),
            Err(e) => Err(e),
        }
    }

    /// Lists the regular, non-hidden files of `new/` and `cur/` by unique part.
    fn unique_index(&self) -> io::Result<UniqueIndex> {
        let mut index = UniqueIndex::new();
        for (entry, name) in message_entries(&self.root)? {
            // file_type() does not follow symlinks.
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let parts = parse_name(&name);
            let base = parts.base.to_owned();
            index
                .entry(parts.unique)
                .or_default()
                .push((base, entry.path()));
        }
        Ok(index)
    }
}

/// Picks the file that is `entry` renamed: the same base name (renames change only the
/// info after `:`, and may move the file from `new/` to `cur/`), never a path of
/// `listed` other than the entry's own, the least path if several are left. A file
/// that only shares the unique part is never taken: it is another message.
fn pick(index: &UniqueIndex, listed: &HashSet<&Path>, entry: &MessageEntry) -> Option<PathBuf> {
    let candidates = index.get(&entry.unique())?;
    let scanned_base = base_of(&entry.path);
    candidates
        .iter()
        .filter(|(base, path)| {
            *base == scanned_base && (*path == entry.path || !listed.contains(path.as_path()))
        })
        .map(|(_, path)| path)
        .min()
        .cloned()
}

/// Unlinks `path`, remembering its directory for the fsync.
fn remove(path: &Path, touched: &mut BTreeSet<PathBuf>) -> io::Result<()> {
    fs::remove_file(path)?;
    if let Some(dir) = path.parent() {
        touched.insert(dir.to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{maildir, put};
    use std::io::Read;

    fn read(md: &Maildir, entry: &MessageEntry) -> String {
        let mut text = String::new();
        md.open_message(entry)
            .expect("open")
            .read_to_string(&mut text)
            .expect("read");
        text
    }

    #[test]
    fn open_follows_renamed_file() {
        let (_dir, md) = maildir();
        let path = put(&md, "new/10.a.host,S=6", b"hello\n", 10);
        let list = md.scan().expect("scan");
        assert_eq!(read(&md, &list[0]), "hello\n");
        fs::rename(&path, md.root().join("cur/10.a.host,S=6:2,S")).expect("rename");
        assert_eq!(read(&md, &list[0]), "hello\n");
        fs::remove_file(md.root().join("cur/10.a.host,S=6:2,S")).expect("rm");
        assert!(matches!(md.open_message(&list[0]), Err(StoreError::Gone)));
    }

    #[test]
    fn open_refuses_symlink() {
        let (_dir, md) = maildir();
        let path = put(&md, "cur/11.a.host:2,", b"x\n", 11);
        let list = md.scan().expect("scan");
        fs::remove_file(&path).expect("rm");
        put(&md, "tmp/other", b"secret\n", 1);
        std::os::unix::fs::symlink(md.root().join("tmp/other"), &path).expect("symlink");
        assert!(matches!(md.open_message(&list[0]), Err(StoreError::Gone)));
    }

    #[test]
    fn delete_present_renamed_and_absent() {
        let (_dir, md) = maildir();
        let a = put(&md, "new/1.a.host", b"a\n", 1);
        put(&md, "new/2.b.host", b"b\n", 2);
        put(&md, "cur/3.c.host:2,", b"c\n", 3);
        put(&md, "cur/4.keep.host:2,", b"k\n", 4);
        let list = md.scan().expect("scan");
        fs::rename(&a, md.root().join("cur/1.a.host:2,S")).expect("rename");
        fs::remove_file(&list[2].path).expect("rm");
        md.delete(&list, &[&list[0], &list[1], &list[2]])
            .expect("delete");
        let left = md.scan().expect("scan");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].unique(), "4.keep.host");
    }

    #[test]
    fn delete_reports_failures_and_tries_all() {
        let (_dir, md) = maildir();
        put(&md, "cur/1.a.host:2,", b"a\n", 1);
        let b = put(&md, "cur/2.b.host:2,", b"b\n", 2);
        put(&md, "cur/3.c.host:2,", b"c\n", 3);
        let list = md.scan().expect("scan");
        // A non-empty directory where the file was: unlink fails even for root.
        fs::remove_file(&b).expect("rm");
        fs::create_dir(&b).expect("mkdir");
        fs::write(b.join("x"), b"x").expect("write");
        let err = md
            .delete(&list, &[&list[0], &list[1], &list[2]])
            .expect_err("must fail");
        assert_eq!(err.failed, [1]);
        assert!(md.scan().expect("scan").is_empty());
    }

    /// Two files with one unique part (two deliveries of one message, or a copy):
    /// the one the client deleted is removed from disk before QUIT. The other is
    /// another message and must survive, and the deleted one counts as gone. Marking
    /// the vanished one retrieved flags nothing either.
    #[test]
    fn a_vanished_twin_never_takes_the_other_with_it() {
        // Two bases (the `,S=` differs), and one base in new/ and cur/ (a copy).
        let layouts = [
            ["cur/5.dup.host,S=1:2,", "new/5.dup.host,S=2"],
            ["cur/5.dup.host:2,S", "new/5.dup.host"],
        ];
        for names in layouts {
            for gone in [0, 1] {
                let (_dir, md) = maildir();
                put(&md, names[0], b"1", 5);
                put(&md, names[1], b"22", 5);
                put(&md, "cur/6.keep.host:2,", b"k\n", 6);
                let list = md.scan().expect("scan");
                let paths: Vec<_> = list.iter().map(|e| e.path.clone()).collect();
                let expected: Vec<_> = names.iter().map(|n| md.root().join(n)).collect();
                assert_eq!(paths[..2], expected, "listing order");
                let other = 1 - gone;
                fs::remove_file(&list[gone].path).expect("rm");
                md.mark_retrieved(&list, &[&list[gone]], std::time::SystemTime::now())
                    .expect("mark");
                md.delete(&list, &[&list[gone]])
                    .expect("gone counts as deleted");
                let left: Vec<_> = md
                    .scan()
                    .expect("scan")
                    .into_iter()
                    .map(|e| e.path)
                    .collect();
                assert_eq!(
                    left,
                    [paths[other].clone(), paths[2].clone()],
                    "{names:?} {gone}"
                );
                assert!(!md.root().join(crate::RETRIEVED_FILE).exists());
            }
        }
    }

    /// Without the listing (RETR, TOP), a vanished message is still never read from a
    /// file that only shares its unique part.
    #[test]
    fn open_never_reads_a_twin_with_another_base() {
        let (_dir, md) = maildir();
        let a = put(&md, "cur/5.dup.host,S=1:2,", b"1", 5);
        put(&md, "new/5.dup.host,S=2", b"22", 5);
        let list = md.scan().expect("scan");
        fs::rename(&a, md.root().join("cur/5.dup.host,S=1:2,S")).expect("rename");
        assert_eq!(read(&md, &list[0]), "1");
        fs::remove_file(md.root().join("cur/5.dup.host,S=1:2,S")).expect("rm");
        assert!(matches!(md.open_message(&list[0]), Err(StoreError::Gone)));
        assert_eq!(read(&md, &list[1]), "22");
    }

    /// A message renamed since the scan (new/ to cur/, flags changed) is still deleted,
    /// also when a twin of another base sits beside it.
    #[test]
    fn a_renamed_twin_is_followed_to_its_own_file() {
        let (_dir, md) = maildir();
        let a = put(&md, "new/5.dup.host,S=1", b"1", 5);
        put(&md, "new/5.dup.host,S=2", b"22", 5);
        let list = md.scan().expect("scan");
        fs::rename(&a, md.root().join("cur/5.dup.host,S=1:2,S")).expect("rename");
        md.delete(&list, &[&list[0]]).expect("delete");
        let left: Vec<_> = md
            .scan()
            .expect("scan")
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(left, [md.root().join("new/5.dup.host,S=2")]);
    }
}
