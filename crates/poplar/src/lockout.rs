//! `poplar lockout list|clear`: what the sign-in defence holds, and lifting it.

use std::net::IpAddr;
use std::sync::Arc;

use auth::defence::{Clock as _, LockoutPolicy, SystemClock, source_key};
use clap::Subcommand;
use directory::{ClearTarget, Directory as _, Millis};
use server::{Config, Dir};

#[derive(Subcommand)]
pub enum LockoutCommand {
    /// Show banned addresses, accounts locked for unfamiliar networks, and the
    /// (user, address) pairs that are being throttled or counted.
    List {
        /// One JSON object: {bans, locked_accounts, failures}.
        #[arg(long)]
        json: bool,
    },
    /// Lift locks and bans.
    Clear {
        /// Every count and the lock of this user.
        #[arg(long, conflicts_with_all = ["address", "all"])]
        user: Option<String>,
        /// The ban and counts of this address (IPv6: its /64).
        #[arg(long, conflicts_with = "all")]
        address: Option<IpAddr>,
        /// Everything.
        #[arg(long)]
        all: bool,
        /// Clear everything without asking (needed with --all when there is no terminal
        /// to ask on).
        #[arg(long)]
        yes: bool,
    },
}

/// An RFC 3339 UTC time, to the second.
pub fn rfc3339(ms: Millis) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

pub async fn run(cmd: LockoutCommand, config: &Config, dir: Arc<Dir>) -> anyhow::Result<()> {
    let policy = config.defence.policy();
    match cmd {
        LockoutCommand::List { json } => list(&policy, &dir, json).await,
        LockoutCommand::Clear {
            user,
            address,
            all,
            yes,
        } => {
            let removed = match (user, address, all) {
                (Some(user), _, _) => {
                    let canonical = server::username_policy(config)
                        .canonical(&user)
                        .unwrap_or(user);
                    dir.clear_lockouts(ClearTarget::User(&canonical)).await?
                }
                (_, Some(ip), _) => {
                    dir.clear_lockouts(ClearTarget::Source(&source_key(ip)))
                        .await?
                }
                (_, _, true) => {
                    crate::confirm::confirm(
                        "lift every lock, ban and failure count of every account",
                        yes,
                    )?;
                    dir.clear_lockouts(ClearTarget::All).await?
                }
                _ => crate::exit::usage!("say what to clear: --user NAME, --address IP or --all"),
            };
            eprintln!("cleared {removed} entries");
            Ok(())
        }
    }
}

/// What `lockout list` shows, computed once for the text and the JSON.
#[derive(serde::Serialize)]
struct Listing {
    bans: Vec<BanRow>,
    locked_accounts: Vec<LockedRow>,
    failures: Vec<FailureRow>,
}

#[derive(serde::Serialize)]
struct BanRow {
    address: String,
    until: String,
    accounts: u32,
    since: String,
}

#[derive(serde::Serialize)]
struct LockedRow {
    user: String,
    until: String,
    failures: u32,
}

#[derive(serde::Serialize)]
struct FailureRow {
    user: String,
    address: String,
    failures: u32,
    last: String,
    throttled_until: Option<String>,
}

async fn list(policy: &LockoutPolicy, dir: &Dir, json: bool) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let forget = i64::try_from(policy.forget_after.as_millis()).unwrap_or(i64::MAX);
    let state = dir.lockout_state(now, now.saturating_sub(forget)).await?;
    let listing = Listing {
        bans: state
            .bans
            .iter()
            .map(|b| BanRow {
                address: b.source.clone(),
                until: rfc3339(b.banned_until),
                accounts: b.accounts,
                since: rfc3339(b.banned_at),
            })
            .collect(),
        locked_accounts: state
            .accounts
            .iter()
            .filter_map(|a| {
                let until = policy
                    .locked_until(a.failures, Some(a.last_failure))
                    .filter(|t| *t > now)?;
                Some(LockedRow {
                    user: a.user.clone(),
                    until: rfc3339(until),
                    failures: a.failures,
                })
            })
            .collect(),
        failures: state
            .sources
            .iter()
            .map(|s| FailureRow {
                user: s.user.clone(),
                address: s.source.clone(),
                failures: s.failures,
                last: rfc3339(s.last_failure),
                throttled_until: policy
                    .throttled_until(s.failures, Some(s.last_failure))
                    .filter(|t| *t > now)
                    .map(rfc3339),
            })
            .collect(),
    };
    if json {
        println!("{}", serde_json::to_string(&listing)?);
        return Ok(());
    }
    println!("banned addresses:");
    if listing.bans.is_empty() {
        println!("  none");
    }
    for b in &listing.bans {
        println!(
            "  {}  until {}  (failed on {} accounts; banned {})",
            b.address, b.until, b.accounts, b.since
        );
    }
    println!("accounts locked for unfamiliar networks:");
    if listing.locked_accounts.is_empty() {
        println!("  none");
    }
    for a in &listing.locked_accounts {
        println!("  {}  until {}  ({} failures)", a.user, a.until, a.failures);
    }
    println!("failures by user and address:");
    if listing.failures.is_empty() {
        println!("  none");
    }
    for f in &listing.failures {
        let wait = match &f.throttled_until {
            Some(until) => format!("throttled until {until}"),
            None => "not throttled".to_owned(),
        };
        println!(
            "  {}  from {}  {} failures, last {}  {wait}",
            f.user, f.address, f.failures, f.last
        );
    }
    Ok(())
}
