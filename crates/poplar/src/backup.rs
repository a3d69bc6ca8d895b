//! `poplar backup DEST`, `poplar backup verify DEST`, `poplar restore SRC`.
//!
//! A backup is a folder:
//!
//! - `directory.db`: the whole directory (users, credentials, two-factor, app passwords,
//!   defence state, sign-in history, the key ring's fingerprint), read in one snapshot
//!   (`directory copy`'s: a SQLite transaction, or one PostgreSQL repeatable-read
//!   transaction) into a SQLite file: Poplar's own portable format, which restores into
//!   SQLite or PostgreSQL alike. The schema is checked first: a table or column this
//!   version does not know stops the backup instead of being left out.
//! - `maildirs/<user>/`: what Poplar keeps in each Maildir and cannot rebuild (the
//!   imported UIDLs `poplar-uidl`, the retention records `poplar-retrieved`) and, with
//!   `--with-mail`, the messages themselves (`cur/`, `new/`: hard links where the
//!   backup is on the same file system, else copies; a message file is never changed
//!   in place, so neither is half of one).
//! - `manifest.json`: every file with its size and SHA-256, and what the backup is.
//!
//! The key ring is never in it unless `--with-key-ring` says so: a backup that holds
//! the ring opens every sealed secret it holds, which is what keeping them apart
//! prevents.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use directory::{AnyDirectory, Directory as _, Location};
use server::{Config, Dir};

/// What the manifest says the backup is.
const FORMAT: &str = "poplar-backup 1";
/// The Maildir files Poplar owns and cannot rebuild (caches are left out).
const MAILDIR_STATE: &[&str] = &["poplar-uidl", "poplar-retrieved"];

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub check: Option<BackupCheck>,
    /// A new (or empty) folder for the backup.
    pub dest: Option<PathBuf>,
    /// The messages too (hard links where possible), not only Poplar's own state.
    #[arg(long)]
    pub with_mail: bool,
    /// Put the key ring in the backup: whoever has the backup can then open every
    /// sealed secret in it (TOTP and APOP secrets) and test app passwords offline.
    /// Without it, keep the key file apart and restore it separately.
    #[arg(long)]
    pub with_key_ring: bool,
}

#[derive(Subcommand)]
pub enum BackupCheck {
    /// Check a backup against its manifest: every file there, of its size and SHA-256.
    Verify {
        /// The backup folder.
        dest: PathBuf,
    },
}

/// The manifest, `manifest.json`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    format: String,
    created_at: String,
    /// The directory it was taken from (a URL's password hidden).
    directory: String,
    users: usize,
    /// The fingerprint of the key ring that opens its sealed secrets.
    key_ring_fingerprint: String,
    with_mail: bool,
    with_key_ring: bool,
    files: Vec<FileEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FileEntry {
    path: String,
    size: u64,
    sha256: String,
}

pub async fn run(args: BackupArgs, config: &Config, dir: Arc<Dir>) -> anyhow::Result<()> {
    if let Some(BackupCheck::Verify { dest }) = args.check {
        let manifest = verify(&dest)?;
        println!(
            "{}: verified, {} files, {} bytes",
            dest.display(),
            manifest.files.len(),
            manifest.files.iter().map(|f| f.size).sum::<u64>()
        );
        return Ok(());
    }
    let dest = args
        .dest
        .context("the folder to back up into: poplar backup DEST")?;
    backup(config, &dir, &dest, args.with_mail, args.with_key_ring).await
}

