//! `poplar user show`: everything about one account in one place, as text for people
//! and JSON for scripts.

use std::sync::Arc;

use directory::Directory as _;
use serde::Serialize;

use server::{Config, Dir};

/// What `user show` prints.
#[derive(Debug, Serialize)]
pub struct Shown {
    name: String,
    enabled: bool,
    maildir: String,
    /// Networks the user may sign in from; `None`: anywhere.
    allowed_networks: Option<String>,
    /// Whether an APOP secret is set.
    apop: bool,
    password: Password,
    two_factor: TwoFactor,
    app_passwords: Vec<AppPassword>,
    notices: bool,
    last_sign_in: Option<SignIn>,
}

#[derive(Debug, Serialize)]
struct Password {
    /// When the account was made (RFC 3339).
    created_at: Option<String>,
    /// When the password was last set through Poplar; `None`: not known.
    set_at: Option<String>,
    /// Still the password imported from another server.
    imported: bool,
}

#[derive(Debug, Serialize)]
struct TwoFactor {
    policy: &'static str,
    /// The policy is the user's own, not the server default.
    own_policy: bool,
    enrolled: bool,
    recovery_codes_left: u32,
}

#[derive(Debug, Serialize)]
struct AppPassword {
    id: i64,
    label: String,
    read_only: bool,
}

#[derive(Debug, Serialize)]
struct SignIn {
    at: String,
    address: String,
    mechanism: String,
    result: String,
}

/// Reads everything about `user` (canonical); not found is exit code 3.
pub async fn collect(config: &Config, dir: Arc<Dir>, user: &str) -> anyhow::Result<Shown> {
    let Some(record) = dir.find_user(user).await? else {
        crate::exit::not_found!("no such user: {user}");
    };
    let dates = dir
        .credential_dates()
        .await?
        .into_iter()
        .find(|d| d.user == user);
    let auth = server::authenticator(config, dir.clone()).await?;
    let mfa = auth.mfa_status(user).await?;
    let app_passwords = dir
        .list_app_passwords(user)
        .await?
        .into_iter()
        .map(|a| AppPassword {
            id: a.id,
            label: a.label,
            read_only: a.read_only,
        })
        .collect();
    let last = dir.sign_in_history(user, 1).await?.into_iter().next();
    Ok(Shown {
        name: record.name,
        enabled: record.enabled,
        maildir: record.maildir,
        allowed_networks: record.allowed_networks,
        apop: record.apop_secret.is_some(),
        password: Password {
            created_at: dates.as_ref().map(|d| d.created_at.clone()),
            set_at: dates.as_ref().and_then(|d| d.password_set_at.clone()),
            imported: dates.as_ref().is_some_and(|d| d.imported),
        },
        two_factor: TwoFactor {
            policy: mfa.policy.as_str(),
            own_policy: mfa.own_policy,
            enrolled: mfa.enrolled,
            recovery_codes_left: mfa.recovery_codes_left,
        },
        app_passwords,
        notices: dir.notices_enabled(user).await?.unwrap_or(true),
        last_sign_in: last.map(|e| SignIn {
            at: crate::lockout::rfc3339(e.at),
            address: e.address,
            mechanism: e.mechanism,
            result: e.result,
        }),
    })
}

impl Shown {
    /// The text form: one `field  value` line each.
    pub fn text(&self) -> String {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let password = match (&self.password.set_at, self.password.imported) {
            (_, true) => "imported from another server (not yet changed)".to_owned(),
            (Some(at), false) => format!("set {at}"),
            (None, false) => "set (date not known)".to_owned(),
        };
        let apps = if self.app_passwords.is_empty() {
            "none".to_owned()
        } else {
            self.app_passwords
                .iter()
                .map(|a| {
                    let ro = if a.read_only { ", read-only" } else { "" };
                    format!("{} ({}{ro})", a.id, a.label)
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let last = self.last_sign_in.as_ref().map_or("never".to_owned(), |s| {
            format!(
                "{} from {} ({}, {})",
                s.at, s.address, s.mechanism, s.result
            )
        });
        let tf = &self.two_factor;
        let rows = [
            ("user", self.name.clone()),
            ("enabled", yes(self.enabled).to_owned()),
            ("maildir", self.maildir.clone()),
            (
                "networks",
                self.allowed_networks
                    .clone()
                    .unwrap_or_else(|| "any".into()),
            ),
            ("password", password),
            (
                "created",
                self.password.created_at.clone().unwrap_or_default(),
            ),
            (
                "two-factor",
                format!(
                    "policy {}{}, authenticator {}, {} recovery codes left",
                    tf.policy,
                    if tf.own_policy { " (own)" } else { "" },
                    if tf.enrolled { "enrolled" } else { "none" },
                    tf.recovery_codes_left
                ),
            ),
            ("app passwords", apps),
            ("apop secret", yes(self.apop).to_owned()),
            (
                "notices",
                if self.notices { "on" } else { "off" }.to_owned(),
            ),
            ("last sign-in", last),
        ];
        rows.iter().map(|(k, v)| format!("{k:<14} {v}\n")).collect()
    }
}
