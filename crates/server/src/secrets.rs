//! The server's key ring ([`auth::KeyRing`]): found outside the directory, and
//! recognised by the directory through its fingerprint.
//!
//! The ring comes from, in this order: the `POPLAR_KEYS` environment variable (its text,
//! for containers), the systemd credential `poplar-keys` (`LoadCredential=`, read from
//! `$CREDENTIALS_DIRECTORY`), or the key file (`keys.file`, by default
//! `/etc/poplar/server.key`; the embedded default keeps it in the data folder). The
//! directory's `server_secrets` row `server_key` holds only a marker with the ring's
//! fingerprint, so that a node with another ring (or none) refuses to start instead of
//! sealing new secrets under a key the others do not have.
//!
//! Moving over: installations from before kept the key itself in that row (and, before
//! that, in `<data_dir>/secrets/server.key`). The first start or CLI command that finds
//! such a key and no ring writes a ring holding that key to the key file, then puts the
//! marker in the key's place (compare and set: of two nodes doing it at once, one
//! wins). The key is no longer in the directory from then on. A version from before
//! the ring reads the marker as a key that is not hex and refuses to start.
//! Where the key file cannot be written by the service's user (`/etc/poplar`), `poplar
//! key init`, run as root, makes it.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use auth::KeyRing;
use directory::Directory as _;

use crate::{Config, Dir};

/// The row of `server_secrets` holding the marker (formerly the key itself).
pub const SERVER_KEY: &str = "server_key";

/// What the marker starts with; the rest is the ring's fingerprint.
const MARKER: &str = "key-ring sha256:";

/// The environment variable that may hold the ring's text.
pub const KEYS_ENV: &str = "POPLAR_KEYS";
/// The systemd credential's name.
pub const KEYS_CREDENTIAL: &str = "poplar-keys";

/// Where a ring was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingSource {
    /// `POPLAR_KEYS`.
    Environment,
    /// `$CREDENTIALS_DIRECTORY/poplar-keys`.
    Credential(PathBuf),
    /// The key file.
    File(PathBuf),
}

impl std::fmt::Display for RingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingSource::Environment => write!(f, "the {KEYS_ENV} environment variable"),
            RingSource::Credential(p) => write!(f, "the systemd credential {}", p.display()),
            RingSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The marker the directory keeps for `ring`.
pub fn marker(ring: &KeyRing) -> String {
    format!("{MARKER}{}", ring.fingerprint())
}

/// The ring this process is given, if any: read, never made. An unreadable or
/// malformed source is an error (never passed over for the next one).
pub fn find_ring(config: &Config) -> anyhow::Result<Option<(KeyRing, RingSource)>> {
    if let Ok(text) = std::env::var(KEYS_ENV) {
        let ring = KeyRing::parse(&text).with_context(|| RingSource::Environment.to_string())?;
        return Ok(Some((ring, RingSource::Environment)));
    }
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join(KEYS_CREDENTIAL);
        if path.exists() {
            let source = RingSource::Credential(path.clone());
            let text = std::fs::read_to_string(&path).with_context(|| source.to_string())?;
            let ring = KeyRing::parse(&text).with_context(|| source.to_string())?;
            return Ok(Some((ring, source)));
        }
    }
    let path = config.key_file();
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim().is_empty() => Ok(None),
        Ok(text) => {
            let ring = KeyRing::parse(&text).with_context(|| path.display().to_string())?;
            Ok(Some((ring, RingSource::File(path))))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading the key ring {}", path.display())),
    }
}

/// Opens a key file to be filled: a new one, or an empty regular file left by an
/// interrupted start (never through a symbolic link), mode 0640 whatever the umask.
pub fn open_ring_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let empty = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(!empty)
        .truncate(empty)
        .mode(0o640)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    Ok(file)
}

/// Writes `ring` to `path` as a new file (mode 0640), and syncs it. Fails if a file is
/// there already (but an empty one, left by an interrupted `key init`).
pub fn write_ring(path: &Path, ring: &KeyRing) -> anyhow::Result<()> {
    let mut file = open_ring_file(path)
        .with_context(|| format!("creating the key ring {}", path.display()))?;
    write_ring_to(&mut file, ring)
        .with_context(|| format!("writing the key ring {}", path.display()))
}

