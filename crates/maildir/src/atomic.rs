//! Replacing a small state file in the Maildir root so readers see the old or the new
//! file, never half of one, and the new one survives a crash.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `text` to `<root>/<name>`: into a private temporary file beside it, fsynced,
/// renamed over the target, then the root fsynced. The temporary file is removed on
/// failure.
pub(crate) fn replace(root: &Path, name: &str, text: &str) -> io::Result<()> {
    let tmp = root.join(format!(
        ".{name}.{}.{:016x}.tmp",
        std::process::id(),
        getrandom::u64().map_err(io::Error::other)?
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&tmp, root.join(name))?;
        File::open(root)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
