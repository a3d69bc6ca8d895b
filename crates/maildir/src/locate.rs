//! Finding, opening and deleting scanned messages (RFC 1939 RETR, TOP and UPDATE).
//!
//! Other programs sharing the Maildir (Dovecot, Courier, a mail client over IMAP) may
//! rename a message while a POP3 session holds it: to change its flags (the `:2,` info)
//! or to move it from `new/` to `cur/`. Such a file keeps its unique part, so it is found
//! again by that part.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use crate::name::parse_name;
use crate::scan::{base_of, message_entries, open_regular};
use crate::{DeleteError, Maildir, MessageEntry, StoreError};

/// How often a message that vanishes between being located and opened is looked for again.
const OPEN_ATTEMPTS: usize = 3;

/// Regular files in `new/` and `cur/` by unique part: (base name before `:`, path).
pub(crate) type UniqueIndex = HashMap<String, Vec<(String, PathBuf)>>;

impl Maildir {
    /// Opens a scanned message for reading, following it if it was renamed meanwhile.
    ///
    /// Only a regular file is opened, never through a symlink. Returns
    /// [`StoreError::Gone`] if the message no longer exists.
    pub fn open_message(&self, entry: &MessageEntry) -> Result<File, StoreError> {
        for _ in 0..OPEN_ATTEMPTS {
            let path = match fs::symlink_metadata(&entry.path) {
                Ok(meta) if meta.is_file() => entry.path.clone(),
                Ok(_) => return Err(StoreError::Gone),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match pick(&self.unique_index()?, entry) {
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

    /// Deletes the given messages (the POP3 UPDATE state).
    ///
    /// Every message is tried even if some fail; a message already gone counts as
    /// deleted. On failure, [`DeleteError::failed`] holds the indexes into `entries` of
    /// the messages still present. The directories touched are fsynced afterwards, on a
    /// best-effort basis: the unlinks have happened whatever that reports.
    pub fn delete(&self, entries: &[&MessageEntry]) -> Result<(), DeleteError> {
        let mut failed = Vec::new();
        let mut first_error = None;
        let mut touched = BTreeSet::new();
        // Built on the first renamed message, then reused: one directory listing per
        // UPDATE, however many messages were renamed.
        let mut index: Option<UniqueIndex> = None;
        for (i, entry) in entries.iter().enumerate() {
            let result = match remove(&entry.path, &mut touched) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let located = self.locate(&mut index, entry);
                    match located {
                        Ok(Some(path)) => remove(&path, &mut touched),
                        Ok(None) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
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
    /// the file it was renamed to (through the index, built on first use), else `None`.
    pub(crate) fn current_path(
        &self,
        index: &mut Option<UniqueIndex>,
        entry: &MessageEntry,
    ) -> io::Result<Option<PathBuf>> {
        match fs::symlink_metadata(&entry.path) {
            Ok(meta) if meta.is_file() => Ok(Some(entry.path.clone())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.locate(index, entry),
            Err(e) => Err(e),
        }
    }

    /// Finds a renamed `entry` through the index, building it on first use.
    fn locate(
        &self,
        index: &mut Option<UniqueIndex>,
        entry: &MessageEntry,
    ) -> io::Result<Option<PathBuf>> {
        let index = match index {
            Some(index) => index,
            None => index.insert(self.unique_index()?),
        };
        Ok(pick(index, entry))
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

/// Picks the file that is most likely `entry` renamed: same unique part, preferring the
/// same base name (renames change only the info after `:`), then the least path.
fn pick(index: &UniqueIndex, entry: &MessageEntry) -> Option<PathBuf> {
    let candidates = index.get(&entry.unique())?;
    let scanned_base = base_of(&entry.path);
    let same_base = candidates.iter().filter(|(base, _)| *base == scanned_base);
    let path = same_base.map(|(_, path)| path).min();
    path.or_else(|| candidates.iter().map(|(_, path)| path).min())
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
        md.delete(&[&list[0], &list[1], &list[2]]).expect("delete");
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
            .delete(&[&list[0], &list[1], &list[2]])
            .expect_err("must fail");
        assert_eq!(err.failed, [1]);
        assert!(md.scan().expect("scan").is_empty());
    }
}