/// Replaces the ring file at `path` by `ring` at once (a new file beside it, with the
/// old one's mode, owner and group, synced, then renamed over it): a crash leaves the
/// old ring or the new, never half of one.
pub fn rewrite_ring(path: &Path, ring: &KeyRing) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = folder.join(format!(".{name}.new"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(meta.mode() & 0o777)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o777))?;
    }
    let owned = std::fs::metadata(&tmp)?;
    if (owned.uid(), owned.gid()) != (meta.uid(), meta.gid()) {
        std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid())).with_context(
            || format!("giving {} its owner and group (run as root)", tmp.display()),
        )?;
    }
    write_ring_to(&mut file, ring).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    std::fs::File::open(folder)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", folder.display()))?;
    Ok(())
}

/// Writes `ring` into a file opened for it, and syncs it.
pub fn write_ring_to(file: &mut std::fs::File, ring: &KeyRing) -> std::io::Result<()> {
    file.write_all(ring.to_text().as_bytes())?;
    file.sync_all()
}

/// The server's key ring, checked against the directory's marker; on the first start
/// of an installation, made (or moved out of the directory) into the key file.
pub async fn key_ring(config: &Config, dir: &Dir) -> anyhow::Result<KeyRing> {
    key_ring_with(config, dir, |ring| make_file(config, ring)).await
}

/// [`key_ring`], with `write` keeping a ring made or moved out of the directory (`poplar
/// key init` fills the file it made as root).
pub async fn key_ring_with(
    config: &Config,
    dir: &Dir,
    write: impl FnOnce(&KeyRing) -> anyhow::Result<()>,
) -> anyhow::Result<KeyRing> {
    let found = find_ring(config)?;
    let stored = dir
        .server_secret(SERVER_KEY)
        .await
        .context("reading the key ring's marker from the directory")?;
    match (found, stored) {
        (Some((ring, source)), Some(stored)) => {
            if let Some(fingerprint) = stored.strip_prefix(MARKER) {
                if stored != marker(&ring) {
                    bail!(
                        "the key ring in {source} (fingerprint {}) is not the one this directory's secrets were sealed under ({fingerprint}): every node needs the same key file (docs/cluster.md)",
                        ring.fingerprint(),
                    );
                }
                return Ok(ring);
            }
            // The key is still in the directory: it must be one of the ring's.
            if !ring.holds_legacy(&stored) {
                bail!(
                    "the key ring in {source} does not hold the server key this directory still keeps: sealed secrets would be lost. Remove the ring to move the directory's key into a new one, or put the key into it"
                );
            }
            take_out(dir, &stored, &ring).await?;
            Ok(ring)
        }
        (Some((ring, source)), None) => {
            let kept = dir
                .ensure_server_secret(SERVER_KEY, &marker(&ring))
                .await
                .context("storing the key ring's marker in the directory")?;
            if kept != marker(&ring) {
                bail!(
                    "another node stored its own key ring's marker first ({kept}); the key ring in {source} is not that one: copy that node's key file here (docs/cluster.md)"
                );
            }
            Ok(ring)
        }
        (None, Some(stored)) if stored.starts_with(MARKER) => bail!(
            "this directory's secrets are sealed under a key ring (fingerprint {}) that is not here: put its key file at {} (from another node or your key backup; docs/cluster.md), or give it as the systemd credential {KEYS_CREDENTIAL} or in {KEYS_ENV}",
            stored.trim_start_matches(MARKER),
            config.key_file().display()
        ),
        (None, Some(stored)) => {
            // Before the ring: the key in the directory moves into the key file.
            let ring = KeyRing::adopt(&stored)
                .context("the directory's server_key is not a key (hex of 16 bytes or more)")?;
            write(&ring)?;
            take_out(dir, &stored, &ring).await?;
            tracing::info!(
                file = %config.key_file().display(),
                fingerprint = %ring.fingerprint(),
                "the server key moved out of the directory into the key ring"
            );
            Ok(ring)
        }
        (None, None) => {
            // A new installation, or one from before the directory kept the key.
            let legacy = config.server_key_path();
            let ring = match std::fs::read_to_string(&legacy) {
                Ok(text) => KeyRing::adopt(&text)
                    .with_context(|| format!("{}: not a key", legacy.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    KeyRing::generate().context("no randomness for a new key ring")?
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("reading {}", legacy.display()));
                }
            };
            write(&ring)?;
            let kept = dir
                .ensure_server_secret(SERVER_KEY, &marker(&ring))
                .await
                .context("storing the key ring's marker in the directory")?;
            if kept == marker(&ring) && legacy.exists() {
                // Moved into the ring: the old file must not stay beside the directory.
                match std::fs::remove_file(&legacy) {
                    Ok(()) => {
                        tracing::info!(file = %legacy.display(), "the old key file, now in the key ring, is removed")
                    }
                    Err(e) => {
                        tracing::warn!(file = %legacy.display(), error = %e, "remove the old key file: the key ring holds its key")
                    }
                }
            }
            if kept != marker(&ring) {
                // Another node made its ring first: ours seals nothing yet, so it goes.
                let _ = std::fs::remove_file(config.key_file());
                bail!(
                    "another node made the directory's key ring first: copy its key file to {} (docs/cluster.md)",
                    config.key_file().display()
                );
            }
            Ok(ring)
        }
    }
}

