//! `poplar audit`: the report an auditor asks for. Each check of the account base and
//! of the configuration becomes a [`Finding`] that says what was found and what to do
//! about it: accounts without a second factor, legacy password hashes, passwords never
//! changed since an import, app passwords, accounts never or long not signed in,
//! per-user IP rules, current locks and bans, plaintext mechanisms and APOP, the TLS
//! setup and the remaining configuration warnings.
//!
//! Text by default, JSON with `--json` (a stable shape: `findings[].id`, `status`,
//! `severity`, `items`). Nothing secret is printed: of a password hash, only its scheme.

mod checks;
mod config_checks;
mod render;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use auth::defence::{Clock as _, SystemClock};
use clap::Args;
use directory::{CredentialDates, Directory as _, Millis, UserRecord};
use serde::Serialize;
use server::{Config, Dir};

use crate::lockout::rfc3339;

/// `poplar audit` options.
#[derive(Args)]
pub struct AuditArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Accounts without a sign-in for this many days are reported as inactive.
    #[arg(long, default_value_t = 180)]
    inactive_days: u32,
}

/// Whether a check found something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Something to act on (or, for `info`, to review).
    Finding,
    /// Nothing found.
    Ok,
}

/// How urgent a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Fix first: weak credentials or passwords that may cross a network in the clear.
    High,
    /// Plan a fix.
    Medium,
    /// Tidy up.
    Low,
    /// To review; not a weakness by itself.
    Info,
}

/// One check's result.
#[derive(Debug, Serialize)]
pub struct Finding {
    /// Stable identifier, e.g. `legacy_hashes`.
    pub id: &'static str,
    /// What the check looks for.
    pub title: &'static str,
    pub status: Status,
    pub severity: Severity,
    /// What was found, in a sentence.
    pub summary: String,
    /// What to do about it.
    pub advice: String,
    /// The accounts, addresses or settings concerned.
    pub items: Vec<Item>,
}

/// An account, address or setting in a finding; fields that do not apply are left out.
#[derive(Debug, Default, Serialize)]
pub struct Item {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    /// For accounts: whether it may sign in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Password hash scheme (Dovecot name), for legacy hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<&'static str>,
    /// A fast hash with no work factor (salted or not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weak: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sign_in: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// For bans: accounts the address failed on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accounts: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub generated_at: String,
    pub directory: String,
    pub users: usize,
    /// Findings (status `finding`) by severity.
    pub summary: BTreeMap<&'static str, usize>,
    pub findings: Vec<Finding>,
}

/// What the account checks read from the directory, once.
struct Accounts {
    users: Vec<UserRecord>,
    dates: HashMap<String, CredentialDates>,
    last_sign_in: HashMap<String, Millis>,
    /// Users whose account password alone opens POP3.
    password_alone: std::collections::HashSet<String>,
    /// Every app password.
    apps: Vec<directory::AppPassword>,
    /// Each account's recent sign-ins (newest first, from the bounded history).
    history: HashMap<String, Vec<directory::SignInEntry>>,
}

pub async fn run(args: AuditArgs, config: &Config, dir: Arc<Dir>) -> anyhow::Result<()> {
    let report = build(&args, config, &dir).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render::text(&report));
    }
    Ok(())
}

async fn build(args: &AuditArgs, config: &Config, dir: &Dir) -> anyhow::Result<Report> {
    let now = SystemClock.now();
    let users = dir.list_users().await?;
    let default_mfa = auth::MfaPolicy::parse(&config.mfa.default).unwrap_or_default();
    let mut password_alone = std::collections::HashSet::new();
    let mut apps = Vec::new();
    let mut history = HashMap::new();
    for u in &users {
        history.insert(u.name.clone(), dir.sign_in_history(&u.name, 50).await?);
        let policy = match dir.mfa_policy(&u.name).await? {
            Some(own) => auth::MfaPolicy::parse(&own).unwrap_or(auth::MfaPolicy::Required),
            None => default_mfa,
        };
        let alone = match policy {
            auth::MfaPolicy::Off => true,
            auth::MfaPolicy::Optional => !dir.mfa(&u.name).await?.is_some_and(|m| m.confirmed),
            auth::MfaPolicy::Required => false,
        };
        if alone {
            password_alone.insert(u.name.clone());
        }
        apps.extend(dir.list_app_passwords(&u.name).await?);
    }
    let accounts = Accounts {
        password_alone,
        apps,
        history,
        users,
        dates: (dir.credential_dates().await?)
            .into_iter()
            .map(|d| (d.user.clone(), d))
            .collect(),
        last_sign_in: (dir.last_sign_ins().await?)
            .into_iter()
            .map(|s| (s.user, s.at))
            .collect(),
    };
    let policy = config.defence.policy();
    let forget = i64::try_from(policy.forget_after.as_millis()).unwrap_or(i64::MAX);
    let lockouts = dir.lockout_state(now, now.saturating_sub(forget)).await?;

    let mut findings = vec![
        checks::two_factor(&accounts),
        checks::legacy_hashes(&accounts),
        checks::imported_passwords(&accounts),
        checks::app_passwords(&accounts, now),
    ];
    findings.extend(checks::sign_ins(&accounts, now, args.inactive_days));
    findings.push(checks::recent_failures(&accounts, now));
    findings.push(checks::ip_rules(&accounts));
    findings.extend(checks::locks_and_bans(&lockouts, &policy, now));
    findings.extend(checks::configuration(config, &accounts));

    let mut summary = BTreeMap::new();
    for f in findings.iter().filter(|f| f.status == Status::Finding) {
        *summary.entry(severity_name(f.severity)).or_insert(0) += 1;
    }
    Ok(Report {
        generated_at: rfc3339(now),
        directory: config.directory_display(),
        users: accounts.users.len(),
        summary,
        findings,
    })
}

fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::High => "high",
        Severity::Medium => "medium",
        Severity::Low => "low",
        Severity::Info => "info",
    }
}
