//! The server's own secret key: 32 random bytes made on first start in
//! `<data_dir>/secrets/server.key` (folder 0700, file 0600). It keys values that must
//! stay stable across restarts but unpredictable to clients, such as the fake SCRAM
//! salts shown for unknown users. Several nodes serving one directory must share it.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::Path;

use anyhow::{Context as _, bail};

/// Reads the key, making it first if it does not exist.
pub fn server_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            file.write_all(hex(&key).as_bytes())?;
            file.sync_all()?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    }
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let text = text.trim();
    if text.len() < 32 || !text.len().is_multiple_of(2) {
        bail!(
            "{} does not hold a hex key of at least 16 bytes",
            path.display()
        );
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .with_context(|| format!("{} is not hex", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets/server.key");
        let a = server_key(&path).unwrap();
        let b = server_key(&path).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&path).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
        fs::write(&path, "zz").unwrap();
        assert!(server_key(&path).is_err());
    }
}
