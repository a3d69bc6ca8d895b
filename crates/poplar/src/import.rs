//! `poplar import uidls`: keep serving the UIDLs a previous server gave, so clients do
//! not download every message again after the move.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use directory::Directory as _;
use server::{Config, Dir};

#[derive(Subcommand)]
pub enum ImportCommand {
    /// Import the UIDLs of one user's messages, from Dovecot's `dovecot-uidlist` (read
    /// with the `pop3_uidl_format` the old server used) or from a `filename uidl` list.
    Uidls {
        /// The user (their Maildir comes from the directory).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        user: Option<String>,
        /// Every user in the directory, each from the `dovecot-uidlist` in their Maildir
        /// (with `--dovecot`; users without one are listed and skipped). Shows progress
        /// on a terminal and asks first unless `--yes`.
        #[arg(long, requires = "dovecot", conflicts_with = "uidlist")]
        all: bool,
        /// Do not ask before importing for every user (`--all`).
        #[arg(long, requires = "all")]
        yes: bool,
        /// Read Dovecot's uidlist (default: `dovecot-uidlist` in the user's Maildir).
        #[arg(long, conflicts_with = "list")]
        dovecot: bool,
        /// Where the uidlist is, if not in the Maildir.
        #[arg(long, requires = "dovecot")]
        uidlist: Option<PathBuf>,
        /// Dovecot's `pop3_uidl_format` (`doveconf pop3_uidl_format`), e.g. `%08Xu%08Xv`
        /// or `%f`. Variables: %u, %v, %f, %g; %m cannot be reproduced.
        #[arg(long, requires = "dovecot")]
        format: Option<String>,
        /// A file of `filename uidl` lines (qpopper, Courier, scripts).
        #[arg(long)]
        list: Option<PathBuf>,
    },
}

pub async fn run(cmd: ImportCommand, config: &Config, dir: Arc<Dir>) -> anyhow::Result<()> {
    let ImportCommand::Uidls {
        user,
        all,
        yes,
        dovecot,
        uidlist,
        format,
        list,
    } = cmd;
    let source = match (dovecot, list, format) {
        (true, None, Some(format)) => Source::Dovecot { uidlist, format },
        (true, None, None) => {
            bail!("--format is required with --dovecot: the pop3_uidl_format the old server used")
        }
        (false, Some(path), _) => Source::List(path),
        _ => crate::exit::usage!("say where the UIDLs come from: --dovecot or --list FILE"),
    };
    if all {
        return import_all(&dir, &source, yes).await;
    }
    let user = user.context("a user name, or --all")?;
    let canonical = server::username_policy(config)
        .canonical(&user)
        .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
    let Some(record) = dir.find_user(&canonical).await? else {
        crate::exit::not_found!("no such user: {canonical}");
    };
    let (imported, saved) = import_one(record.maildir.as_ref(), &source)?;
    eprintln!(
        "imported {imported} UIDLs for {canonical} into {}",
        saved.display()
    );
    Ok(())
}

/// Where a user's UIDLs come from.
#[derive(Clone)]
enum Source {
    /// Dovecot's uidlist (in the Maildir unless named), read with its UIDL format.
    Dovecot {
        uidlist: Option<PathBuf>,
        format: String,
    },
    /// A `filename uidl` list.
    List(PathBuf),
}

/// The uidlist the old server left in a Maildir, when there is none: the user is skipped.
#[derive(Debug, thiserror::Error)]
#[error("no {0}")]
struct NoUidlist(PathBuf);

/// Imports the UIDLs of the Maildir at `root`; how many, and the file they are kept in.
fn import_one(root: &std::path::Path, source: &Source) -> anyhow::Result<(usize, PathBuf)> {
    let maildir = maildir::Maildir::new(root);
    let pairs = match source {
        Source::Dovecot { uidlist, format } => {
            let path = uidlist
                .clone()
                .unwrap_or_else(|| maildir.root().join("dovecot-uidlist"));
            let text = match std::fs::read_to_string(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(NoUidlist(path).into());
                }
                read => read.with_context(|| format!("reading {}", path.display()))?,
            };
            maildir::migrate::from_dovecot_uidlist(&text, format)?
        }
        Source::List(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            maildir::migrate::from_uidl_list(&text)?
        }
    };
    maildir
        .set_uidl_override(&pairs)
        .with_context(|| format!("saving UIDLs in {}", maildir.root().display()))?;
    Ok((pairs.len(), maildir.root().join("poplar-uidl")))
}

/// `--all`: every user's Maildir in turn, one line per user not imported, a progress
/// line on a terminal, and a summary. Fails (exit 1) if any user's uidlist could not be
/// read or used; users without one are only counted.
async fn import_all(dir: &Dir, source: &Source, yes: bool) -> anyhow::Result<()> {
    let users = dir.list_users().await?;
    crate::confirm::confirm(
        &format!(
            "import the UIDLs of {} users from their Maildirs' dovecot-uidlist",
            users.len()
        ),
        yes,
    )?;
    let mut bar = crate::progress::Progress::new("importing UIDLs", users.len() as u64);
    let (mut imported, mut uidls, mut without, mut failed) = (0usize, 0usize, 0usize, 0usize);
    for (n, record) in users.iter().enumerate() {
        bar.set(n as u64);
        let root = record.maildir.clone();
        let source = source.clone();
        match tokio::task::spawn_blocking(move || import_one(root.as_ref(), &source)).await? {
            Ok((count, _)) => {
                imported += 1;
                uidls += count;
            }
            Err(e) if e.is::<NoUidlist>() => {
                without += 1;
                bar.println(&format!("{}: skipped: {e}", record.name));
            }
            Err(e) => {
                failed += 1;
                bar.println(&format!("{}: not imported: {e:#}", record.name));
            }
        }
    }
    bar.set(users.len() as u64);
    drop(bar);
    eprintln!(
        "imported {uidls} UIDLs for {imported} users; {without} without a uidlist; {failed} failed"
    );
    if failed > 0 {
        bail!("{failed} users' UIDLs could not be imported (listed above)");
    }
    Ok(())
}
