//! `poplar key`: the key ring that seals the directory's secrets, kept apart from it
//! (server::secrets says where it is looked for and how the directory recognises it).

use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use server::secrets::{self, Recognition};
use server::{Config, Dir};

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Make the key ring: run as root, it makes the key file readable by root and the
    /// service's group only (0640), moves the server key out of the directory if it is
    /// still there (a version from before the ring kept it there), and records the
    /// ring's fingerprint in the directory.
    Init {
        /// Succeed, changing nothing, when a key ring is already there (for scripts
        /// such as a package's postinst).
        #[arg(long)]
        if_missing: bool,
    },
    /// Where the key ring is, its fingerprint and key numbers, and whether the
    /// directory recognises it. Never prints a key.
    Show {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// What `key init` made before the privilege switch: the empty key file, created by
/// root with its mode and group, which the service's user then fills.
pub struct Prepared(Option<std::fs::File>);

impl Prepared {
    /// Nothing to prepare (every other command).
    pub fn none() -> Self {
        Prepared(None)
    }
}

/// For `key init`, before the switch to `[process] user`: the key file made now (as
/// root: `0640`, group of the service), so the service's user can fill it but not
/// replace it. Nothing when a ring is there already (`--if-missing`; else an error).
pub fn prepare(cmd: &KeyCommand, config: &Config) -> anyhow::Result<Prepared> {
    let KeyCommand::Init { if_missing } = cmd else {
        return Ok(Prepared(None));
    };
    if let Some((_, source)) = secrets::find_ring(config)? {
        if *if_missing {
            return Ok(Prepared(None));
        }
        crate::exit::exists!("a key ring is there already: {source}");
    }
    let path = config.key_file();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let empty = std::fs::metadata(&path).is_ok_and(|m| m.len() == 0);
    let file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(!empty)
            .truncate(empty)
            .mode(0o640)
            .open(&path)
            .with_context(|| format!("creating the key ring {}", path.display()))?
    };
    if let Some(identity) = server::process::Identity::resolve(&config.process)? {
        // Root keeps it; the service's group may read it. Only root may do this.
        std::os::unix::fs::fchown(&file, Some(0), Some(identity.gid.as_raw())).with_context(
            || {
                format!(
                    "giving {} to root and the group of {} (run `poplar key init` as root)",
                    path.display(),
                    identity.user
                )
            },
        )?;
    }
    Ok(Prepared(Some(file)))
}

pub async fn run(
    cmd: KeyCommand,
    config: &Config,
    dir: Arc<Dir>,
    prepared: Prepared,
) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Init { .. } => {
            let ring = match prepared.0 {
                // Already there (--if-missing): only checked against the directory.
                None => secrets::key_ring(config, &dir).await?,
                Some(mut file) => {
                    secrets::key_ring_with(config, &dir, |ring| {
                        secrets::write_ring_to(&mut file, ring).with_context(|| {
                            format!("writing the key ring {}", config.key_file().display())
                        })
                    })
                    .await?
                }
            };
            let (_, source) = secrets::find_ring(config)?.context("the key ring vanished")?;
            println!("key ring {source}");
            println!("fingerprint {}", ring.fingerprint());
            Ok(())
        }
        KeyCommand::Show { json } => {
            let found = secrets::find_ring(config)?;
            let recognition =
                secrets::recognition(found.as_ref().map(|(ring, _)| ring), &dir).await?;
            let directory = match &recognition {
                Recognition::Unnamed => "names no key ring yet".to_owned(),
                Recognition::This => "recognises this ring".to_owned(),
                Recognition::Other(fp) => format!("names another ring: {fp}"),
                Recognition::KeyInside => {
                    "still holds the server key itself (moved out at the next start, or by `poplar key init`)"
                        .to_owned()
                }
            };
            let Some((ring, source)) = found else {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({ "ring": null, "directory": directory })
                    );
                } else {
                    println!(
                        "no key ring at {} (nor in the credential or environment)",
                        config.key_file().display()
                    );
                    println!("directory: {directory}");
                }
                if let Recognition::Other(fp) = &recognition {
                    anyhow::bail!(
                        "no key ring here, and the directory's secrets are sealed under one (fingerprint {fp}): this node would not start"
                    );
                }
                return Ok(());
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "ring": source.to_string(),
                        "fingerprint": ring.fingerprint(),
                        "keys": ring.ids(),
                        "active": ring.active().id(),
                        "directory": directory,
                    })
                );
            } else {
                println!("key ring: {source}");
                println!("fingerprint: {}", ring.fingerprint());
                let ids: Vec<String> = ring
                    .ids()
                    .iter()
                    .map(|id| {
                        if *id == ring.active().id() {
                            format!("{id} (active)")
                        } else {
                            id.to_string()
                        }
                    })
                    .collect();
                println!("keys: {}", ids.join(", "));
                println!("directory: {directory}");
            }
            finish(&recognition)
        }
    }
}

/// `key show` fails (exit 1) when the directory names another ring: that node would
/// not start.
fn finish(recognition: &Recognition) -> anyhow::Result<()> {
    if let Recognition::Other(_) = recognition {
        anyhow::bail!(
            "this node's key ring is not the one the directory's secrets are sealed under"
        );
    }
    Ok(())
}
