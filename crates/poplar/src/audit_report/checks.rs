//! The checks of `poplar audit`, one function per finding (or group of findings).

use auth::defence::LockoutPolicy;
use auth::legacy::{Parsed, parse};
use directory::{LockoutState, Millis};
use server::Config;

use super::{Accounts, Finding, Item, Severity, Status};
use crate::lockout::rfc3339;

const DAY_MS: Millis = 86_400_000;

/// A finding whose status follows from whether `items` is empty.
fn finding(
    id: &'static str,
    title: &'static str,
    severity: Severity,
    items: Vec<Item>,
    summary: (String, &str),
    advice: &str,
) -> Finding {
    let (found, clean) = summary;
    let status = if items.is_empty() {
        Status::Ok
    } else {
        Status::Finding
    };
    Finding {
        id,
        title,
        status,
        severity,
        summary: if items.is_empty() {
            clean.to_owned()
        } else {
            found
        },
        advice: advice.to_owned(),
        items,
    }
}

/// "1 account", "2 accounts".
pub(super) fn accounts(n: usize) -> String {
    counted(n, "account", "accounts")
}

/// `n` and the noun in the form that fits it.
pub(super) fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn account(user: &str, enabled: bool) -> Item {
    Item {
        user: Some(user.to_owned()),
        enabled: Some(enabled),
        ..Item::default()
    }
}

/// Accounts whose account password alone still opens POP3: two-factor policy off, or
/// optional and not enrolled.
pub(super) fn two_factor(a: &Accounts) -> Finding {
    let items: Vec<Item> = a
        .users
        .iter()
        .filter(|u| a.password_alone.contains(&u.name))
        .map(|u| account(&u.name, u.enabled))
        .collect();
    let summary = format!(
        "{} sign in to POP3 with the account password alone",
        accounts(items.len())
    );
    finding(
        "two_factor_missing",
        "Accounts without a second factor",
        Severity::Medium,
        items,
        (
            summary,
            "every account needs a second factor (or an app password) for POP3",
        ),
        "Enrol an authenticator (`poplar mfa enroll USER`) and give each mail client its own app password (`poplar app-password create USER --label ...`), or require it for everyone with `mfa.default = \"required\"`. Meanwhile limit accounts to the networks they use (`poplar user networks USER CIDR...`) and watch failed sign-ins (contrib/fail2ban, contrib/crowdsec).",
    )
}

/// Accounts whose stored hash is not argon2id: they were imported and have not signed
/// in since (the first sign-in replaces the hash).
pub(super) fn legacy_hashes(a: &Accounts) -> Finding {
    let mut any_weak = false;
    let items: Vec<Item> = a
        .users
        .iter()
        .filter(|u| !u.password_hash.starts_with("$argon2id$"))
        .map(|u| {
            let scheme = match parse(&u.password_hash) {
                Ok(Parsed::Hash(hash)) => Some(hash.scheme()),
                _ => None,
            };
            let weak = scheme.is_none_or(|s| s.is_weak());
            any_weak |= weak;
            let note = match scheme {
                Some(s) if s.is_unsalted() => "unsalted fast digest: the weakest form",
                Some(s) if s.is_weak() => "fast digest without a work factor",
                Some(_) => "slow hash, but not argon2id and without SCRAM keys",
                None => "not a scheme Poplar can verify: the account cannot sign in",
            };
            Item {
                scheme: Some(scheme.map_or("unknown", |s| s.name())),
                weak: Some(weak),
                note: Some(note.to_owned()),
                ..account(&u.name, u.enabled)
            }
        })
        .collect();
    let count = items.len();
    finding(
        "legacy_hashes",
        "Accounts still on legacy password hashes",
        if any_weak {
            Severity::High
        } else {
            Severity::Medium
        },
        items,
        (
            format!(
                "{} still on a legacy hash from the import, not argon2id",
                accounts(count)
            ),
            "every password hash is argon2id",
        ),
        "Each is replaced by argon2id (with SCRAM keys) at the user's next successful sign-in. For accounts that will not sign in soon, set a new password (`poplar user passwd USER`) or disable them (`poplar user disable USER`), weak schemes first: a leaked directory gives up fast digests at GPU speed.",
    )
}

/// Imported accounts whose password nobody has set since: chosen under the old
/// server's rules, and known to whoever had its files.
pub(super) fn imported_passwords(a: &Accounts) -> Finding {
    let items: Vec<Item> = a
        .users
        .iter()
        .filter(|u| a.dates.get(&u.name).is_some_and(|d| d.imported))
        .map(|u| Item {
            created_at: a.dates.get(&u.name).map(|d| d.created_at.clone()),
            ..account(&u.name, u.enabled)
        })
        .collect();
    let count = items.len();
    finding(
        "imported_passwords_unchanged",
        "Passwords never changed since import",
        Severity::Medium,
        items,
        (
            format!(
                "{} still on the password from the previous server",
                accounts(count)
            ),
            "no account uses a password brought from another server",
        ),
        "These passwords were chosen under the old server's rules and may be known to anyone who had its password files or backups. Ask the users to choose new ones, or set them (`poplar user passwd USER`); an upgrade of the hash at sign-in does not count as a change.",
    )
}

