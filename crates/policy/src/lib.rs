//! Password policy after NIST SP 800-63B-4 §3.1.1.2, for the passwords an administrator
//! or a user sets (`poplar user add|passwd`, and the security page's password change):
//!
//! - a minimum length: 15 characters for a password used alone, 8 where two-factor
//!   sign-in is required; length is counted in Unicode code points of the SASLprep'd
//!   password, the form that is hashed ([`auth::prepare_password`]);
//! - long passphrases allowed: up to [`auth::MAX_PASSWORD_BYTES`] bytes, far past the
//!   64 characters NIST asks for;
//! - no composition rules (no "one digit, one symbol") and no periodic change: nothing
//!   here looks at character classes or at a password's age;
//! - refusal of common, expected and breached passwords: zxcvbn's dictionaries of
//!   common passwords, words and names and its patterns (keyboard rows, repeats,
//!   sequences, dates), scored with the account's own context words, and a filter built
//!   from a breach corpus ([`breached`]);
//! - refusal of passwords that contain the user's own name or the server's name.
//!
//! The estimator pulls regex, so this crate is for the CLI and the web page only; the
//! auth crate and the sign-in path never depend on it.
#![forbid(unsafe_code)]

pub mod breached;
mod strength;

use std::fmt;

pub use breached::{BreachedFilter, FilterError};
pub use strength::Guessable;

/// The zxcvbn score (0-4) below which a password is refused: 3 means at least 10^8
/// guesses, out of reach of an online attack under throttling and of a cheap offline
/// one against argon2id.
pub const MIN_SCORE: u8 = 3;

/// Context words shorter than this are not looked for inside passwords: too many good
/// passwords contain "bob" or "mx".
pub const MIN_NAME_CHARS: usize = 4;

/// The rules, as configured (`[passwords]`).
#[derive(Debug)]
pub struct PasswordPolicy {
    /// Minimum length of a password used alone, in characters.
    pub min_length: usize,
    /// Minimum length where two-factor sign-in is required.
    pub min_length_with_mfa: usize,
    /// The breached-password filter, when one is loaded and checking is on.
    pub breached: Option<BreachedFilter>,
}

impl Default for PasswordPolicy {
    /// NIST SP 800-63B-4's numbers, without a breach filter.
    fn default() -> Self {
        PasswordPolicy {
            min_length: 15,
            min_length_with_mfa: 8,
            breached: None,
        }
    }
}

/// Whose password it is: the words a password must not be built from.
#[derive(Debug, Clone, Copy)]
pub struct Account<'a> {
    /// The canonical user name (`alice` or `alice@example.org`).
    pub user: &'a str,
    /// The server's host name (`hostname` in the configuration).
    pub hostname: &'a str,
    /// The default mail domain, if any (`auth.default_domain`).
    pub domain: &'a str,
    /// Whether the account must sign in with a second factor (then the password is
    /// never enough alone, and a shorter minimum applies).
    pub mfa_required: bool,
}

/// Why a password is refused. `Display` gives the reason to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// It cannot be stored at all (not SASLprep-able, or over the byte limit).
    Unusable(auth::BadInput),
    /// Shorter than the minimum.
    TooShort {
        /// Its length in characters.
        length: usize,
        /// The minimum that applies.
        minimum: usize,
    },
    /// In the breached-password filter.
    Breached,
    /// Contains the user's name (the part before `@`).
    ContainsUserName,
    /// Contains the server's or the mail domain's name.
    ContainsServerName,
    /// Guessable by the strength estimate.
    TooEasy(Guessable),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unusable(why) => write!(f, "cannot be used: {why}"),
            Problem::TooShort { length, minimum } => {
                let s = if *length == 1 { "" } else { "s" };
                write!(f, "too short: {length} character{s}, at least {minimum}")
            }
            Problem::Breached => f.write_str("found in a list of breached passwords"),
            Problem::ContainsUserName => f.write_str("contains your user name"),
            Problem::ContainsServerName => f.write_str("contains the server's name"),
            Problem::TooEasy(how) => write!(f, "too easy to guess: {how}"),
        }
    }
}

/// Joins reasons for one line: "too short: 8 characters, at least 15; found in ...".
pub fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl PasswordPolicy {
    /// The minimum length for this account.
    pub fn minimum(&self, account: &Account<'_>) -> usize {
        if account.mfa_required {
            self.min_length_with_mfa
        } else {
            self.min_length
        }
    }

    /// Every reason to refuse `password` (raw, as typed), in a fixed order; empty when
    /// it is acceptable. Fails only when the breach filter cannot be read.
    pub fn check(
        &self,
        password: &str,
        account: &Account<'_>,
    ) -> Result<Vec<Problem>, FilterError> {
        let prepared = match auth::prepare_password(password.as_bytes()) {
            Ok(p) => p,
            Err(why) => return Ok(vec![Problem::Unusable(why)]),
        };
        let mut problems = Vec::new();
        let length = prepared.chars().count();
        let minimum = self.minimum(account);
        if length < minimum {
            problems.push(Problem::TooShort { length, minimum });
        }
        if let Some(filter) = &self.breached {
            // The corpus hashes passwords as typed; the stored form may differ (NFKC,
            // mapped spaces), so either one found is enough.
            let found = filter.contains_password(&prepared)?
                || (password != prepared.as_str() && filter.contains_password(password)?);
            if found {
                problems.push(Problem::Breached);
            }
        }
        let context = strength::Context::new(account);
        let contained = context.contained_in(&prepared);
        // "Based on your user name" adds nothing to "contains your user name".
        let guessable = context
            .guessable(&prepared)
            .filter(|how| *how != Guessable::ContextWord || contained.is_empty());
        problems.extend(contained);
        problems.extend(guessable.map(Problem::TooEasy));
        Ok(problems)
    }
}

#[cfg(test)]
mod tests;
