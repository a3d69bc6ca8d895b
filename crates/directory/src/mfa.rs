//! What the directory keeps for two-factor sign-in and app passwords. The `auth` crate
//! generates, seals, hashes and checks; the directory stores and updates atomically.

use crate::Millis;

/// A user's TOTP enrolment.
#[derive(Clone, PartialEq, Eq)]
pub struct MfaRecord {
    /// The TOTP secret, sealed under the server key.
    pub totp_secret: String,
    /// The enrolment was confirmed with a code.
    pub confirmed: bool,
    /// The last accepted time step.
    pub last_step: i64,
    /// When it was enrolled.
    pub enrolled_at: Millis,
}

impl std::fmt::Debug for MfaRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaRecord")
            .field("totp_secret", &"<redacted>")
            .field("confirmed", &self.confirmed)
            .field("last_step", &self.last_step)
            .field("enrolled_at", &self.enrolled_at)
            .finish()
    }
}

/// An app password, without its secret (only a keyed hash of it is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPassword {
    /// Row id, shown to the administrator for `revoke`.
    pub id: i64,
    /// Owner.
    pub user: String,
    /// What it is for ("phone", "scanner").
    pub label: String,
    /// Keyed hash of the password.
    pub hash: String,
    /// Created.
    pub created_at: Millis,
    /// Expires; `None`: never.
    pub expires_at: Option<Millis>,
    /// Allowed networks (comma-separated CIDRs); `None`: anywhere.
    pub networks: Option<String>,
    /// DELE refused: mail stays on the server.
    pub read_only: bool,
    /// Last successful use.
    pub last_used_at: Option<Millis>,
    /// From where.
    pub last_used_from: Option<String>,
}