/// App passwords without an expiry, or not used for 90 days (never used counts from
/// their creation).
pub(super) fn app_passwords(a: &Accounts, now: Millis) -> Finding {
    let idle_since = now.saturating_sub(90 * DAY_MS);
    let items: Vec<Item> = a
        .apps
        .iter()
        .filter_map(|p| {
            let unused = p.last_used_at.unwrap_or(p.created_at) < idle_since;
            let mut why = Vec::new();
            if p.expires_at.is_none() {
                why.push("no expiry".to_owned());
            }
            if unused {
                why.push(match p.last_used_at {
                    Some(t) => format!("last used {}", rfc3339(t)),
                    None => "never used".to_owned(),
                });
            }
            (!why.is_empty()).then(|| Item {
                user: Some(p.user.clone()),
                created_at: Some(rfc3339(p.created_at)),
                note: Some(format!(
                    "app password {} ({}): {}",
                    p.id,
                    p.label,
                    why.join(", ")
                )),
                ..Item::default()
            })
        })
        .collect();
    finding(
        "app_passwords",
        "App passwords unused for 90 days or without expiry",
        Severity::Low,
        items,
        (
            "some app passwords never expire or sit unused".to_owned(),
            "every app password expires and is in use",
        ),
        "Revoke app passwords nobody uses (`poplar app-password revoke USER ID`) and give new ones an expiry (`--expires-days`); `poplar app-password list USER` shows each one's last use.",
    )
}

/// Accounts whose recent history (the newest sign-ins the directory keeps) shows failed
/// attempts in the last 7 days: how many, and the latest, with its address.
pub(super) fn recent_failures(a: &Accounts, now: Millis) -> Finding {
    let since = now.saturating_sub(7 * DAY_MS);
    let items: Vec<Item> = a
        .users
        .iter()
        .filter_map(|u| {
            let history = a.history.get(&u.name)?;
            let failed: Vec<_> = history
                .iter()
                .filter(|e| e.result == "failure" && e.at >= since)
                .collect();
            let latest = failed.first()?;
            Some(Item {
                address: Some(latest.address.clone()),
                note: Some(format!(
                    "{} in 7 days, the latest {} by {} from {}",
                    counted(failed.len(), "failed sign-in", "failed sign-ins"),
                    rfc3339(latest.at),
                    latest.mechanism,
                    latest.address
                )),
                ..account(&u.name, u.enabled)
            })
        })
        .collect();
    finding(
        "recent_sign_in_failures",
        "Failed sign-ins to existing accounts in the last 7 days",
        Severity::Info,
        items,
        (
            "some accounts had failed sign-ins recently".to_owned(),
            "no failed sign-ins to existing accounts in the last 7 days",
        ),
        "A few failures are typos; many, or from unknown addresses, are guessing: see `poplar user history USER` and `poplar lockout list`, and make sure the account has a second factor.",
    )
}

/// Accounts with no sign-in on record, and accounts without one for `inactive_days`.
pub(super) fn sign_ins(a: &Accounts, now: Millis, inactive_days: u32) -> [Finding; 2] {
    let cutoff = now.saturating_sub(i64::from(inactive_days).saturating_mul(DAY_MS));
    let (mut never, mut stale) = (Vec::new(), Vec::new());
    for u in &a.users {
        match a.last_sign_in.get(&u.name) {
            None => never.push(Item {
                created_at: a.dates.get(&u.name).map(|d| d.created_at.clone()),
                ..account(&u.name, u.enabled)
            }),
            Some(&at) if at < cutoff => stale.push(Item {
                last_sign_in: Some(rfc3339(at)),
                ..account(&u.name, u.enabled)
            }),
            Some(_) => {}
        }
    }
    let (n_never, n_stale) = (never.len(), stale.len());
    [
        finding(
            "never_signed_in",
            "Accounts that never signed in",
            Severity::Low,
            never,
            (
                format!(
                    "{} with no successful sign-in on record (Poplar knows the sign-ins made through it, not those on a previous server)",
                    accounts(n_never)
                ),
                "every account has signed in",
            ),
            "An account nobody uses still has a working password that nobody watches. Confirm each is needed; disable (`poplar user disable USER`) or delete (`poplar user del USER`) the others.",
        ),
        finding(
            "inactive_accounts",
            "Accounts not signed in recently",
            Severity::Low,
            stale,
            (
                format!(
                    "{} without a sign-in for {inactive_days} days",
                    accounts(n_stale)
                ),
                "every account that signed in did so recently",
            ),
            "Ask whether the mailbox is still read; disable accounts of people who left (`poplar user disable USER`).",
        ),
    ]
}