/// The key file made by root before the switch to the service's user, for the ring that
/// user then makes or moves out of the directory (see [`hand_over_ring_file`]).
static HANDED_OVER: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Called as root, before the switch to `[process] user`, when there is no key ring
/// yet: makes the (empty) key file, 0640, root's with the service's group, for the
/// ring made after the switch (where the service's user could not create it:
/// `/etc/poplar`). Nothing when a ring is there or the file cannot be made (the error
/// then comes, with its advice, when the ring is needed).
pub fn hand_over_ring_file(config: &Config, gid: u32) {
    if !matches!(find_ring(config), Ok(None)) {
        return;
    }
    let path = config.key_file();
    let made = open_ring_file(&path)
        .and_then(|file| std::os::unix::fs::fchown(&file, Some(0), Some(gid)).map(|()| file));
    if let Ok(file) = made {
        *HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    }
}

/// Makes the key file for `ring` (filling the one root made, if any), or says who can.
pub fn make_file(config: &Config, ring: &KeyRing) -> anyhow::Result<()> {
    let path = config.key_file();
    if let Some(mut file) = HANDED_OVER.lock().unwrap_or_else(|e| e.into_inner()).take() {
        return write_ring_to(&mut file, ring)
            .with_context(|| format!("writing the key ring {}", path.display()));
    }
    write_ring(&path, ring).with_context(|| {
        format!(
            "no key ring yet, and {} cannot be made by this user: run `poplar key init` as root (it makes the file readable by the service's group)",
            path.display()
        )
    })
}

/// Reads the key ring again and puts it in force if it changed (a rotation). A ring
/// that is gone, unreadable or another one changes nothing and is logged.
pub fn reload_ring(config: &Config, keys: &auth::keys::Keys) {
    match find_ring(config) {
        Ok(Some((ring, _))) => {
            if let Err(e) = keys.replace(ring) {
                tracing::error!(error = %e, "key ring not reloaded; the one in force stays");
            }
        }
        Ok(None) => tracing::error!(
            file = %config.key_file().display(),
            "the key ring is gone; the one in force stays until a restart"
        ),
        Err(e) => tracing::error!(
            error = format!("{e:#}"),
            "key ring not reloaded; the one in force stays"
        ),
    }
}

/// Reads the key ring again whenever its file changes (checked every `every`), until
/// `shutdown`: a rotation by `poplar key` on this host, or a new file copied from
/// another node, is in force within that time.
pub async fn watch_ring(
    config: Config,
    keys: std::sync::Arc<auth::keys::Keys>,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    use sha2::Digest as _;
    let path = config.key_file();
    let stamp = move || {
        std::fs::read(&path)
            .ok()
            .map(|b| <[u8; 32]>::from(sha2::Sha256::digest(&b)))
    };
    let mut seen = stamp();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let now = stamp();
        if now != seen {
            seen = now;
            reload_ring(&config, &keys);
        }
    }
}

/// What the directory says of `ring`, for `poplar key show` (changes nothing).
pub async fn recognition(ring: Option<&KeyRing>, dir: &Dir) -> anyhow::Result<Recognition> {
    let stored = dir.server_secret(SERVER_KEY).await?;
    Ok(match (stored, ring) {
        (None, _) => Recognition::Unnamed,
        (Some(s), Some(ring)) if s == marker(ring) => Recognition::This,
        (Some(s), _) if s.starts_with(MARKER) => {
            Recognition::Other(s.trim_start_matches(MARKER).to_owned())
        }
        (Some(_), _) => Recognition::KeyInside,
    })
}

