//! `poplar mfa ...` and `poplar app-password ...`: two-factor sign-in and app passwords.

use std::io::BufRead as _;
use std::sync::Arc;

use anyhow::Context as _;
use auth::MfaPolicy;
use clap::Subcommand;
use directory::Directory as _;
use server::{Config, Dir};

#[derive(Subcommand)]
pub enum MfaCommand {
    /// Enrol a TOTP authenticator: shows a QR code and an otpauth:// URI, then asks
    /// for the current code to confirm (or confirm later with `mfa confirm`).
    Enroll {
        /// User name.
        name: String,
    },
    /// Confirm an enrolment with the code the app shows now; prints ten recovery codes.
    Confirm {
        /// User name.
        name: String,
        /// The 6-digit code.
        code: String,
    },
    /// Remove the user's authenticator and recovery codes.
    Disable {
        /// User name.
        name: String,
    },
    /// Show the user's two-factor state.
    Status {
        /// User name.
        name: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Set the user's policy: off, optional, required, or default (the server's).
    Policy {
        /// User name.
        name: String,
        /// off | optional | required | default
        #[arg(value_parser = ["off", "optional", "required", "default"])]
        policy: String,
    },
    /// Check a code for the user: a current TOTP code (each works once) or a recovery
    /// code (used up). Exit status 0 if accepted.
    Check {
        /// User name.
        name: String,
        /// The code, read from standard input when absent.
        code: Option<String>,
    },
    /// Replace the user's recovery codes with ten new ones.
    RecoveryCodes {
        /// User name.
        name: String,
    },
}

#[derive(Subcommand)]
pub enum AppPasswordCommand {
    /// Create an app password for a mail client; it is shown once.
    Create {
        /// User name.
        name: String,
        /// What it is for ("phone", "scanner").
        #[arg(long)]
        label: String,
        /// Expire after this many days.
        #[arg(long)]
        expires_days: Option<u32>,
        /// Networks it may be used from (CIDRs or addresses; repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        networks: Vec<String>,
        /// Read-only: DELE is refused, mail stays on the server.
        #[arg(long)]
        read_only: bool,
    },
    /// List the user's app passwords with their last use.
    List {
        /// User name.
        name: String,
        /// One JSON array (times in RFC 3339, `null` for never).
        #[arg(long)]
        json: bool,
    },
    /// Revoke an app password at once.
    Revoke {
        /// User name.
        name: String,
        /// Its id, as `list` shows it.
        id: i64,
    },
}

fn qr(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::new(uri.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
    )
}

fn print_recovery_codes(codes: &[zeroize::Zeroizing<String>]) {
    println!("Recovery codes (each works once; store them apart from the phone):");
    for code in codes {
        println!("  {}", code.as_str());
    }
}

pub async fn run_mfa(cmd: MfaCommand, config: &Config, dir: Arc<Dir>) -> anyhow::Result<()> {
    let auth = server::authenticator(config, dir).await?;
    match cmd {
        MfaCommand::Enroll { name } => {
            let enrolment = auth.mfa_begin(&name).await?;
            if let Some(picture) = qr(&enrolment.uri) {
                println!("{picture}");
            }
            println!("uri {}", enrolment.uri.as_str());
            println!("secret {}", enrolment.secret.as_str());
            println!("Scan the code (or type the secret) into an authenticator app.");
            print!("Code from the app (empty to confirm later): ");
            use std::io::Write as _;
            std::io::stdout().flush()?;
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let code = line.trim();
            if code.is_empty() {
                println!();
                eprintln!("not confirmed yet: run `poplar mfa confirm {name} CODE`");
                return Ok(());
            }
            let codes = auth.mfa_confirm(&name, code).await?;
            println!("two-factor sign-in enrolled");
            print_recovery_codes(&codes);
        }
        MfaCommand::Confirm { name, code } => {
            let codes = auth.mfa_confirm(&name, &code).await?;
            println!("two-factor sign-in enrolled");
            print_recovery_codes(&codes);
        }
        MfaCommand::Disable { name } => {
            auth.mfa_disable(&name).await?;
            eprintln!("two-factor sign-in removed for {name}");
        }
        MfaCommand::Status { name, json } => {
            let s = auth.mfa_status(&name).await?;
            if json {
                let value = serde_json::json!({
                    "policy": s.policy.as_str(),
                    "own_policy": s.own_policy,
                    "enrolled": s.enrolled,
                    "pending": s.pending,
                    "recovery_codes_left": s.recovery_codes_left,
                    "app_passwords": s.app_passwords,
                    "password_alone_opens_pop3": s.password_alone_opens_pop3,
                });
                println!("{value}");
                return Ok(());
            }
            println!(
                "policy {}{}",
                s.policy.as_str(),
                if s.own_policy {
                    ""
                } else {
                    " (server default)"
                }
            );
            println!(
                "authenticator {}",
                if s.enrolled {
                    "enrolled"
                } else if s.pending {
                    "waiting for confirmation"
                } else {
                    "none"
                }
            );
            println!("recovery codes left {}", s.recovery_codes_left);
            println!("app passwords {}", s.app_passwords);
            println!(
                "account password alone opens POP3: {}",
                if s.password_alone_opens_pop3 {
                    "yes"
                } else {
                    "no"
                }
            );
        }
        MfaCommand::Policy { name, policy } => {
            let parsed = match policy.as_str() {
                "default" => None,
                other => Some(MfaPolicy::parse(other).context("bad policy")?),
            };
            auth.set_mfa_policy(&name, parsed).await?;
            eprintln!("two-factor policy for {name}: {policy}");
        }
        MfaCommand::Check { name, code } => {
            let code = match code {
                Some(code) => code,
                None => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line)?;
                    line.trim().to_owned()
                }
            };
            if auth.mfa_check(&name, &code).await? {
                println!("accepted");
            } else {
                crate::exit::refused!("code refused");
            }
        }
        MfaCommand::RecoveryCodes { name } => {
            let user = auth
                .policy()
                .canonical(&name)
                .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
            let codes = auth.new_recovery_codes(&user).await?;
            print_recovery_codes(&codes);
        }
    }
    Ok(())
}

