//! A Maildir maildrop for POP3 (RFC 1939), shared with Postfix, Dovecot and Courier.
//!
//! [`Maildir`] reads `new/` and `cur/` as one maildrop: [`Maildir::scan`] lists the
//! messages with their POP3 sizes (section 11: CRLF line endings) and stable UIDLs
//! (section 7); [`Maildir::open_message`] opens one for RETR or TOP even if another
//! program renamed it; [`Maildir::delete`] commits DELE in the UPDATE state (section 6);
//! [`Maildir::lock`] takes the exclusive maildrop lock (section 8); [`Maildir::deliver`]
//! adds a message as a delivery agent would. [`Maildir::mark_retrieved`] and
//! [`Maildir::expire_retrieved`] enforce a retention period for retrieved messages
//! (RFC 2449 section 6.7, EXPIRE).
//!
//! Everything here is synchronous `std::fs`; the server runs it on a blocking thread.

#![forbid(unsafe_code)]

mod atomic;
mod deliver;
mod index;
mod listing;
mod locate;
mod lock;
pub mod migrate;
mod name;
mod retention;
mod scan;
mod size;
#[cfg(test)]
mod test_support;
mod uidl;

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub use lock::{LOCK_FILE, LocalLock, MaildropGuard, MaildropLock};
pub use retention::{MarkError, RETRIEVED_FILE};
pub use uidl::is_valid_uidl;

/// A Maildir: a root folder with `new/`, `cur/` and `tmp/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maildir {
    root: PathBuf,
}

/// One message of a scanned maildrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEntry {
    /// The unique-id listing (RFC 1939 section 7): 1..=70 characters in 0x21..=0x7E.
    /// It is an override from the `poplar-uidl` file if there is one, else the unique
    /// part ([`MessageEntry::unique`]) when that is valid, else the first 40 lowercase hex digits of SHA-256(`unique`). Every
    /// UIDL in one scan is distinct: a later message whose UIDL is taken gets a hash of
    /// its unique part and file name instead.
    pub uidl: String,
    /// Size in octets as POP3 counts it: the message with every line ending as CRLF (a
    /// bare LF counts as two octets, an existing CRLF once), before byte-stuffing and
    /// without the terminating `.` line. If the file does not end with a line ending,
    /// the sender must add CRLF before the terminator; those two octets are not counted.
    /// An empty file has size 0.
    pub size: u64,
    /// Where the file was when scanned.
    pub path: PathBuf,
}

impl MessageEntry {
    /// The unique part of the file name: the base name before the first `:` (the
    /// `:2,FLAGS` info) without Dovecot-style `,KEY=VALUE` fields (`,S=`, `,W=`).
    /// Example: `1700000000.M1P2.host,S=1234,W=1260:2,S` -> `1700000000.M1P2.host`.
    /// Renames by other programs keep it, and the whole base name (the name before
    /// `:`), which is what finds a renamed message again.
    pub fn unique(&self) -> String {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        name::parse_name(&name).unique
    }
}

/// Why a maildrop operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another session holds the maildrop lock (POP3 `[IN-USE]`).
    #[error("maildrop is in use")]
    InUse,
    /// The message no longer exists (deleted by another program).
    #[error("message no longer exists")]
    Gone,
    /// A filesystem error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Some messages could not be deleted; all the others were.
#[derive(Debug, thiserror::Error)]
#[error("{} message(s) could not be deleted: {first_error}", failed.len())]
pub struct DeleteError {
    /// Indexes into the slice given to [`Maildir::delete`] of the messages not deleted.
    pub failed: Vec<usize>,
    /// The error of the first failure.
    pub first_error: io::Error,
}

impl Maildir {
    /// A Maildir at `root`; nothing is touched on disk.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates `root/{new,cur,tmp}` (and missing parents) with mode 0700; existing
    /// folders are fine.
    pub fn create(&self) -> io::Result<()> {
        let mut builder = DirBuilder::new();
        builder.recursive(true).mode(0o700);
        for dir in ["new", "cur", "tmp"] {
            builder.create(self.root.join(dir))?;
        }
        Ok(())
    }

    /// Merges `(unique, uidl)` pairs into the UIDL override file `<root>/poplar-uidl`,
    /// replacing it atomically. For importing the UIDLs a previous POP3 server gave out,
    /// so clients do not download everything again. A pair whose unique part is empty or
    /// contains whitespace, or whose UIDL is not valid, is refused with `InvalidInput`
    /// and nothing is written.
    pub fn set_uidl_override(&self, pairs: &[(String, String)]) -> io::Result<()> {
        uidl::save_overrides(&self.root, pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_is_idempotent_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let md = Maildir::new(dir.path().join("a/Maildir"));
        md.create().expect("create");
        md.create().expect("create again");
        for sub in ["new", "cur", "tmp"] {
            let meta = std::fs::metadata(md.root().join(sub)).expect("metadata");
            assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        }
    }
}
