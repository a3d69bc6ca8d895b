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
        user: String,
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
        dovecot,
        uidlist,
        format,
        list,
    } = cmd;
    let canonical = server::username_policy(config)
        .canonical(&user)
        .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
    let Some(record) = dir.find_user(&canonical).await? else {
        crate::exit::not_found!("no such user: {canonical}");
    };
    let maildir = maildir::Maildir::new(&record.maildir);
    let pairs = match (dovecot, list) {
        (true, None) => {
            let Some(format) = format else {
                bail!(
                    "--format is required with --dovecot: the pop3_uidl_format the old server used"
                );
            };
            let path = uidlist.unwrap_or_else(|| maildir.root().join("dovecot-uidlist"));
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            maildir::migrate::from_dovecot_uidlist(&text, &format)?
        }
        (false, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            maildir::migrate::from_uidl_list(&text)?
        }
        _ => crate::exit::usage!("say where the UIDLs come from: --dovecot or --list FILE"),
    };
    maildir
        .set_uidl_override(&pairs)
        .with_context(|| format!("saving UIDLs in {}", maildir.root().display()))?;
    eprintln!(
        "imported {} UIDLs for {canonical} into {}",
        pairs.len(),
        maildir.root().join("poplar-uidl").display()
    );
    Ok(())
}
