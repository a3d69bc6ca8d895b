//! Auth: the one place that decides who a client is.
//!
//! Every sign-in — POP3's USER/PASS, APOP and SASL mechanisms, and both steps of the
//! security page — goes through [`Authenticator::sign_in`]: an [`Attempt`] goes in, a
//! [`Verdict`] comes out, and admission, the check, counting, the sign-in history, the
//! events for audit, metrics and notices ([`SignInEvents`]) and the failure deadline
//! all happen inside (`docs/signin.md`). A refusal's public face is always the same
//! `-ERR [AUTH]` (RFC 3206 §4), or `-ERR [SYS/TEMP]` when the directory is down; its
//! private [`Reason`] is for the audit log only, so no reply and no timing tells a
//! client whether an account exists.
//!
//! Names and passwords are normalised here and nowhere else: [`UsernamePolicy`] gives
//! the one canonical user name, and [`prepare_password`] the one form of a password
//! (SASLprep, RFC 4013) that every mechanism and the CLI hash or verify.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apop;
mod authenticator;
pub mod defence;
mod hasher;
mod import;
pub mod keys;
pub mod legacy;
pub mod mfa;
mod password;
mod pool;
mod username;

pub use authenticator::{
    AdminError, Attempt, AuthFailure, Authenticator, Enrolment, EventFuture, Identity, MfaPolicy,
    MfaSettings, MfaStatus, NoEvents, Proof, Reason, ScramLookup, SecondFactor, SignInEvent,
    SignInEvents, TokenClaims, TokenError, TokenFuture, TokenVerifier, Verdict, WebAccount,
};
pub use hasher::{Argon2Params, InvalidParams, PasswordHasher};
pub use import::{CostlyHashes, HashLimits, ImportError, Imported};
pub use keys::KeyRing;
pub use password::{MAX_PASSWORD_BYTES, prepare_password};
pub use username::{MAX_USERNAME_BYTES, UsernamePolicy};

/// Why a user name or password was refused before any lookup.
///
/// The variants never carry the input, nor the offending character: for a password
/// either would leak part of a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadInput {
    /// Nothing left after preparation.
    #[error("empty")]
    Empty,
    /// Longer than the limit, in bytes of UTF-8.
    #[error("too long")]
    TooLong,
    /// The bytes are not UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// SASLprep (RFC 4013 §2.3-2.5) prohibits a character, or bidirectional text is
    /// malformed.
    #[error("contains a character SASLprep prohibits")]
    Prohibited,
    /// A control character, whitespace, `/` or `\` in a user name.
    #[error("contains a forbidden character")]
    ForbiddenCharacter,
    /// A user name starting with `.` (it names a Maildir, so no hidden or `..` paths).
    #[error("starts with a dot")]
    LeadingDot,
    /// A user name whose canonical form would change if canonicalised again (a rare
    /// interplay of case mapping and normalisation); refused so that the canonical
    /// form is a fixed point.
    #[error("has no stable canonical form")]
    Unstable,
}
