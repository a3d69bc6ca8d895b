//! The types of [`crate::Authenticator::import_user`] and of the limits on what a stored
//! hash may cost to check ([`crate::Authenticator::with_hash_limits`]).
//!
//! One notion of cost ([`crate::legacy::Work`]) serves both ends: import refuses a hash
//! above the configured [`HashBounds`] unless the administrator allows it, and refuses
//! one beyond [`HashBounds::CHECKABLE`] always; sign-in checks every hash within
//! [`HashBounds::CHECKABLE`], so whatever import took can sign in, inside the hashing
//! pool's memory budget.

use crate::AdminError;
use crate::legacy::{Exceeds, HashBounds};

/// What [`crate::Authenticator::import_user`] does with a hash above the import bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CostlyHashes {
    /// Refuse it, with the bound it passes ([`ImportError::Costly`]).
    Refuse,
    /// Import it (the administrator allows it): sign-in checks it, within the hashing
    /// pool's memory budget. A hash beyond what Poplar ever checks was already refused
    /// by [`crate::legacy::parse`].
    Allow,
}

/// A user [`crate::Authenticator::import_user`] added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The canonical name.
    pub name: String,
    /// The bound its hash passes, when imported with [`CostlyHashes::Allow`].
    pub above_bounds: Option<Exceeds>,
}

/// Why [`crate::Authenticator::import_user`] did not import a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The hash costs more than the import bounds allow (the message names the scheme,
    /// its parameters and the bound, never the hash).
    #[error("{0}")]
    Costly(Exceeds),
    /// Anything else: a bad name, an existing user, the directory.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// The limits on checking stored hashes (the `[auth]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashLimits {
    /// The most an imported hash may cost unless the administrator allows more
    /// (`auth.import_max_memory_kib`, `auth.import_max_time_ms`).
    pub import: HashBounds,
    /// The memory the hashing pool's checks may hold at once, KiB
    /// (`auth.hash_memory_budget_kib`); `None`: `max_concurrent_hashes × memory_kib`.
    pub memory_budget_kib: Option<u64>,
}
