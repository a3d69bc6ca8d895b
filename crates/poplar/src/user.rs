//! `poplar user ...`: add, passwd, del, list, show, disable and enable, import, and the
//! per-user settings. Passwords come from a prompt or from standard
//! input (`--password-stdin`), never from the command line, where `ps` would show them,
//! and must pass the password policy (`[passwords]`, see `crate::passwords`).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use directory::Directory as _;
use server::{Config, Dir};
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a user and create their Maildir.
    Add {
        /// User name (stored in canonical form).
        name: String,
        /// Serve an existing Maildir (for example one Postfix or Dovecot delivers to).
        /// Default: <maildir_root>/<name>.
        #[arg(long)]
        maildir: Option<PathBuf>,
        /// Read the password as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Set the password even if the password policy refuses it; the reasons are
        /// still printed, as a warning.
        #[arg(long)]
        allow_weak: bool,
    },
    /// Set a user's password.
    Passwd {
        /// User name.
        name: String,
        /// Read the password as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// Set the password even if the password policy refuses it; the reasons are
        /// still printed, as a warning.
        #[arg(long)]
        allow_weak: bool,
    },
    /// Set a user's APOP secret (separate from their password; stored encrypted under
    /// the server key). APOP itself is off unless `apop.enabled` is set.
    ApopSecret {
        /// User name.
        name: String,
        /// Remove the secret: APOP is then refused for this user.
        #[arg(long, conflicts_with = "password_stdin")]
        clear: bool,
        /// Read the secret as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Import users from a Dovecot passwd-file or a plain `user:hash` list. Legacy hashes
    /// ({SHA512-CRYPT}, $6$, $5$, bcrypt, $y$, {SSHA*}, {ARGON2ID}, {PBKDF2}, ...) are
    /// kept and upgraded to argon2id at each user's first sign-in; {PLAIN} entries are
    /// hashed now. Every line that cannot be imported is reported with its number and
    /// the reason, among them hashes whose check needs more memory or time than
    /// auth.import_max_memory_kib and auth.import_max_time_ms allow.
    Import {
        /// The file to read.
        file: PathBuf,
        /// Maildirs are `<DIR>/<user>` (default: the configured maildir root), for
        /// lines that say nothing of their own (see --maildir-subdir).
        #[arg(long)]
        maildir_root: Option<PathBuf>,
        /// A line's Maildir is its `userdb_mail=maildir:PATH` field when it has one
        /// (`~`, `%u`, `%n`, `%d`, `%h` expanded as Dovecot does); else, with this
        /// option, `<home>/<SUBDIR>` from the line's home field; else
        /// `<maildir root>/<user>`.
        #[arg(long, value_name = "SUBDIR")]
        maildir_subdir: Option<PathBuf>,
        /// Say what each line would do (user, scheme, Maildir, or why not), and change
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// Import without asking (needed when there is no terminal to ask on).
        #[arg(long)]
        yes: bool,
        /// Import hashes above auth.import_max_memory_kib or auth.import_max_time_ms
        /// too (each such line says so). Hashes beyond what Poplar ever checks (1 GiB,
        /// an estimated 4 s) are still refused.
        #[arg(long)]
        allow_costly_hashes: bool,
    },
    /// Stop a user from signing in (their mail and settings are kept).
    Disable {
        /// User name.
        name: String,
    },
    /// Let a disabled user sign in again.
    Enable {
        /// User name.
        name: String,
    },
    /// Remove a user from the directory (their Maildir is left in place).
    Del {
        /// User name.
        name: String,
    },
    /// List users, one per line.
    List {
        /// One JSON array of {name, enabled, maildir}.
        #[arg(long)]
        json: bool,
    },
    /// Show everything about one user: account, password, two factors, app passwords,
    /// networks, notices, the last sign-in.
    Show {
        /// User name.
        name: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show a user's recent sign-ins (newest first; the newest 50 are kept).
    History {
        /// User name.
        name: String,
        /// One JSON array of {at, address, mechanism, result}.
        #[arg(long)]
        json: bool,
    },
    /// Turn a user's security notices (new network, account lock) on or off.
    Notices {
        /// User name.
        name: String,
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// Show or set the networks a user may sign in from. Sign-ins from elsewhere fail
    /// exactly like a wrong password.
    Networks {
        /// User name.
        name: String,
        /// CIDRs (or single addresses) to allow; none: show the current list.
        networks: Vec<String>,
        /// Allow every address again.
        #[arg(long, conflicts_with = "networks")]
        any: bool,
    },
}

pub async fn run(cmd: UserCommand, config: &Config, dir: Arc<Dir>) -> anyhow::Result<()> {
    let policy = server::username_policy(config);
    match cmd {
        UserCommand::Add {
            name,
            maildir,
            password_stdin,
            allow_weak,
        } => {
            let canonical = policy
                .canonical(&name)
                .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
            let maildir = match maildir {
                Some(path) => std::path::absolute(&path)?,
                None => std::path::absolute(config.maildir_root().join(&canonical))?,
            };
            // Before the prompt: no point choosing a password for a name that is taken.
            if dir.find_user(&canonical).await?.is_some() {
                crate::exit::exists!("cannot add user: user already exists");
            }
            let password = read_password(password_stdin, true)?;
            // A new account has no second factor yet.
            crate::passwords::enforce(config, &canonical, &password, false, allow_weak)?;
            let auth = server::authenticator(config, dir).await?;
            let added = auth
                .add_user(
                    &name,
                    password.as_bytes(),
                    maildir.to_string_lossy().into_owned(),
                )
                .await
                .map_err(|e| anyhow::anyhow!("cannot add user: {e}"))?;
            maildir::Maildir::new(&maildir)
                .create()
                .with_context(|| format!("creating Maildir {}", maildir.display()))?;
            eprintln!("added {added} with Maildir {}", maildir.display());
        }
        UserCommand::Passwd {
            name,
            password_stdin,
            allow_weak,
        } => {
            let canonical = policy
                .canonical(&name)
                .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
            if dir.find_user(&canonical).await?.is_none() {
                crate::exit::not_found!("no such user: {canonical}");
            }
            let password = read_password(password_stdin, true)?;
            let auth = server::authenticator(config, dir).await?;
            // Where the password alone no longer opens the account (two factors on),
            // the shorter minimum applies.
            let mfa_required = !auth
                .mfa_status(&canonical)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .password_alone_opens_pop3;
            crate::passwords::enforce(config, &canonical, &password, mfa_required, allow_weak)?;
            let changed = auth
                .set_password(&canonical, password.as_bytes())
                .await
                .map_err(|e| anyhow::anyhow!("cannot set password: {e}"))?;
            if !changed {
                crate::exit::not_found!("no such user: {canonical}");
            }
            eprintln!("password changed for {canonical}");
        }
        UserCommand::ApopSecret {
            name,
            clear,
            password_stdin,
        } => {
            let canonical = policy
                .canonical(&name)
                .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
            let secret = if clear {
                None
            } else {
                Some(read_password(password_stdin, true)?)
            };
            let auth = server::authenticator(config, dir).await?;
            let changed = auth
                .set_apop_secret(&canonical, secret.as_ref().map(|s| s.as_bytes()))
                .await
                .map_err(|e| anyhow::anyhow!("cannot set the APOP secret: {e}"))?;
            if !changed {
                crate::exit::not_found!("no such user: {canonical}");
            }
            match (clear, config.apop.enabled) {
                (true, _) => eprintln!("APOP secret removed for {canonical}"),
                (false, true) => eprintln!("APOP secret set for {canonical}"),
                (false, false) => eprintln!(
                    "APOP secret set for {canonical}; APOP stays off until apop.enabled = true"
                ),
            }
        }
        UserCommand::Import {
            file,
            maildir_root,
            maildir_subdir,
            dry_run,
            yes,
            allow_costly_hashes,
        } => {
            let costly = if allow_costly_hashes {
                auth::CostlyHashes::Allow
            } else {
                auth::CostlyHashes::Refuse
            };
            let root = std::path::absolute(maildir_root.unwrap_or_else(|| config.maildir_root()))?;
            let options = ImportOptions {
                root,
                subdir: maildir_subdir,
                costly,
                dry_run,
                yes,
            };
            import(&file, &options, config, dir).await?;
        }
        UserCommand::Disable { name } => set_enabled(config, &dir, &name, false).await?,
        UserCommand::Enable { name } => set_enabled(config, &dir, &name, true).await?,
        UserCommand::Del { name } => {
            let canonical = policy
                .canonical(&name)
                .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
            let Some(record) = dir.find_user(&canonical).await? else {
                crate::exit::not_found!("no such user: {canonical}");
            };
            if !dir.delete_user(&canonical).await? {
                crate::exit::not_found!("no such user: {canonical}");
            }
            eprintln!("removed {canonical}; their Maildir was left in place");
            end_sessions(config, &dir, &canonical, &record.maildir).await?;
        }
        UserCommand::List { json } => {
            let users = dir.list_users().await?;
            if json {
                let rows: Vec<_> = users
                    .iter()
                    .map(|u| {
                        serde_json::json!({
                            "name": u.name, "enabled": u.enabled, "maildir": u.maildir,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for user in users {
                    println!("{}", user.name);
                }
            }
        }
        UserCommand::Show { name, json } => {
            let canonical = policy
                .canonical(&name)
                .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
            let shown = crate::user_show::collect(config, dir, &canonical).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&shown)?);
            } else {
                print!("{}", shown.text());
            }
        }
        UserCommand::History { name, json } => {
            let canonical = policy
                .canonical(&name)
                .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
            if dir.find_user(&canonical).await?.is_none() {
                crate::exit::not_found!("no such user: {canonical}");
            }
            let history = dir.sign_in_history(&canonical, 50).await?;
            if json {
                let rows: Vec<_> = history
                    .iter()
                    .map(|e| {
                        serde_json::json!({
                            "at": crate::lockout::rfc3339(e.at), "address": e.address,
                            "mechanism": e.mechanism, "result": e.result,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            }
            for e in history.iter().filter(|_| !json) {
                println!(
                    "{}  {:<39}  {:<20}  {}",
                    crate::lockout::rfc3339(e.at),
                    e.address,
                    e.mechanism,
                    e.result
                );
            }
        }
        UserCommand::Notices { name, state } => {
            let canonical = policy
                .canonical(&name)
                .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
            if !dir.set_notices(&canonical, state == "on").await? {
                crate::exit::not_found!("no such user: {canonical}");
            }
            eprintln!("security notices {state} for {canonical}");
        }
        UserCommand::Networks {
            name,
            networks,
            any,
        } => {
            let canonical = policy
                .canonical(&name)
                .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
            if networks.is_empty() && !any {
                let Some(user) = dir.find_user(&canonical).await? else {
                    crate::exit::not_found!("no such user: {canonical}");
                };
                match user.allowed_networks {
                    Some(list) => println!("{list}"),
                    None => println!("any"),
                }
                return Ok(());
            }
            let list = if any {
                None
            } else {
                Some(auth::defence::network_list(&networks).map_err(|e| anyhow::anyhow!(e))?)
            };
            if !dir
                .set_allowed_networks(&canonical, list.as_deref())
                .await?
            {
                crate::exit::not_found!("no such user: {canonical}");
            }
            eprintln!(
                "{canonical} may sign in from {}",
                list.as_deref().unwrap_or("any address")
            );
        }
    }
    Ok(())
}

async fn set_enabled(config: &Config, dir: &Dir, name: &str, enabled: bool) -> anyhow::Result<()> {
    let canonical = server::username_policy(config)
        .canonical(name)
        .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
    if !dir.set_enabled(&canonical, enabled).await? {
        crate::exit::not_found!("no such user: {canonical}");
    }
    eprintln!(
        "{canonical} {}",
        if enabled { "enabled" } else { "disabled" }
    );
    if !enabled && let Some(record) = dir.find_user(&canonical).await? {
        end_sessions(config, dir, &canonical, &record.maildir).await?;
    }
    Ok(())
}

/// Ends the live sessions of a user just disabled or deleted: on this node at once
/// (through the running server's control socket, if one runs here), and on other nodes
/// of a cluster by breaking the user's maildrop lease, which the session holding it
/// finds gone at its next renewal (within a third of `directory.maildrop_lease_secs`).
async fn end_sessions(
    config: &Config,
    dir: &Dir,
    canonical: &str,
    maildir: &str,
) -> anyhow::Result<()> {
    match crate::sessions::end_user(config, canonical) {
        Ok(0) => {}
        Ok(n) => eprintln!("ended {n} live session(s) of {canonical} on this node"),
        // No server running here (no socket, or nobody listening on it): nothing to end.
        Err(e) if crate::sessions::no_server(&e) => {}
        Err(e) => eprintln!(
            "warning: could not end {canonical}'s sessions on this node ({e:#}); `poplar sessions end` them"
        ),
    }
    // The account change is made: a failure here is a warning, not the command's.
    match dir.break_lease(maildir).await {
        Ok(true) => eprintln!(
            "{canonical}'s maildrop was open on another node: that session ends within {} s",
            config.directory.maildrop_lease_secs.div_ceil(3)
        ),
        Ok(false) => {}
        Err(e) => eprintln!(
            "warning: could not end {canonical}'s session on other nodes ({e}); it ends when its maildrop lease runs out"
        ),
    }
    Ok(())
}

/// How `user import` places and checks what it imports.
struct ImportOptions {
    /// `<root>/<user>` for lines that say nothing of their Maildir.
    root: PathBuf,
    /// `<home>/<subdir>` for lines with a home field.
    subdir: Option<PathBuf>,
    costly: auth::CostlyHashes,
    /// Report only.
    dry_run: bool,
    /// Confirmed on the command line.
    yes: bool,
}

async fn import(
    file: &std::path::Path,
    options: &ImportOptions,
    config: &Config,
    dir: Arc<Dir>,
) -> anyhow::Result<()> {
    use auth::legacy::{Parsed, parse_passwd_line, passwd_line_mail, passwd_line_user};
    use auth::{ImportError, Imported};
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let auth = server::authenticator(config, dir.clone()).await?;
    let bounds = config.import_bounds();
    let (mut imported, mut failed) = (0usize, 0usize);
    let verb = if options.dry_run {
        "would import"
    } else {
        "imported"
    };
    if !options.dry_run {
        let entries = text
            .lines()
            .filter(|l| passwd_line_user(l).is_some())
            .count();
        crate::confirm::confirm(
            &format!(
                "import {entries} users from {} into {}",
                file.display(),
                config.directory_display()
            ),
            options.yes,
        )?;
    }
    let total = text.lines().count();
    let mut bar = crate::progress::Progress::new(file.display().to_string(), total as u64);
    for (n, line) in text.lines().enumerate() {
        bar.set(n as u64);
        let n = n + 1;
        let who = passwd_line_user(line).unwrap_or("?").to_owned();
        let mut refuse = |why: &str| {
            bar.println(&format!("line {n} ({who}): not imported: {why}"));
            failed += 1;
        };
        let (user, parsed) = match parse_passwd_line(line) {
            Ok(None) => continue,
            Ok(Some(entry)) => entry,
            // The error names the scheme at most, never the hash or password.
            Err(e) => {
                refuse(&e.to_string());
                continue;
            }
        };
        let scheme = match &parsed {
            Parsed::Hash(h) => h.scheme().name(),
            Parsed::Cleartext(_) => "PLAIN (hashed now)",
        };
        let canonical = match auth.policy().canonical(&user) {
            Ok(c) => c,
            Err(e) => {
                refuse(&format!("invalid user name: {e}"));
                continue;
            }
        };
        let maildir = match crate::mail_location::maildir_for(
            passwd_line_mail(line),
            &user,
            &canonical,
            options.subdir.as_deref(),
            &options.root,
        ) {
            Ok(path) => path,
            Err(why) => {
                refuse(&why);
                continue;
            }
        };
        let place = format!("Maildir {}", maildir.display());
        if options.dry_run {
            // What the import would refuse, without writing anything.
            let costly = match &parsed {
                Parsed::Hash(h) => h.check_bounds(&bounds).err(),
                Parsed::Cleartext(_) => None,
            };
            if dir.find_user(&canonical).await?.is_some() {
                refuse("user already exists");
            } else if let Some(why) =
                costly.filter(|_| options.costly == auth::CostlyHashes::Refuse)
            {
                refuse(&format!("{why}; --allow-costly-hashes imports it anyway"));
            } else {
                bar.println(&format!("line {n}: {verb} {canonical} ({scheme}); {place}"));
                imported += 1;
            }
            continue;
        }
        match auth
            .import_user(
                &user,
                parsed,
                maildir.to_string_lossy().into_owned(),
                options.costly,
            )
            .await
        {
            Ok(Imported { name, above_bounds }) => {
                maildir::Maildir::new(&maildir)
                    .create()
                    .with_context(|| format!("creating Maildir {}", maildir.display()))?;
                bar.println(&match above_bounds {
                    None => format!("line {n}: {verb} {name} ({scheme}); {place}"),
                    Some(why) => format!(
                        "line {n}: {verb} {name} ({scheme}), allowed by --allow-costly-hashes: {why}; {place}"
                    ),
                });
                imported += 1;
            }
            Err(e @ ImportError::Costly(_)) => {
                refuse(&format!("{e}; --allow-costly-hashes imports it anyway"));
            }
            Err(e) => refuse(&e.to_string()),
        }
    }
    drop(bar);
    if options.dry_run {
        eprintln!(
            "dry run: {imported} users would be imported, {failed} lines not; nothing changed"
        );
    } else {
        eprintln!("{imported} users imported, {failed} lines not imported");
    }
    if failed > 0 {
        bail!("{failed} lines could not be imported (see above)");
    }
    Ok(())
}

pub(crate) fn read_password(from_stdin: bool, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    let password = if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        let trimmed = line.strip_suffix('\n').unwrap_or(&line);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        Zeroizing::new(trimmed.to_string())
    } else {
        let first = Zeroizing::new(rpassword::prompt_password("Password: ")?);
        if confirm {
            let again = Zeroizing::new(rpassword::prompt_password("Again: ")?);
            if *again != *first {
                bail!("the passwords differ");
            }
        }
        first
    };
    if password.is_empty() {
        bail!("empty password");
    }
    Ok(password)
}
