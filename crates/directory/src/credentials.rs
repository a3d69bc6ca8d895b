//! What the directory remembers about the age and origin of each user's password and
//! about their last sign-in, for audits (`poplar audit`). Sign-in itself never reads
//! these: they answer "which accounts are the weak link", not "who is this".

use crate::defence::Millis;

/// Where a user's current password came from and when it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialDates {
    /// Canonical user name.
    pub user: String,
    /// When the account was created (RFC 3339 UTC).
    pub created_at: String,
    /// When the password was last set through Poplar (`user add`, `user passwd`), RFC
    /// 3339 UTC. `None`: not known, because it was set on the server the account was
    /// imported from, or before the directory kept this date.
    pub password_set_at: Option<String>,
    /// The password in use is still the one imported from another server: nobody has
    /// set a new one since `poplar user import`.
    pub imported: bool,
}

/// A user's latest successful sign-in, from any network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastSignIn {
    /// Canonical user name.
    pub user: String,
    /// When.
    pub at: Millis,
}
