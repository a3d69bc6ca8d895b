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
    if !path.exists() {
        create_key(path)?;
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

/// Writes a fresh key to a private temporary file, then links it into place: the key
/// file appears complete or not at all, and when two processes start at once (two
/// `poplar user add`, two nodes) the first link wins and both read that key.
fn create_key(path: &Path) -> anyhow::Result<()> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let tmp = path.with_extension(format!("tmp-{}", hex(&suffix)));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let written = file
        .write_all(hex(&key).as_bytes())
        .and_then(|()| file.sync_all());
    let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = fs::remove_file(&tmp);
    linked.with_context(|| format!("creating {}", path.display()))
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

    #[test]
    fn concurrent_first_starts_agree_on_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("secrets/server.key");
            let keys: Vec<Vec<u8>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|_| s.spawn(|| server_key(&path).unwrap()))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(keys.windows(2).all(|w| w[0] == w[1]));
            let leftovers = fs::read_dir(path.parent().unwrap()).unwrap().count();
            assert_eq!(leftovers, 1, "temporary files left behind");
        }
    }
}
