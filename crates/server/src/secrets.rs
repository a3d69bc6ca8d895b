//! The server's own secret key: 32 random bytes that seal APOP and TOTP secrets and key
//! the hashes of app passwords, recovery codes and wrong secrets. Every node serving
//! one directory must have the same key, so it lives in the directory itself (the
//! `server_secrets` table, row `server_key`, hex): made by whichever node or CLI
//! command starts first, read by all others, and carried by `poplar directory copy`.
//!
//! Installations from before kept it in `<data_dir>/secrets/server.key`; when the
//! directory has no key yet and that file exists, its key is adopted into the
//! directory (so nothing sealed under it is lost) and the file is no longer read.

use anyhow::{Context as _, bail};
use directory::Directory as _;

use crate::{Config, Dir};

/// The row of `server_secrets` holding the server key.
pub const SERVER_KEY: &str = "server_key";

/// The server key from the directory, made (or adopted from the legacy file) first if
/// the directory has none.
pub async fn server_key(config: &Config, dir: &Dir) -> anyhow::Result<Vec<u8>> {
    if let Some(stored) = dir
        .server_secret(SERVER_KEY)
        .await
        .context("reading the server key from the directory")?
    {
        let key = parse_key(&stored).context("the directory's server_key")?;
        // A key file left from a one-machine install that is not the directory's key
        // means this node's sealed secrets were made under another key (say another
        // node stored a fresh one first): refuse rather than lose them unseen.
        let legacy = config.server_key_path();
        if let Ok(text) = std::fs::read_to_string(&legacy)
            && parse_key(&text).is_ok_and(|file_key| file_key != key)
        {
            bail!(
                "{} differs from the server key stored in the directory: secrets sealed under one are unreadable under the other. Keep the key the directory's sealed secrets were made with (move the file away to use the directory's)",
                legacy.display()
            );
        }
        return Ok(key);
    }
    let legacy = config.server_key_path();
    let candidate = if legacy.exists() {
        let text = std::fs::read_to_string(&legacy)
            .with_context(|| format!("reading {}", legacy.display()))?;
        parse_key(&text).with_context(|| legacy.display().to_string())?;
        text.trim().to_owned()
    } else {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        hex(&key)
    };
    let stored = dir
        .ensure_server_secret(SERVER_KEY, &candidate)
        .await
        .context("storing the server key in the directory")?;
    if legacy.exists() && stored != candidate {
        // Sealed secrets and keyed hashes made under the file's key would silently stop
        // working: refuse to start until someone decides which key is right.
        bail!(
            "{} differs from the server key stored in the directory: secrets sealed under one are unreadable under the other. Keep the one the directory's sealed secrets were made with and remove the other (move the file away to use the directory's key)",
            legacy.display()
        );
    }
    parse_key(&stored).context("the directory's server_key")
}

fn parse_key(text: &str) -> anyhow::Result<Vec<u8>> {
    let text = text.trim();
    if text.len() < 32 || !text.len().is_multiple_of(2) {
        bail!("not a hex key of at least 16 bytes");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .context("not hex")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn made_once_in_the_directory_and_stable() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config(tmp.path());
        let dir = Dir::open(&config.directory_path()).await.unwrap();
        let a = server_key(&config, &dir).await.unwrap();
        let b = server_key(&config, &dir).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
        assert!(!config.server_key_path().exists(), "no key file any more");
        assert_eq!(dir.server_secret(SERVER_KEY).await.unwrap(), Some(hex(&a)));
    }

    #[tokio::test]
    async fn a_legacy_key_file_is_adopted() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config(tmp.path());
        let path = config.server_key_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let legacy = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        std::fs::write(&path, format!("{legacy}\n")).unwrap();
        let dir = Dir::open(&config.directory_path()).await.unwrap();
        let key = server_key(&config, &dir).await.unwrap();
        assert_eq!(hex(&key), legacy);
        // Once adopted, the directory's key is the one; the same key in the file is
        // fine, an unreadable file is ignored ...
        assert_eq!(server_key(&config, &dir).await.unwrap(), key);
        std::fs::write(&path, "zz").unwrap();
        assert_eq!(server_key(&config, &dir).await.unwrap(), key);
        // ... and another key there stops the start: its secrets would be lost unseen.
        std::fs::write(&path, "ff".repeat(32)).unwrap();
        let err = format!("{:#}", server_key(&config, &dir).await.unwrap_err());
        assert!(err.contains("differs from the server key"), "{err}");
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(parse_key("zz").is_err());
        assert!(parse_key(&"g".repeat(64)).is_err());
        assert_eq!(parse_key(&"ab".repeat(16)).unwrap(), vec![0xab; 16]);
    }
}
