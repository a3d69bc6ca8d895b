//! Delivery the Maildir way: write to `tmp/`, fsync, rename into `new/`, fsync `new/`.
//!
//! Names follow the modern Maildir convention (`<secs>.M<usec>P<pid>Q<n>R<random>.<host>`)
//! with the Courier/Dovecot `,S=<size>` and Dovecot `,W=<CRLF size>` fields, so Postfix,
//! Dovecot and Courier read what Poplar delivers, and Poplar's own scan needs not read it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::Maildir;

/// Deliveries by this process: the `Q` part of a name. A process-wide counter is what
/// the Maildir naming scheme asks for, so two deliveries in one microsecond differ.
static DELIVERIES: AtomicU64 = AtomicU64::new(0);

impl Maildir {
    /// Delivers `message` into `new/` and returns its final path.
    ///
    /// The Maildir must exist (see [`Maildir::create`]). The file is written under a
    /// unique name in `tmp/`, fsynced, renamed into `new/` with `,S=<size>,W=<CRLF size>`
    /// appended, and `new/` is fsynced, so a delivered message survives a crash.
    pub fn deliver(&self, message: &[u8]) -> io::Result<PathBuf> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "{}.M{}P{}Q{}R{:016x}.{}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            DELIVERIES.fetch_add(1, Ordering::Relaxed),
            getrandom::u64().map_err(io::Error::other)?,
            hostname()
        );
        let tmp = self.root.join("tmp").join(&name);
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(message)?;
            file.sync_all()
        })();
        let final_path = self.root.join("new").join(format!(
            "{name},S={},W={}",
            message.len(),
            pop3_proto::crlf_size(message)
        ));
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, &final_path)) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        File::open(self.root.join("new"))?.sync_all()?;
        Ok(final_path)
    }
}

/// This host's name for delivery file names: `/etc/hostname` or `localhost`.
fn hostname() -> String {
    let name = fs::read_to_string("/etc/hostname").unwrap_or_default();
    match name.trim() {
        "" => "localhost".to_owned(),
        name => escape_hostname(name),
    }
}

/// Escapes what must not appear in a Maildir name part: `/` as `\057` and `:` as `\072`
/// (as Courier and Dovecot do), plus `,` (which starts a size field) and any
/// non-printable byte, as octal.
fn escape_hostname(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'/' | b':' | b',' => out.push_str(&format!("\\{b:03o}")),
            0x21..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::parse_name;
    use crate::test_support::maildir;

    #[test]
    fn hostname_escapes() {
        assert_eq!(escape_hostname("mail.example.org"), "mail.example.org");
        assert_eq!(escape_hostname("a/b:c"), "a\\057b\\072c");
        assert_eq!(escape_hostname("a,b"), "a\\054b");
        assert!(!hostname().is_empty());
    }

    #[test]
    fn delivered_files_are_readable_and_sized() {
        let (_dir, md) = maildir();
        let path = md.deliver(b"Subject: hi\n\nbody\n").expect("deliver");
        let other = md.deliver(b"x").expect("deliver");
        assert_ne!(path, other);
        assert_eq!(fs::read(&path).expect("read"), b"Subject: hi\n\nbody\n");
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let parts = parse_name(&name);
        assert_eq!((parts.size, parts.vsize), (Some(18), Some(21)));
        assert!(name.contains(&format!("P{}Q", std::process::id())));
        assert_eq!(path.parent(), Some(md.root().join("new").as_path()));
        assert_eq!(fs::read_dir(md.root().join("tmp")).expect("tmp").count(), 0);
        let list = md.scan().expect("scan");
        assert_eq!(list.len(), 2);
        assert!(list.iter().any(|e| e.size == 21 && e.uidl == parts.unique));
    }
}
