//! Confirmation before a command that changes many accounts at once (`user import`,
//! `lockout clear --all`): asked on a terminal; without one (a script), the command
//! needs `--yes`, as it cannot ask.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

/// Goes on if `yes`, or if the person at the terminal answers `y`; else fails with the
/// usage exit code (2), saying what was not done.
pub fn confirm(what: &str, yes: bool) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        crate::exit::usage!("{what}: pass --yes to confirm (there is no terminal to ask on)");
    }
    eprint!("{what}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES") {
        Ok(())
    } else {
        crate::exit::usage!("{what}: not confirmed; nothing changed")
    }
}
