//! Exit codes a script can tell apart (README "Exit codes"):
//!
//! | code | meaning |
//! | ---: | --- |
//! | 0 | done |
//! | 1 | failed (the directory is down, a file cannot be written, ...) |
//! | 2 | usage: the command line is wrong (clap's own code) |
//! | 3 | not found: no such user, session or app password |
//! | 4 | refused by policy: a weak or breached password, a wrong code |
//! | 5 | already exists: the user to add is there |
//!
//! A command returns one of these by failing with an [`Outcome`] anywhere in its error's
//! chain (`not_found!`, `refused!`, `exists!`); everything else is 1.

/// Done.
pub const OK: u8 = 0;
/// Failed.
pub const FAILURE: u8 = 1;
/// The command line is wrong.
pub const USAGE: u8 = 2;
/// No such user, session or app password.
pub const NOT_FOUND: u8 = 3;
/// Refused by policy.
pub const REFUSED: u8 = 4;
/// Already exists.
pub const EXISTS: u8 = 5;

/// A failure with its own exit code; the text is the message.
#[derive(Debug, thiserror::Error)]
pub enum Outcome {
    /// [`NOT_FOUND`].
    #[error("{0}")]
    NotFound(String),
    /// [`REFUSED`].
    #[error("{0}")]
    Refused(String),
    /// [`EXISTS`].
    #[error("{0}")]
    Exists(String),
    /// [`USAGE`], for what clap cannot see (an option that needs another).
    #[error("{0}")]
    Usage(String),
}

/// The exit code for a command's error.
pub fn code(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(outcome) = cause.downcast_ref::<Outcome>() {
            return match outcome {
                Outcome::NotFound(_) => NOT_FOUND,
                Outcome::Refused(_) => REFUSED,
                Outcome::Exists(_) => EXISTS,
                Outcome::Usage(_) => USAGE,
            };
        }
        if let Some(admin) = cause.downcast_ref::<auth::AdminError>() {
            return match admin {
                auth::AdminError::NoSuchUser => NOT_FOUND,
                auth::AdminError::Exists => EXISTS,
                auth::AdminError::BadInput(_) | auth::AdminError::Unavailable(_) => FAILURE,
            };
        }
    }
    FAILURE
}

/// Fails the command with [`NOT_FOUND`].
macro_rules! not_found {
    ($($t:tt)*) => {
        return Err($crate::exit::Outcome::NotFound(format!($($t)*)).into())
    };
}

/// Fails the command with [`REFUSED`].
macro_rules! refused {
    ($($t:tt)*) => {
        return Err($crate::exit::Outcome::Refused(format!($($t)*)).into())
    };
}

/// Fails the command with [`EXISTS`].
macro_rules! exists {
    ($($t:tt)*) => {
        return Err($crate::exit::Outcome::Exists(format!($($t)*)).into())
    };
}

/// Fails the command with [`USAGE`].
macro_rules! usage {
    ($($t:tt)*) => {
        return Err($crate::exit::Outcome::Usage(format!($($t)*)).into())
    };
}

pub(crate) use {exists, not_found, refused, usage};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_comes_from_anywhere_in_the_chain() {
        let plain = anyhow::anyhow!("disk full");
        assert_eq!(code(&plain), FAILURE);
        let found =
            anyhow::Error::from(Outcome::NotFound("no such user: x".into())).context("deleting x");
        assert_eq!(code(&found), NOT_FOUND);
        let admin = anyhow::Error::from(auth::AdminError::Exists).context("adding");
        assert_eq!(code(&admin), EXISTS);
        assert_eq!(code(&Outcome::Refused("weak".into()).into()), REFUSED);
        assert_eq!(code(&Outcome::Usage("say what".into()).into()), USAGE);
        assert_eq!(OK, 0);
    }
}
