//! The security page's sign-in: the account password (never an app password), then a
//! second factor when the account has an authenticator. Both steps run under the same
//! guard as POP3, so guesses on the page count toward the same throttling, lockout and
//! bans; LOGIN-DELAY does not apply (it is a rule for mail polls).

use std::net::IpAddr;
use std::path::PathBuf;

use directory::Directory;

use super::{AuthFailure, Authenticator, Identity, Purpose, Reason};

/// Who proved the account password on the security page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebAccount {
    /// The canonical user name.
    pub user: String,
    /// The account has a confirmed authenticator: a code must follow before the page
    /// opens. Nothing has been recorded for this attempt yet; the code step records
    /// the outcome.
    pub second_factor: bool,
    /// Signed in (password alone, no authenticator) from a network the account never
    /// used before: the case for a security notice, as for POP3.
    pub new_network: bool,
}

/// Which second factor was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    /// A current TOTP code.
    Totp,
    /// A recovery code, now used up.
    RecoveryCode,
}

impl SecondFactor {
    /// The name the audit log and the sign-in history use.
    pub fn as_str(self) -> &'static str {
        match self {
            SecondFactor::Totp => "totp",
            SecondFactor::RecoveryCode => "recovery-code",
        }
    }
}

impl<D: Directory> Authenticator<D> {
    /// The security page's first step: the account password from `source`.
    ///
    /// A wrong password is a failure like any other (same dummy hash for unknown
    /// names, same counts). A right one for an account with an authenticator is not
    /// yet a success: only [`Authenticator::web_second_factor`] records one, so the
    /// password alone never makes a network familiar.
    pub async fn web_password(
        &self,
        raw_user: &str,
        raw_password: &[u8],
        source: IpAddr,
    ) -> Result<WebAccount, AuthFailure> {
        let name = self.guard_name(raw_user);
        let ticket = self.guard.admit(&name, source).await?;
        let result = self
            .check_password(
                raw_user,
                raw_password,
                source,
                Purpose::AccountPassword,
                ticket.lane(),
            )
            .await;
        let identity = match result {
            Ok(identity) => identity,
            Err(e) => {
                let attempt = Some(self.guard.attempt_hash(&name, raw_password));
                self.guard
                    .settle_with(ticket, Err(e), attempt, false)
                    .await?;
                return Err(e);
            }
        };
        let dir_err = |e: directory::DirectoryError| {
            tracing::warn!(error = %e, "two-factor lookup failed on the security page");
            AuthFailure::Unavailable
        };
        let enrolled = self
            .dir
            .mfa(&identity.user)
            .await
            .map_err(dir_err)?
            .is_some_and(|m| m.confirmed);
        let user = identity.user.clone();
        let mut new_network = false;
        if !enrolled {
            // The password is all this account has: it is the success.
            new_network = self
                .guard
                .settle_with(ticket, Ok(identity), None, false)
                .await?
                .new_network;
        } else if !crate::defence::network_allowed(identity.allowed_networks.as_deref(), source) {
            // Refused (and counted) here as it would be at the code step, before a
            // code is asked for: settling an identity outside its networks fails.
            self.guard
                .settle_with(ticket, Ok(identity), None, false)
                .await?;
            return Err(AuthFailure::Rejected(Reason::IpDenied));
        }
        Ok(WebAccount {
            user,
            second_factor: enrolled,
            new_network,
        })
    }

    /// The security page's second step for `user` (canonical, from
    /// [`Authenticator::web_password`]): a current TOTP code or an unused recovery
    /// code, from `source`. A wrong code is a failure under the guard
    /// ([`Reason::BadSecondFactor`]). With the factor: whether the network is new to
    /// the account (the case for a security notice).
    pub async fn web_second_factor(
        &self,
        user: &str,
        code: &str,
        source: IpAddr,
    ) -> Result<(SecondFactor, bool), AuthFailure> {
        let ticket = self.guard.admit(user, source).await?;
        let Some(record) = self.lookup(user).await? else {
            return Err(AuthFailure::Unavailable);
        };
        // A disabled account spends no code (a recovery code stays usable).
        let factor = if record.enabled {
            self.check_code(user, code).await?
        } else {
            None
        };
        let result = match factor {
            None if !record.enabled => Err(AuthFailure::Rejected(Reason::Disabled)),
            Some(_) => Ok(Identity {
                user: record.name,
                maildir: PathBuf::from(record.maildir),
                allowed_networks: record.allowed_networks,
                new_network: false,
                read_only: false,
            }),
            None => Err(AuthFailure::Rejected(Reason::BadSecondFactor)),
        };
        let attempt = result
            .is_err()
            .then(|| self.guard.attempt_hash(user, code.as_bytes()));
        let identity = self
            .guard
            .settle_with(ticket, result, attempt, false)
            .await?;
        let factor = factor.ok_or(AuthFailure::Rejected(Reason::BadSecondFactor))?;
        Ok((factor, identity.new_network))
    }
}
