//! The exclusive maildrop lock (RFC 1939 section 8: "the POP3 server acquires an
//! exclusive-access lock on the maildrop").
//!
//! The lock is a seam, [`MaildropLock`]; several Poplar nodes sharing a directory add a
//! lease in the directory beside it (the server's `conn/lease.rs`). [`LocalLock`] is an `flock(2)`-style lock on
//! `<root>/poplar.lock`: the kernel releases it when the process dies, so a crashed
//! server never leaves a maildrop locked, and two opens of the file conflict even inside
//! one process, which is what keeps two sessions of one user apart.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{Maildir, StoreError};

/// Name of the lock file in the Maildir root.
pub const LOCK_FILE: &str = "poplar.lock";

/// A way to take exclusive access to one maildrop.
pub trait MaildropLock {
    /// Held while the maildrop is locked; dropping it releases the lock.
    type Guard;

    /// Takes the lock without waiting: [`StoreError::InUse`] if another holds it.
    fn try_lock(&self, maildir_root: &Path) -> Result<Self::Guard, StoreError>;
}

/// An exclusive lock on `<root>/poplar.lock`, local to this machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalLock;

/// Holds a [`LocalLock`]; the lock is released when this is dropped.
#[derive(Debug)]
pub struct MaildropGuard {
    file: File,
}

impl MaildropLock for LocalLock {
    type Guard = MaildropGuard;

    fn try_lock(&self, maildir_root: &Path) -> Result<MaildropGuard, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(maildir_root.join(LOCK_FILE))?;
        match file.try_lock() {
            Ok(()) => Ok(MaildropGuard { file }),
            Err(TryLockError::WouldBlock) => Err(StoreError::InUse),
            Err(TryLockError::Error(e)) => Err(e.into()),
        }
    }
}

impl Drop for MaildropGuard {
    fn drop(&mut self) {
        // Closing the file releases the lock anyway; unlocking first says so explicitly.
        let _ = self.file.unlock();
    }
}

impl Maildir {
    /// Takes the exclusive maildrop lock through [`LocalLock`].
    ///
    /// The root must exist (see [`Maildir::create`]).
    pub fn lock(&self) -> Result<MaildropGuard, StoreError> {
        LocalLock.try_lock(&self.root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::maildir;

    #[test]
    fn conflicts_in_one_process_and_releases_on_drop() {
        let (_dir, md) = maildir();
        let guard = md.lock().expect("first lock");
        assert!(matches!(md.lock(), Err(StoreError::InUse)));
        assert!(matches!(
            LocalLock.try_lock(md.root()),
            Err(StoreError::InUse)
        ));
        drop(guard);
        let _again = md.lock().expect("lock after release");
    }

    #[test]
    fn missing_root_is_an_io_error() {
        let md = Maildir::new("/nonexistent/poplar/Maildir");
        assert!(matches!(md.lock(), Err(StoreError::Io(_))));
    }
}
