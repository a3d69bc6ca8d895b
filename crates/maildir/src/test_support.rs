//! Helpers shared by the unit tests.

use std::fs::{self, File};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::Maildir;

/// A fresh Maildir in a temporary directory (kept alive by the returned guard).
pub(crate) fn maildir() -> (tempfile::TempDir, Maildir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let md = Maildir::new(dir.path().join("Maildir"));
    md.create().expect("create");
    (dir, md)
}

/// Writes `body` to `rel` under the Maildir root with the given mtime.
pub(crate) fn put(md: &Maildir, rel: &str, body: &[u8], secs: u64) -> PathBuf {
    let path = md.root().join(rel);
    fs::write(&path, body).expect("write");
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    File::options()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_modified(mtime))
        .expect("set mtime");
    path
}

/// Sets the modification times of `new/` and `cur/` 100 s back, so the listing cache
/// counts them as settled.
pub(crate) fn age_dirs(root: &std::path::Path) {
    let old = SystemTime::now() - Duration::from_secs(100);
    for dir in ["new", "cur"] {
        File::open(root.join(dir))
            .and_then(|f| f.set_modified(old))
            .expect("set directory mtime");
    }
}
