//! `poplar passwords load-breached|check`, and the policy check `poplar user add|passwd`
//! apply before a password is set (NIST SP 800-63B-4; the rules are in the `policy`
//! crate, the settings in `[passwords]`).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use policy::{Problem, describe};
use server::Config;
use server::assess_password as assess;
use zeroize::Zeroizing;

#[derive(Subcommand)]
pub enum PasswordsCommand {
    /// Build the breached-password filter (`passwords.breached_filter`) from a corpus in
    /// the Pwned Passwords SHA-1 format: `SHA1HEX:COUNT` lines, sorted or not. The new
    /// filter replaces the old one whole. Memory needed: 3.75 bytes per line.
    LoadBreached {
        /// The corpus file (read twice: to count, then to fill the filter).
        file: PathBuf,
        /// Leave out entries seen fewer times than this (a smaller filter).
        #[arg(long, default_value_t = 1)]
        min_count: u64,
    },
    /// Check a password against the policy without setting it; exit status 4 and the
    /// reasons if it would be refused.
    Check {
        /// The user the password is for (its name must not be in the password; the
        /// user need not exist).
        name: String,
        /// Judge it for an account that must sign in with a second factor.
        #[arg(long)]
        mfa: bool,
        /// Read the password as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
}

pub fn run(cmd: PasswordsCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        PasswordsCommand::LoadBreached { file, min_count } => {
            load_breached(&file, min_count, config)
        }
        PasswordsCommand::Check {
            name,
            mfa,
            password_stdin,
        } => {
            let canonical = server::username_policy(config)
                .canonical(&name)
                .map_err(|e| anyhow::anyhow!("invalid user name: {e}"))?;
            let password = crate::user::read_password(password_stdin, false)?;
            let problems = assess(config, &canonical, &password, mfa, true)
                .map_err(|e| anyhow::anyhow!("cannot check: {e}"))?;
            if !problems.is_empty() {
                crate::exit::refused!("password would be refused: {}", describe(&problems));
            }
            eprintln!("password is acceptable");
            Ok(())
        }
    }
}

fn load_breached(file: &std::path::Path, min_count: u64, config: &Config) -> anyhow::Result<()> {
    server::process::prepare_data_dir(&config.data_dir)?;
    let out = config.breached_filter_path();
    let started = std::time::Instant::now();
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let mut bar = crate::progress::Progress::new(
        format!("reading {} (pass 1 of 2: counting)", file.display()),
        size,
    );
    let mut pass = 1;
    let report = policy::breached::build_with_progress(file, &out, min_count, |p, bytes| {
        if p != pass {
            pass = p;
            bar = crate::progress::Progress::new(
                format!(
                    "reading {} (pass 2 of 2: filling the filter)",
                    file.display()
                ),
                size,
            );
        }
        bar.set(bytes);
    })
    .with_context(|| format!("loading {}", file.display()))?;
    drop(bar);
    eprintln!(
        "loaded {} entries into {} ({:.1} MB: {} bits per entry, false-positive rate about 1 in {:.1} million) in {:.1} s",
        report.entries,
        out.display(),
        report.file_bytes as f64 / 1e6,
        policy::breached::BITS_PER_ENTRY,
        1.0 / policy::breached::FALSE_POSITIVE_RATE / 1e6,
        started.elapsed().as_secs_f64()
    );
    if report.below_min_count > 0 {
        eprintln!(
            "{} entries seen fewer than {min_count} times were left out",
            report.below_min_count
        );
    }
    if report.bad_lines > 0 {
        let lines: Vec<String> = report.first_bad_lines.iter().map(u64::to_string).collect();
        let more = if report.bad_lines > lines.len() as u64 {
            ", ..."
        } else {
            ""
        };
        let (what, which) = match report.bad_lines {
            1 => ("1 line is", "line"),
            n => (&*format!("{n} lines are"), "lines"),
        };
        eprintln!(
            "warning: {what} not SHA1HEX:COUNT and skipped ({which} {}{more})",
            lines.join(", ")
        );
    }
    if !config.passwords.check_breached {
        eprintln!("note: passwords.check_breached = false, so the filter is not consulted");
    }
    Ok(())
}

/// Refuses a password the policy refuses, with every reason, unless `allow_weak`: then
/// the reasons are printed as a warning and the password is set anyway.
///
/// `mfa_required`: whether the account must sign in with a second factor (the shorter
/// minimum applies).
pub fn enforce(
    config: &Config,
    canonical_user: &str,
    password: &Zeroizing<String>,
    mfa_required: bool,
    allow_weak: bool,
) -> anyhow::Result<()> {
    let problems = match assess(config, canonical_user, password, mfa_required, true) {
        Ok(problems) => problems,
        Err(e) if allow_weak => {
            eprintln!("warning: the breached-password filter was not consulted: {e}");
            assess(config, canonical_user, password, mfa_required, false)?
        }
        Err(e) => bail!(
            "cannot check the password: {e}; or set passwords.check_breached = false, or pass --allow-weak"
        ),
    };
    if problems.is_empty() {
        return Ok(());
    }
    let reasons = describe(&problems);
    if allow_weak && !problems.iter().any(|p| matches!(p, Problem::Unusable(_))) {
        eprintln!("warning: weak password set anyway (--allow-weak): {reasons}");
        return Ok(());
    }
    let minimum = if mfa_required {
        config.passwords.min_length_with_mfa
    } else {
        config.passwords.min_length
    };
    eprintln!(
        "hint: a few unrelated words make a strong passphrase that is easy to type: at least {minimum} characters, no digits or symbols needed"
    );
    crate::exit::refused!("password refused: {reasons}")
}
