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
    /// Where the key ring is, its fingerprint, its keys and what each still opens
    /// (sealed secrets, app passwords, unused recovery codes), and whether the
    /// directory recognises it. Never prints a key.
    Show {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Add a new key to the ring, not active yet. On a cluster: copy the file to every
    /// node, then `key activate` it (on one node).
    Add,
    /// Seal and key with key ID from now on, and re-seal every sealed secret (TOTP and
    /// APOP) under it. App passwords and recovery codes made before keep working and
    /// are re-keyed at their next use.
    Activate {
        /// The key's number (`key show`).
        id: u32,
    },
    /// `key add`, then `key activate` the new key: for one node (on a cluster, copy the
    /// file to the other nodes right away; they read it again by themselves).
    Rotate,
    /// Re-seal every sealed secret not under the active key (done by `activate`; run
    /// it again when a node sealed under an old key meanwhile).
    Reseal,
    /// Remove key ID from the ring: refused while the active key, or while anything
    /// still needs it (listed: users with app passwords or recovery codes made under
    /// it, until they are used, revoked or renewed).
    Retire {
        /// The key's number.
        id: u32,
    },
}

/// Whether `cmd` rewrites the ring file (done as the caller, root for
/// `/etc/poplar/server.key`, with the directory work in a `poplar` child that switches
/// to the service's user as every command does).
pub fn rewrites_ring(cmd: &KeyCommand) -> bool {
    matches!(
        cmd,
        KeyCommand::Add
            | KeyCommand::Activate { .. }
            | KeyCommand::Rotate
            | KeyCommand::Retire { .. }
    )
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
    let file = secrets::open_ring_file(&path)
        .with_context(|| format!("creating the key ring {}", path.display()))?;
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
        KeyCommand::Reseal => {
            let ring = secrets::key_ring(config, &dir).await?;
            let (done, raced, failed) = reseal(&ring, &dir).await?;
            println!(
                "re-sealed {done} secrets under key {}{}",
                ring.active().id(),
                if raced > 0 {
                    format!("; {raced} changed meanwhile (run `poplar key reseal` again)")
                } else {
                    String::new()
                }
            );
            if failed > 0 {
                anyhow::bail!(
                    "{failed} sealed secrets open under no key of the ring (listed above)"
                );
            }
            Ok(())
        }
        KeyCommand::Add
        | KeyCommand::Activate { .. }
        | KeyCommand::Rotate
        | KeyCommand::Retire { .. } => {
            unreachable!("rewrites the ring: `change_ring`, before the switch")
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
            let uses = if recognition == Recognition::This {
                uses(&ring, &dir).await?
            } else {
                Vec::new()
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
                        "uses": uses,
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
                for u in &uses {
                    println!(
                        "key {}{}: {} sealed secrets, {} app passwords, recovery codes of {} users",
                        u.id,
                        if ring.get(u.id).is_none() {
                            " (not in the ring)"
                        } else {
                            ""
                        },
                        u.sealed,
                        u.app_passwords.len(),
                        u.recovery_codes.len()
                    );
                }
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

/// What one key of the ring still opens.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyUses {
    pub id: u32,
    pub active: bool,
    /// Sealed TOTP and APOP secrets.
    pub sealed: usize,
    /// App passwords, as `user: id (label)`.
    pub app_passwords: Vec<String>,
    /// Users with unused recovery codes made under it, and how many.
    pub recovery_codes: Vec<String>,
    /// Users whose sealed secrets are under it.
    pub sealed_users: Vec<String>,
}

impl KeyUses {
    fn needed(&self) -> bool {
        self.sealed > 0 || !self.app_passwords.is_empty() || !self.recovery_codes.is_empty()
    }
}

/// What each key of `ring` (and any key not in it) still opens in the directory.
async fn uses(ring: &auth::KeyRing, dir: &Dir) -> anyhow::Result<Vec<KeyUses>> {
    use directory::Directory as _;
    use std::collections::BTreeMap;
    let mut by_id: BTreeMap<u32, KeyUses> = ring
        .ids()
        .into_iter()
        .map(|id| {
            (
                id,
                KeyUses {
                    id,
                    active: id == ring.active().id(),
                    ..KeyUses::default()
                },
            )
        })
        .collect();
    // A key not in the ring (retired too early, or another ring's) is listed as well.
    fn entry(by_id: &mut BTreeMap<u32, KeyUses>, id: u32) -> &mut KeyUses {
        by_id.entry(id).or_insert_with(|| KeyUses {
            id,
            ..KeyUses::default()
        })
    }
    for s in dir.sealed_secrets().await? {
        let id = auth::apop::ApopVault::sealed_under(&s.value).unwrap_or(0);
        let u = entry(&mut by_id, id);
        u.sealed += 1;
        if !u.sealed_users.contains(&s.user) {
            u.sealed_users.push(s.user);
        }
    }
    let mut codes: BTreeMap<(u32, String), usize> = BTreeMap::new();
    for h in dir.keyed_hashes().await? {
        let id = auth::mfa::CodeHasher::made_under(&h.hash);
        match h.app_password {
            Some((app, label)) => {
                let u = entry(&mut by_id, id);
                u.app_passwords.push(format!("{}: {app} ({label})", h.user));
            }
            None => *codes.entry((id, h.user)).or_default() += 1,
        }
    }
    for ((id, user), n) in codes {
        let u = entry(&mut by_id, id);
        u.recovery_codes.push(format!("{user}: {n}"));
    }
    Ok(by_id.into_values().collect())
}

/// Re-seals every sealed secret not under the active key; (re-sealed, left as they
/// were because they changed meanwhile, not openable).
async fn reseal(ring: &auth::KeyRing, dir: &Dir) -> anyhow::Result<(usize, usize, usize)> {
    use directory::{Directory as _, SealedKind};
    let keys = auth::keys::Keys::new(ring.clone());
    let set = keys.current();
    let active = ring.active().id();
    let (mut done, mut raced, mut failed) = (0, 0, 0);
    for s in dir.sealed_secrets().await? {
        if auth::apop::ApopVault::sealed_under(&s.value) == Some(active) {
            continue;
        }
        let vault = match s.kind {
            SealedKind::Apop => &set.apop,
            SealedKind::Totp => &set.totp,
        };
        let Some(plain) = vault.open(&s.user, &s.value) else {
            failed += 1;
            eprintln!(
                "{}: its {} secret opens under no key of the ring",
                s.user,
                if s.kind == SealedKind::Apop {
                    "APOP"
                } else {
                    "TOTP"
                }
            );
            continue;
        };
        let sealed = vault.seal(&s.user, &plain).context("sealing failed")?;
        if dir.reseal(&s, &sealed).await? {
            done += 1;
        } else {
            raced += 1;
        }
    }
    Ok((done, raced, failed))
}

/// The ring as its file holds it: a change is written there, so it must come from it.
fn ring_file(config: &Config) -> anyhow::Result<(auth::KeyRing, std::path::PathBuf)> {
    match secrets::find_ring(config)? {
        Some((ring, secrets::RingSource::File(path))) => Ok((ring, path)),
        Some((_, source)) => anyhow::bail!(
            "the key ring comes from {source}: change it there (the file it is made from) and restart"
        ),
        None => crate::exit::not_found!(
            "no key ring at {} yet: `poplar key init` makes one",
            config.key_file().display()
        ),
    }
}

/// Runs `poplar [--config PATH] key ARGS` (which switches to the service's user as
/// every command does, and opens the directory), its output passed through.
fn child(path: Option<&std::path::Path>, args: &[&str]) -> anyhow::Result<std::process::Output> {
    let exe = std::env::current_exe().context("finding the poplar binary")?;
    let mut cmd = std::process::Command::new(exe);
    if let Some(path) = path {
        cmd.arg("--config").arg(path);
    }
    cmd.arg("key").args(args);
    cmd.stderr(std::process::Stdio::inherit());
    let out = cmd.output().context("running poplar")?;
    if !out.status.success() {
        anyhow::bail!("`poplar key {}` failed ({})", args.join(" "), out.status);
    }
    Ok(out)
}

/// `key add|activate|rotate|retire`: the ring file rewritten here, the directory's
/// part done by a `poplar key reseal|show` child.
pub fn change_ring(
    cmd: KeyCommand,
    config: &Config,
    path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let (mut ring, file) = ring_file(config)?;
    match cmd {
        KeyCommand::Add => {
            let id = ring.add_key().context("no randomness for a new key")?;
            secrets::rewrite_ring(&file, &ring)?;
            println!("added key {id} to {} (not active yet)", file.display());
            println!("copy the file to every node, then: poplar key activate {id}");
        }
        KeyCommand::Activate { id } | KeyCommand::Retire { id } if ring.get(id).is_none() => {
            crate::exit::not_found!("no key {id} in {}", file.display());
        }
        KeyCommand::Activate { id } => {
            ring.activate(id).map_err(|e| anyhow::anyhow!(e))?;
            secrets::rewrite_ring(&file, &ring)?;
            println!("key {id} is active in {}", file.display());
            let out = child(path, &["reseal"])?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
        KeyCommand::Rotate => {
            let id = ring.add_key().context("no randomness for a new key")?;
            ring.activate(id).map_err(|e| anyhow::anyhow!(e))?;
            secrets::rewrite_ring(&file, &ring)?;
            println!("key {id} added and active in {}", file.display());
            let out = child(path, &["reseal"])?;
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
        KeyCommand::Retire { id } => {
            if ring.active().id() == id {
                crate::exit::refused!("key {id} is the active key: activate another first");
            }
            child(path, &["reseal"])?;
            let out = child(path, &["show", "--json"])?;
            let shown: serde_json::Value =
                serde_json::from_slice(&out.stdout).context("reading `poplar key show --json`")?;
            let uses: Vec<KeyUses> =
                serde_json::from_value(shown["uses"].clone()).context("reading the keys' uses")?;
            if let Some(u) = uses.iter().find(|u| u.id == id && u.needed()) {
                for a in &u.app_passwords {
                    println!("app password {a}");
                }
                for r in &u.recovery_codes {
                    println!("recovery codes of {r}");
                }
                for s in &u.sealed_users {
                    println!("sealed secret of {s}");
                }
                crate::exit::refused!(
                    "key {id} still opens what is listed above: app passwords are re-keyed at their next use (or revoke them); recovery codes when renewed (`poplar mfa` or the security page); sealed secrets by `poplar key reseal`"
                );
            }
            ring.remove(id).map_err(|e| anyhow::anyhow!(e))?;
            secrets::rewrite_ring(&file, &ring)?;
            println!("key {id} retired from {}", file.display());
        }
        KeyCommand::Init { .. } | KeyCommand::Show { .. } | KeyCommand::Reseal => {
            unreachable!("not a change of the ring file")
        }
    }
    Ok(())
}
