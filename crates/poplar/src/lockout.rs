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
        LockoutCommand::Clear { user, address, all } => {
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
                (_, _, true) => dir.clear_lockouts(ClearTarget::All).await?,
                _ => crate::exit::usage!("say what to clear: --user NAME, --address IP or --all"),
            };
            eprintln!("cleared {removed} entries");
            Ok(())
        }
    }
}

async fn list(policy: &LockoutPolicy, dir: &Dir, json: bool) -> anyhow::Result<()> {
    let now = SystemClock.now();
    let forget = i64::try_from(policy.forget_after.as_millis()).unwrap_or(i64::MAX);
    let state = dir.lockout_state(now, now.saturating_sub(forget)).await?;
    if json {
        let bans: Vec<_> = state
            .bans
            .iter()
            .map(|b| {
                serde_json::json!({
                    "address": b.source, "until": rfc3339(b.banned_until),
                    "accounts": b.accounts, "since": rfc3339(b.banned_at),
                })
            })
            .collect();
        let locked: Vec<_> = state
            .accounts
            .iter()
            .filter_map(|a| {
                let until = policy
                    .locked_until(a.failures, Some(a.last_failure))
                    .filter(|t| *t > now)?;
                Some(serde_json::json!({
                    "user": a.user, "until": rfc3339(until), "failures": a.failures,
                }))
            })
            .collect();
        let failures: Vec<_> = state
            .sources
            .iter()
            .map(|s| {
                let until = policy
                    .throttled_until(s.failures, Some(s.last_failure))
                    .filter(|t| *t > now);
                serde_json::json!({
                    "user": s.user, "address": s.source, "failures": s.failures,
                    "last": rfc3339(s.last_failure), "throttled_until": until.map(rfc3339),
                })
            })
            .collect();
        let value = serde_json::json!({
            "bans": bans, "locked_accounts": locked, "failures": failures,
        });
        println!("{value}");
        return Ok(());
    }
    println!("banned addresses:");
    if state.bans.is_empty() {
        println!("  none");
    }
    for ban in &state.bans {
        println!(
            "  {}  until {}  (failed on {} accounts; banned {})",
            ban.source,
            rfc3339(ban.banned_until),
            ban.accounts,
            rfc3339(ban.banned_at)
        );
    }
    println!("accounts locked for unfamiliar networks:");
    let mut any = false;
    for account in &state.accounts {
        let Some(until) = policy
            .locked_until(account.failures, Some(account.last_failure))
            .filter(|t| *t > now)
        else {
            continue;
        };
        any = true;
        println!(
            "  {}  until {}  ({} failures)",
            account.user,
            rfc3339(until),
            account.failures
        );
    }
    if !any {
        println!("  none");
    }
    println!("failures by user and address:");
    if state.sources.is_empty() {
        println!("  none");
    }
    for s in &state.sources {
        let wait = match policy
            .throttled_until(s.failures, Some(s.last_failure))
            .filter(|t| *t > now)
        {
            Some(until) => format!("throttled until {}", rfc3339(until)),
            None => "not throttled".to_owned(),
        };
        println!(
            "  {}  from {}  {} failures, last {}  {wait}",
            s.user,
            s.source,
            s.failures,
            rfc3339(s.last_failure)
        );
    }
    Ok(())
}