async fn backup(
    config: &Config,
    dir: &Dir,
    dest: &Path,
    with_mail: bool,
    with_key_ring: bool,
) -> anyhow::Result<()> {
    if std::fs::read_dir(dest).is_ok_and(|mut d| d.next().is_some()) {
        crate::exit::exists!("{} is not empty: back up into a new folder", dest.display());
    }
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dest)
            .with_context(|| format!("creating {}", dest.display()))?;
        // Whatever it was (an empty folder made by hand): the backup holds every hash.
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))?;
    }
    let ring = server::secrets::key_ring(config, dir).await?;
    // The directory, in one snapshot, into the portable file.
    let copy = AnyDirectory::connect(&Location::Sqlite(dest.join("directory.db")))
        .await
        .context("creating the backup's directory file")?;
    let mut bar = crate::progress::Progress::new("directory", 0);
    directory::copy_directory_with_progress(dir, &copy, |done, total| {
        bar.set_total(total);
        bar.set(done);
    })
    .await?;
    drop(bar);
    // The users as of that snapshot.
    let users = copy.list_users().await?;
    copy.close().await;
    let mut bar = crate::progress::Progress::new("maildirs", users.len() as u64);
    for (n, user) in users.iter().enumerate() {
        bar.set(n as u64);
        let (src, to) = (
            PathBuf::from(&user.maildir),
            dest.join("maildirs").join(&user.name),
        );
        let (src2, to2) = (src.clone(), to.clone());
        tokio::task::spawn_blocking(move || save_maildir(&src2, &to2, with_mail))
            .await?
            .with_context(|| format!("{}: backing up {}", user.name, src.display()))?;
    }
    drop(bar);
    if with_key_ring {
        server::secrets::write_ring(&dest.join("server.key"), &ring)?;
    }
    let files = tokio::task::spawn_blocking({
        let dest = dest.to_owned();
        move || list_files(&dest)
    })
    .await??;
    let manifest = Manifest {
        format: FORMAT.into(),
        created_at: crate::lockout::rfc3339(
            i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis()),
            )
            .unwrap_or(0),
        ),
        directory: config.directory_display(),
        users: users.len(),
        key_ring_fingerprint: ring.fingerprint(),
        with_mail,
        with_key_ring,
        files,
    };
    let text = serde_json::to_vec_pretty(&manifest)?;
    std::fs::write(dest.join("manifest.json"), text).context("writing manifest.json")?;
    println!(
        "backed up {} users into {} ({} files, {} bytes){}",
        users.len(),
        dest.display(),
        manifest.files.len(),
        manifest.files.iter().map(|f| f.size).sum::<u64>(),
        if with_key_ring {
            "; it holds the key ring: keep it as you keep the key"
        } else {
            "; the key ring is not in it: keep the key file apart (fingerprint in manifest.json)"
        }
    );
    Ok(())
}

/// Poplar's files of one Maildir (and, with mail, its messages) into `to`.
fn save_maildir(src: &Path, to: &Path, with_mail: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for name in MAILDIR_STATE {
        copy_if_there(&src.join(name), &to.join(name))?;
    }
    if with_mail {
        // new/ first: a message a session moves from new/ to cur/ meanwhile is then
        // found in one or the other.
        for sub in ["new", "cur"] {
            let Ok(entries) = std::fs::read_dir(src.join(sub)) else {
                continue;
            };
            std::fs::create_dir_all(to.join(sub))?;
            for entry in entries {
                let entry = entry?;
                let (from, dest) = (entry.path(), to.join(sub).join(entry.file_name()));
                // Regular files only: a symbolic link planted in a Maildir must not
                // carry another file into the backup (or, restored, into the mailbox).
                if !entry.file_type()?.is_file() {
                    continue;
                }
                // A message renamed (flagged) or deleted meanwhile is simply not there.
                if std::fs::hard_link(&from, &dest).is_err() {
                    copy_if_there(&from, &dest)?;
                }
            }
        }
    }
    Ok(())
}

/// Copies `from` to `to` if `from` is there as a regular file (a file that vanished
/// meanwhile is skipped; a symbolic link is never followed).
fn copy_if_there(from: &Path, to: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(from) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", from.display())),
    }
    match std::fs::copy(from, to) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("copying {}", from.display())),
    }
}