/// What the directory keeps about the key ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recognition {
    /// Nothing yet (a new installation).
    Unnamed,
    /// This ring's fingerprint.
    This,
    /// Another ring's fingerprint.
    Other(String),
    /// The key itself, from before the ring (moved out at the next start).
    KeyInside,
}

/// Puts the marker where the key was.
async fn take_out(dir: &Dir, key: &str, ring: &KeyRing) -> anyhow::Result<()> {
    let replaced = dir
        .replace_server_secret(SERVER_KEY, key, &marker(ring))
        .await
        .context("replacing the server key in the directory by the key ring's marker")?;
    if !replaced {
        // Another node did it at the same time: fine if it was this same ring.
        let now = dir.server_secret(SERVER_KEY).await?;
        if now.as_deref() != Some(marker(ring).as_str()) {
            bail!("the directory's server key changed while it was being moved out; start again");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_owned(),
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn made_once_outside_the_directory_which_keeps_only_a_marker() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config(tmp.path());
        let dir = Dir::open(&config.directory_path()).await.unwrap();
        let a = key_ring(&config, &dir).await.unwrap();
        let b = key_ring(&config, &dir).await.unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.active().secret().len(), 32);
        let stored = dir.server_secret(SERVER_KEY).await.unwrap().unwrap();
        assert_eq!(stored, marker(&a));
        assert!(KeyRing::adopt(&stored).is_none(), "the marker is no key");
        let mode = std::fs::metadata(config.key_file()).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o640
        );
        // Another ring meeting that directory is refused, and so is none at all.
        std::fs::remove_file(config.key_file()).unwrap();
        let err = format!("{:#}", key_ring(&config, &dir).await.unwrap_err());
        assert!(err.contains("not here"), "{err}");
        write_ring(&config.key_file(), &KeyRing::generate().unwrap()).unwrap();
        let err = format!("{:#}", key_ring(&config, &dir).await.unwrap_err());
        assert!(err.contains("is not the one"), "{err}");
    }

    #[tokio::test]
    async fn the_key_in_the_directory_moves_into_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config(tmp.path());
        let dir = Dir::open(&config.directory_path()).await.unwrap();
        let legacy = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        dir.ensure_server_secret(SERVER_KEY, legacy).await.unwrap();
        let ring = key_ring(&config, &dir).await.unwrap();
        assert!(ring.holds_legacy(legacy));
        assert_eq!(ring.base(), ring.active().secret(), "SCRAM fakes unchanged");
        let stored = dir.server_secret(SERVER_KEY).await.unwrap().unwrap();
        assert_eq!(stored, marker(&ring));
        assert!(!stored.contains(legacy));
        let text = std::fs::read_to_string(config.key_file()).unwrap();
        assert!(text.contains(legacy));
        assert_eq!(
            key_ring(&config, &dir).await.unwrap().fingerprint(),
            ring.fingerprint()
        );
    }

    #[tokio::test]
    async fn a_legacy_key_file_is_adopted_and_a_ring_without_the_directorys_key_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let config = config(tmp.path());
        let path = config.server_key_path();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let legacy = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
        std::fs::write(&path, format!("{legacy}\n")).unwrap();
        let dir = Dir::open(&config.directory_path()).await.unwrap();
        assert!(key_ring(&config, &dir).await.unwrap().holds_legacy(legacy));

        let other = tempfile::tempdir().unwrap();
        let config = super::tests::config(other.path());
        let dir = Dir::open(&config.directory_path()).await.unwrap();
        dir.ensure_server_secret(SERVER_KEY, legacy).await.unwrap();
        write_ring(&config.key_file(), &KeyRing::generate().unwrap()).unwrap();
        let err = format!("{:#}", key_ring(&config, &dir).await.unwrap_err());
        assert!(err.contains("does not hold the server key"), "{err}");
        assert_eq!(
            dir.server_secret(SERVER_KEY).await.unwrap().as_deref(),
            Some(legacy),
            "nothing moved"
        );
    }
}