/// Per-user IP rules, for review.
pub(super) fn ip_rules(a: &Accounts) -> Finding {
    let items: Vec<Item> = a
        .users
        .iter()
        .filter_map(|u| {
            let nets = u.allowed_networks.as_deref()?;
            Some(Item {
                networks: Some(nets.split(',').map(str::to_owned).collect()),
                ..account(&u.name, u.enabled)
            })
        })
        .collect();
    let count = items.len();
    let unrestricted = a.users.len() - count;
    finding(
        "ip_rules",
        "Per-user IP rules",
        Severity::Info,
        items,
        (
            format!(
                "{} may sign in only from the networks listed; {} from anywhere the [access] rules allow",
                accounts(count),
                accounts(unrestricted)
            ),
            "no account is limited to some networks: each may sign in from anywhere the [access] rules allow",
        ),
        "Check each list is still right (an office moved, a phone changed carrier). Accounts used only from known places, such as scanners and ticketing systems, are worth a rule: `poplar user networks USER CIDR...` (`--any` lifts it).",
    )
}

/// Accounts locked for unfamiliar networks, banned addresses, throttled pairs.
pub(super) fn locks_and_bans(
    state: &LockoutState,
    policy: &LockoutPolicy,
    now: Millis,
) -> [Finding; 3] {
    let locked: Vec<Item> = state
        .accounts
        .iter()
        .filter_map(|acc| {
            let until = policy
                .locked_until(acc.failures, Some(acc.last_failure))
                .filter(|t| *t > now)?;
            Some(Item {
                user: Some(acc.user.clone()),
                until: Some(rfc3339(until)),
                failures: Some(acc.failures),
                ..Item::default()
            })
        })
        .collect();
    let bans: Vec<Item> = state
        .bans
        .iter()
        .map(|b| Item {
            address: Some(b.source.clone()),
            until: Some(rfc3339(b.banned_until)),
            accounts: Some(b.accounts),
            ..Item::default()
        })
        .collect();
    let throttled: Vec<Item> = state
        .sources
        .iter()
        .filter_map(|s| {
            let until = policy
                .throttled_until(s.failures, Some(s.last_failure))
                .filter(|t| *t > now)?;
            Some(Item {
                user: Some(s.user.clone()),
                address: Some(s.source.clone()),
                until: Some(rfc3339(until)),
                failures: Some(s.failures),
                ..Item::default()
            })
        })
        .collect();
    let (n_locked, n_bans, n_throttled) = (locked.len(), bans.len(), throttled.len());
    [
        finding(
            "locked_accounts",
            "Accounts locked now",
            Severity::Medium,
            locked,
            (
                format!(
                    "{} locked for networks never signed in from, after repeated failures there: someone is guessing",
                    accounts(n_locked)
                ),
                "no account is locked",
            ),
            "The lock keeps guessers out while the user still signs in from familiar networks. Find the sources in the audit log (\"event\":\"auth\", \"reason\":\"locked\" or \"bad_password\"); if the password may be known, set a new one (`poplar user passwd USER`), then lift the lock with `poplar lockout clear --user USER`.",
        ),
        finding(
            "banned_addresses",
            "Addresses banned now",
            Severity::Low,
            bans,
            (
                format!(
                    "{} banned for failing on many accounts (password spraying)",
                    counted(n_bans, "address", "addresses")
                ),
                "no address is banned",
            ),
            "Bans end by themselves at the time shown. Addresses that keep coming back belong at the firewall (contrib/fail2ban, contrib/crowdsec) or in [access] deny; lift a ban on a shared address with `poplar lockout clear --address IP`.",
        ),
        finding(
            "throttled_sign_ins",
            "Sign-ins throttled now",
            Severity::Info,
            throttled,
            (
                format!(
                    "{} must wait before the next attempt, after repeated failures",
                    counted(n_throttled, "(user, address) pair", "(user, address) pairs")
                ),
                "no sign-in is being throttled",
            ),
            "Usually a client with an old password (a phone after a password change) or a guesser; the audit log tells them apart. `poplar lockout clear --user USER` lifts it.",
        ),
    ]
}

/// Plaintext mechanisms outside TLS, APOP, the TLS setup and other settings.
pub(super) fn configuration(config: &Config, a: &Accounts) -> Vec<Finding> {
    let mut warnings = config.warnings();
    warnings.extend(config.key_ring_warnings());
    warnings.extend(server::process::root_warning(&config.process));
    vec![
        super::config_checks::plaintext(config, &mut warnings),
        super::config_checks::apop(config, a, &mut warnings),
        super::config_checks::tls(config, &mut warnings),
        super::config_checks::other_warnings(warnings),
    ]
}