/// Every file under `root` but the manifest, with its size and SHA-256, sorted.
fn list_files(root: &Path) -> anyhow::Result<Vec<FileEntry>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            let rel = path.strip_prefix(root)?.to_string_lossy().into_owned();
            if rel == "manifest.json" {
                continue;
            }
            let (size, sha256) = digest(&path)?;
            out.push(FileEntry {
                path: rel,
                size,
                sha256,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn digest(path: &Path) -> anyhow::Result<(u64, String)> {
    use sha2::Digest as _;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hash = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hash.update(&buf[..n]);
    }
    Ok((
        size,
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect(),
    ))
}

/// Checks `dest` against its manifest: the same files, sizes and digests.
fn verify(dest: &Path) -> anyhow::Result<Manifest> {
    let text = std::fs::read(dest.join("manifest.json"))
        .with_context(|| format!("{}: no manifest.json", dest.display()))?;
    let manifest: Manifest = serde_json::from_slice(&text).context("reading manifest.json")?;
    if manifest.format != FORMAT {
        bail!(
            "{}: not a backup this version reads ({})",
            dest.display(),
            manifest.format
        );
    }
    let found: BTreeMap<String, (u64, String)> = list_files(dest)?
        .into_iter()
        .map(|f| (f.path, (f.size, f.sha256)))
        .collect();
    let mut problems = Vec::new();
    for f in &manifest.files {
        match found.get(&f.path) {
            None => problems.push(format!("{}: missing", f.path)),
            Some((size, _)) if *size != f.size => {
                problems.push(format!("{}: {size} bytes, not {}", f.path, f.size));
            }
            Some((_, sha)) if *sha != f.sha256 => problems.push(format!("{}: changed", f.path)),
            Some(_) => {}
        }
    }
    let listed: std::collections::HashSet<&str> =
        manifest.files.iter().map(|f| f.path.as_str()).collect();
    for path in found.keys() {
        if !listed.contains(path.as_str()) {
            problems.push(format!("{path}: not in the manifest"));
        }
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!(
            "{}: {} problems (listed above)",
            dest.display(),
            problems.len()
        );
    }
    Ok(manifest)
}

/// `poplar restore SRC`: into the configured directory, which must be empty.
pub async fn restore(src: &Path, config: &Config, dir: Arc<Dir>) -> anyhow::Result<()> {
    let manifest = {
        let src = src.to_owned();
        tokio::task::spawn_blocking(move || verify(&src)).await??
    };
    // The ring that opens the backup's secrets: here already, or in the backup.
    match server::secrets::find_ring(config)? {
        Some((ring, source)) if ring.fingerprint() != manifest.key_ring_fingerprint => {
            bail!(
                "the key ring in {source} (fingerprint {}) does not open this backup's secrets (sealed under {}): put that ring's key file in place first",
                ring.fingerprint(),
                manifest.key_ring_fingerprint
            );
        }
        Some(_) => {}
        None if manifest.with_key_ring => {
            let text = std::fs::read_to_string(src.join("server.key"))?;
            let ring = auth::KeyRing::parse(&text).context("the backup's server.key")?;
            if ring.fingerprint() != manifest.key_ring_fingerprint {
                bail!("the backup's server.key is not the ring its manifest names");
            }
            server::secrets::make_file(config, &ring)?;
            println!("key ring restored to {}", config.key_file().display());
        }
        None => eprintln!(
            "warning: no key ring here: put the key file with fingerprint {} at {} before starting",
            manifest.key_ring_fingerprint,
            config.key_file().display()
        ),
    }
    // A copy of the backup's file is what is opened (opening runs the migrations,
    // which must not change the backup itself).
    let scratch = tempfile_in(&config.data_dir)?;
    let copied = restore_directory(src, &scratch, &dir).await;
    for suffix in ["", "-wal", "-shm"] {
        let mut p = scratch.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    copied.context("restoring the directory (the target must be empty)")?;
    let users = dir.list_users().await?;
    let mut bar = crate::progress::Progress::new("maildirs", users.len() as u64);
    let mut restored = 0;
    for (n, user) in users.iter().enumerate() {
        bar.set(n as u64);
        let from = src.join("maildirs").join(&user.name);
        if !from.is_dir() {
            continue;
        }
        let to = PathBuf::from(&user.maildir);
        tokio::task::spawn_blocking(move || put_back(&from, &to))
            .await?
            .with_context(|| format!("{}: restoring {}", user.name, user.maildir))?;
        restored += 1;
    }
    drop(bar);
    println!(
        "restored {} users into {} and the Maildir state of {restored}{}",
        users.len(),
        config.directory_display(),
        if manifest.with_mail {
            " (with their mail)"
        } else {
            ""
        }
    );
    Ok(())
}

/// The backup's directory file, copied to `scratch` and opened there, into `dir`.
async fn restore_directory(src: &Path, scratch: &Path, dir: &Dir) -> anyhow::Result<()> {
    std::fs::copy(src.join("directory.db"), scratch)?;
    let source = AnyDirectory::connect(&Location::Sqlite(scratch.to_owned())).await?;
    let mut bar = crate::progress::Progress::new("directory", 0);
    let copied = directory::copy_directory_with_progress(&source, dir, |done, total| {
        bar.set_total(total);
        bar.set(done);
    })
    .await;
    drop(bar);
    source.close().await;
    copied?;
    Ok(())
}

/// A backup's Maildir folder back into the Maildir at `to` (made if missing); files
/// already there are kept.
fn put_back(from: &Path, to: &Path) -> anyhow::Result<()> {
    maildir::Maildir::new(to).create()?;
    for name in MAILDIR_STATE {
        let target = to.join(name);
        if !target.exists() {
            copy_if_there(&from.join(name), &target)?;
        }
    }
    for sub in ["cur", "new"] {
        let Ok(entries) = std::fs::read_dir(from.join(sub)) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let target = to.join(sub).join(entry.file_name());
            if !target.exists() {
                copy_if_there(&entry.path(), &target)?;
            }
        }
    }
    Ok(())
}

/// A path for a scratch file in `folder` that does not exist yet.
fn tempfile_in(folder: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(folder)?;
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(folder.join(format!(".restore-{name}.db")))
}