pub async fn run_app_password(
    cmd: AppPasswordCommand,
    config: &Config,
    dir: Arc<Dir>,
) -> anyhow::Result<()> {
    let auth = server::authenticator(config, dir.clone()).await?;
    let now = auth.guard().now();
    match cmd {
        AppPasswordCommand::Create {
            name,
            label,
            expires_days,
            networks,
            read_only,
        } => {
            let networks = if networks.is_empty() {
                None
            } else {
                Some(auth::defence::network_list(&networks).map_err(|e| anyhow::anyhow!(e))?)
            };
            let expires = expires_days.map(|d| now + i64::from(d) * 86_400_000);
            let (id, password) = auth
                .create_app_password(&name, &label, expires, networks, read_only)
                .await?;
            println!("{}", password.as_str());
            eprintln!(
                "app password {id} ({label}) created; it is shown only this once. Use it in \
                 the mail client instead of the account password."
            );
        }
        AppPasswordCommand::List { name, json } => {
            let user = auth
                .policy()
                .canonical(&name)
                .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
            if dir.find_user(&user).await?.is_none() {
                crate::exit::not_found!("no such user: {user}");
            }
            let listed = dir.list_app_passwords(&user).await?;
            if json {
                let time = |t: Option<i64>| t.map(crate::lockout::rfc3339);
                let rows: Vec<_> = listed
                    .iter()
                    .map(|a| {
                        serde_json::json!({
                            "id": a.id,
                            "label": a.label,
                            "created": crate::lockout::rfc3339(a.created_at),
                            "expires": time(a.expires_at),
                            "expired": a.expires_at.is_some_and(|t| t <= now),
                            "read_only": a.read_only,
                            "networks": a.networks,
                            "last_used": time(a.last_used_at),
                            "last_used_from": a.last_used_from,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
                return Ok(());
            }
            println!(
                "{:<5} {:<20} {:<21} {:<21} {:<10} {:<20} last use",
                "id", "label", "created", "expires", "scope", "networks"
            );
            for a in listed {
                let expires = match a.expires_at {
                    Some(t) if t <= now => format!("{} (expired)", crate::lockout::rfc3339(t)),
                    Some(t) => crate::lockout::rfc3339(t),
                    None => "never".into(),
                };
                let last = match (a.last_used_at, &a.last_used_from) {
                    (Some(t), Some(from)) => format!("{} from {from}", crate::lockout::rfc3339(t)),
                    _ => "never".into(),
                };
                println!(
                    "{:<5} {:<20} {:<21} {:<21} {:<10} {:<20} {last}",
                    a.id,
                    a.label,
                    crate::lockout::rfc3339(a.created_at),
                    expires,
                    if a.read_only { "read-only" } else { "full" },
                    a.networks.as_deref().unwrap_or("any"),
                );
            }
        }
        AppPasswordCommand::Revoke { name, id } => {
            let user = auth
                .policy()
                .canonical(&name)
                .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
            if !dir.revoke_app_password(&user, id).await? {
                crate::exit::not_found!("{user} has no app password {id}");
            }
            eprintln!("app password {id} of {user} revoked");
        }
    }
    Ok(())
}
