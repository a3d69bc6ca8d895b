//! Two-factor sign-in: the policy, TOTP enrolment and checks, recovery codes, app
//! passwords. The primitives are in `crate::mfa`; this file decides and stores.

use std::net::IpAddr;
use std::path::PathBuf;

use directory::{AppPassword, Directory, MfaRecord, UserRecord};
use zeroize::Zeroizing;

use super::{AdminError, AuthFailure, Authenticator, Identity, Reason};
use crate::apop::ApopVault;
use crate::mfa;

/// Whether an account needs a second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MfaPolicy {
    /// No second factor; the password alone signs in.
    #[default]
    Off,
    /// Users may enrol; once they have, the password alone no longer opens POP3.
    Optional,
    /// The password alone never opens POP3: an app password (or OAuth) is needed.
    Required,
}

impl MfaPolicy {
    /// `off`, `optional`, `required`.
    pub fn as_str(self) -> &'static str {
        match self {
            MfaPolicy::Off => "off",
            MfaPolicy::Optional => "optional",
            MfaPolicy::Required => "required",
        }
    }

    /// Parses `off`, `optional`, `required`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "off" => Some(MfaPolicy::Off),
            "optional" => Some(MfaPolicy::Optional),
            "required" => Some(MfaPolicy::Required),
            _ => None,
        }
    }
}

/// Server-wide two-factor settings.
#[derive(Debug, Clone)]
pub struct MfaSettings {
    /// The policy of users without one of their own.
    pub default: MfaPolicy,
    /// Accept `password` followed directly by the current 6-digit code as a one-off
    /// sign-in for accounts with two factors on (typed by a person; a mail client that
    /// stores it fails 30 seconds later).
    pub password_with_code: bool,
    /// The issuer shown in authenticator apps.
    pub issuer: String,
}

impl Default for MfaSettings {
    fn default() -> Self {
        MfaSettings {
            default: MfaPolicy::Off,
            password_with_code: false,
            issuer: "Poplar".into(),
        }
    }
}

/// Keys and settings for two factors.
pub(super) struct TwoFactor {
    settings: MfaSettings,
}

impl TwoFactor {
    pub(super) fn new(settings: MfaSettings) -> Self {
        TwoFactor { settings }
    }
}

/// A TOTP enrolment waiting for its first code.
#[derive(Debug)]
pub struct Enrolment {
    /// The `otpauth://` URI for an authenticator app (holds the secret: show, never log).
    pub uri: Zeroizing<String>,
    /// The secret in base32, for typing in by hand.
    pub secret: Zeroizing<String>,
}

/// What `poplar mfa status` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaStatus {
    /// The policy in force for the user.
    pub policy: MfaPolicy,
    /// Whether it is the user's own or the server default.
    pub own_policy: bool,
    /// TOTP enrolled and confirmed.
    pub enrolled: bool,
    /// Enrolment started, not confirmed.
    pub pending: bool,
    /// Unused recovery codes.
    pub recovery_codes_left: u32,
    /// App passwords.
    pub app_passwords: usize,
    /// Whether the account password alone can open POP3.
    pub password_alone_opens_pop3: bool,
}

/// The time step `code` is current for under `secret`, if later than `after`.
fn current_step(secret: &[u8], code: &str, now: i64, after: i64) -> Result<i64, AdminError> {
    mfa::totp_match(secret, code.trim(), now)
        .filter(|s| *s > after)
        .ok_or_else(|| AdminError::BadInput("the code is not the current one".into()))
}

/// How stale an app password's recorded last use may get before a use from the same
/// address updates it.
const TOUCH_EVERY_MS: i64 = 60_000;

fn unavailable(e: directory::DirectoryError) -> AdminError {
    AdminError::Unavailable(e.to_string())
}

impl<D: Directory> Authenticator<D> {
    /// Sets the two-factor settings (the keys come from [`Authenticator::with_keys`]).
    pub fn with_mfa(mut self, settings: MfaSettings) -> Self {
        self.two_factor = std::sync::Arc::new(TwoFactor::new(settings));
        self
    }

    pub(super) async fn effective_policy(
        &self,
        user: &str,
    ) -> Result<(MfaPolicy, bool), directory::DirectoryError> {
        Ok(match self.dir.mfa_policy(user).await? {
            Some(own) => (MfaPolicy::parse(&own).unwrap_or(MfaPolicy::Required), true),
            None => (self.two_factor.settings.default, false),
        })
    }

    /// Whether the account password alone is no longer enough for `user`.
    pub(super) async fn two_factor_on(&self, user: &str) -> Result<bool, AuthFailure> {
        let result = async {
            Ok::<_, directory::DirectoryError>(match self.effective_policy(user).await?.0 {
                MfaPolicy::Off => false,
                MfaPolicy::Required => true,
                MfaPolicy::Optional => self.dir.mfa(user).await?.is_some_and(|m| m.confirmed),
            })
        }
        .await;
        result.map_err(|e| {
            tracing::warn!(error = %e, "two-factor lookup failed during sign-in");
            AuthFailure::Unavailable
        })
    }

    /// `password` + 6-digit code, when two factors are on and the setting allows it.
    pub(super) fn split_code<'p>(
        &self,
        mfa_on: bool,
        raw: &'p [u8],
    ) -> Option<(&'p [u8], &'p str)> {
        if !mfa_on || !self.two_factor.settings.password_with_code || raw.len() <= 6 {
            return None;
        }
        let (password, code) = raw.split_at(raw.len() - 6);
        let code = std::str::from_utf8(code).ok()?;
        code.bytes()
            .all(|b| b.is_ascii_digit())
            .then_some((password, code))
    }

    /// Checks a TOTP code for a confirmed enrolment and uses up its time step.
    pub(super) async fn accept_totp(&self, user: &str, code: &str) -> Result<bool, AuthFailure> {
        let dir_err = |e: directory::DirectoryError| {
            tracing::warn!(error = %e, "two-factor lookup failed");
            AuthFailure::Unavailable
        };
        let Some(record) = self.dir.mfa(user).await.map_err(dir_err)? else {
            return Ok(false);
        };
        if !record.confirmed {
            return Ok(false);
        }
        let Some(secret) = self.open_secret(user, &record) else {
            return Ok(false);
        };
        let Some(step) = mfa::totp_match(&secret, code, self.guard.now()) else {
            return Ok(false);
        };
        self.dir.accept_totp_step(user, step).await.map_err(dir_err)
    }

    fn open_secret(&self, user: &str, record: &MfaRecord) -> Option<Zeroizing<Vec<u8>>> {
        let b32 = self.open_sealed(user, &record.totp_secret, |k| &k.totp)?;
        mfa::base32_decode(&b32).map(Zeroizing::new)
    }

    /// Opens a sealed value with the vault `vault` picks; a value naming a key not in
    /// force (another node rotated) has the ring read again first.
    pub(super) fn open_sealed(
        &self,
        user: &str,
        sealed: &str,
        vault: impl Fn(&crate::keys::KeySet) -> &ApopVault,
    ) -> Option<Zeroizing<String>> {
        let keys = self.keys.current();
        if let Some(plain) = vault(&keys).open(user, sealed) {
            return Some(plain);
        }
        let named = ApopVault::sealed_under(sealed)?;
        if vault(&keys).holds(named) {
            return None;
        }
        let (keys, _) = self.keys.refresh();
        vault(&keys).open(user, sealed)
    }

    /// Finds an app password by its hash under every key of the ring (the ring read
    /// again if none matches and it changed), re-keying one made under an older key.
    async fn find_app_password_keyed(
        &self,
        normalized: &str,
    ) -> Result<Option<AppPassword>, directory::DirectoryError> {
        let mut keys = self.keys.current();
        let mut tried = Vec::new();
        loop {
            for hash in keys.codes.candidates("app", normalized) {
                if tried.contains(&hash) {
                    continue;
                }
                if let Some(mut app) = self.dir.find_app_password(&hash).await? {
                    if !keys.codes.is_current(&app.hash) {
                        let new = keys.codes.hash("app", normalized);
                        match self.dir.rekey_app_password(app.id, &app.hash, &new).await {
                            Ok(true) => app.hash = new,
                            Ok(false) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "could not re-key an app password")
                            }
                        }
                    }
                    return Ok(Some(app));
                }
                tried.push(hash);
            }
            let (again, changed) = self.keys.refresh();
            if !changed {
                return Ok(None);
            }
            keys = again;
        }
    }

    /// An app password of `record`'s account: `None` if `raw` is not one of its app
    /// passwords (the caller goes on with the account password).
    pub(super) async fn try_app_password(
        &self,
        record: &UserRecord,
        raw: &[u8],
        source: IpAddr,
    ) -> Result<Option<Result<Identity, AuthFailure>>, AuthFailure> {
        let Some(normalized) = mfa::normalize_code(raw, mfa::APP_PASSWORD_LEN) else {
            return Ok(None);
        };
        let found = self
            .find_app_password_keyed(&normalized)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "app password lookup failed");
                AuthFailure::Unavailable
            })?;
        let Some(app) = found.filter(|a| a.user == record.name) else {
            return Ok(None);
        };
        let now = self.guard.now();
        let refuse = |reason| Ok(Some(Err(AuthFailure::Rejected(reason))));
        if app.expires_at.is_some_and(|t| t <= now) {
            return refuse(Reason::AppPasswordExpired);
        }
        if !crate::defence::network_allowed(app.networks.as_deref(), source) {
            return refuse(Reason::IpDenied);
        }
        if !record.enabled {
            return refuse(Reason::Disabled);
        }
        // The last use is kept to the minute: a client polling from the same address
        // costs no write on every sign-in.
        let from = source.to_canonical().to_string();
        let recent = app
            .last_used_at
            .is_some_and(|t| now.saturating_sub(t) < TOUCH_EVERY_MS)
            && app.last_used_from.as_deref() == Some(from.as_str());
        if !recent && let Err(e) = self.dir.touch_app_password(app.id, now, &from).await {
            tracing::warn!(error = %e, "could not record an app password's use");
        }
        Ok(Some(Ok(Identity {
            user: record.name.clone(),
            maildir: PathBuf::from(&record.maildir),
            allowed_networks: record.allowed_networks.clone(),
            new_network: false,
            read_only: app.read_only,
        })))
    }

    async fn existing(&self, raw_user: &str) -> Result<String, AdminError> {
        let user = self
            .policy
            .canonical(raw_user)
            .map_err(|e| AdminError::BadInput(format!("user name: {e}")))?;
        match self.dir.find_user(&user).await.map_err(unavailable)? {
            Some(_) => Ok(user),
            None => Err(AdminError::NoSuchUser),
        }
    }

    /// Starts a TOTP enrolment (replacing any earlier one): the secret to show the
    /// user. Nothing changes for sign-in until [`Authenticator::mfa_confirm`].
    pub async fn mfa_begin(&self, raw_user: &str) -> Result<Enrolment, AdminError> {
        let user = self.existing(raw_user).await?;
        let enrolment = self.mfa_prepare(&user)?;
        self.store_totp(&user, &enrolment.secret, false, 0).await?;
        Ok(enrolment)
    }

    /// A new TOTP secret for `user` (canonical) and its `otpauth://` URI, stored
    /// nowhere: the security page keeps it in the signed-in session until a code
    /// confirms it ([`Authenticator::mfa_confirm_secret`]), so resetting an
    /// authenticator never leaves the account without one.
    pub fn mfa_prepare(&self, user: &str) -> Result<Enrolment, AdminError> {
        let secret =
            mfa::new_secret().ok_or_else(|| AdminError::Unavailable("no randomness".into()))?;
        Ok(Enrolment {
            uri: Zeroizing::new(mfa::otpauth_uri(
                &self.two_factor.settings.issuer,
                user,
                &secret,
            )),
            secret: Zeroizing::new(mfa::base32_encode(&secret)),
        })
    }

    /// The issuer name authenticator apps show.
    pub fn mfa_issuer(&self) -> &str {
        &self.two_factor.settings.issuer
    }

    /// Seals and stores a base32 TOTP secret for `user`.
    async fn store_totp(
        &self,
        user: &str,
        b32: &str,
        confirmed: bool,
        last_step: i64,
    ) -> Result<(), AdminError> {
        let sealed = self
            .keys
            .current()
            .totp
            .seal(user, b32)
            .ok_or_else(|| AdminError::Unavailable("cannot seal the secret".into()))?;
        self.dir
            .set_mfa(
                user,
                Some(&MfaRecord {
                    totp_secret: sealed,
                    confirmed,
                    last_step,
                    enrolled_at: self.guard.now(),
                }),
            )
            .await
            .map_err(unavailable)
    }

    /// Confirms an enrolment with a current code; returns ten new recovery codes
    /// (shown once; only their keyed hashes are kept).
    pub async fn mfa_confirm(
        &self,
        raw_user: &str,
        code: &str,
    ) -> Result<Vec<Zeroizing<String>>, AdminError> {
        let user = self.existing(raw_user).await?;
        let record = self
            .dir
            .mfa(&user)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| AdminError::BadInput("no enrolment in progress".into()))?;
        let secret = self
            .open_secret(&user, &record)
            .ok_or_else(|| AdminError::Unavailable("cannot open the secret".into()))?;
        let step = current_step(&secret, code, self.guard.now(), record.last_step)?;
        self.dir
            .set_mfa(
                &user,
                Some(&MfaRecord {
                    confirmed: true,
                    last_step: step,
                    ..record
                }),
            )
            .await
            .map_err(unavailable)?;
        self.new_recovery_codes(&user).await
    }

    /// Confirms a secret from [`Authenticator::mfa_prepare`] with a current code: it
    /// replaces any earlier authenticator, and ten new recovery codes replace the old
    /// ones (returned once).
    pub async fn mfa_confirm_secret(
        &self,
        raw_user: &str,
        b32_secret: &str,
        code: &str,
    ) -> Result<Vec<Zeroizing<String>>, AdminError> {
        let user = self.existing(raw_user).await?;
        let secret = mfa::base32_decode(b32_secret)
            .map(Zeroizing::new)
            .ok_or_else(|| AdminError::BadInput("not a TOTP secret".into()))?;
        // A code the old authenticator already used stays used.
        let last = self
            .dir
            .mfa(&user)
            .await
            .map_err(unavailable)?
            .map_or(0, |r| r.last_step);
        let step = current_step(&secret, code, self.guard.now(), last)?;
        self.store_totp(&user, b32_secret, true, step).await?;
        self.new_recovery_codes(&user).await
    }

    /// Replaces the user's recovery codes with ten new ones, returned once.
    pub async fn new_recovery_codes(
        &self,
        user: &str,
    ) -> Result<Vec<Zeroizing<String>>, AdminError> {
        let mut codes = Vec::new();
        let mut hashes = Vec::new();
        let keys = self.keys.current();
        for _ in 0..10 {
            let code = mfa::new_recovery_code()
                .ok_or_else(|| AdminError::Unavailable("no randomness".into()))?;
            let normalized = mfa::normalize_code(code.as_bytes(), mfa::RECOVERY_CODE_LEN)
                .ok_or_else(|| AdminError::Unavailable("bad code".into()))?;
            hashes.push(keys.codes.hash(user, &normalized));
            codes.push(code);
        }
        self.dir
            .set_recovery_codes(user, &hashes)
            .await
            .map_err(unavailable)?;
        Ok(codes)
    }

    /// Checks a second factor for `user`: a current TOTP code (each accepted once) or
    /// an unused recovery code (then used up). For `poplar mfa check`; the security
    /// page goes through [`Authenticator::web_second_factor`], under the guard.
    pub async fn mfa_check(&self, raw_user: &str, code: &str) -> Result<bool, AdminError> {
        let user = self.existing(raw_user).await?;
        self.check_code(&user, code)
            .await
            .map(|f| f.is_some())
            .map_err(|_| AdminError::Unavailable("directory".into()))
    }

    /// Which second factor `code` is for `user` (canonical), used up; `None` if it is
    /// neither a current TOTP code nor an unused recovery code.
    pub(super) async fn check_code(
        &self,
        user: &str,
        code: &str,
    ) -> Result<Option<super::SecondFactor>, AuthFailure> {
        use super::SecondFactor;
        if code.trim().len() == mfa::DIGITS as usize {
            let ok = self.accept_totp(user, code.trim()).await?;
            return Ok(ok.then_some(SecondFactor::Totp));
        }
        let Some(normalized) = mfa::normalize_code(code.as_bytes(), mfa::RECOVERY_CODE_LEN) else {
            return Ok(None);
        };
        // Under every key of the ring: codes made before a rotation still work.
        let mut keys = self.keys.current();
        let mut tried = Vec::new();
        loop {
            for hash in keys.codes.candidates(user, &normalized) {
                if tried.contains(&hash) {
                    continue;
                }
                let used = self
                    .dir
                    .use_recovery_code(user, &hash, self.guard.now())
                    .await
                    .map_err(|e| {
                        tracing::warn!(error = %e, "recovery code lookup failed");
                        AuthFailure::Unavailable
                    })?;
                if used {
                    return Ok(Some(SecondFactor::RecoveryCode));
                }
                tried.push(hash);
            }
            let (again, changed) = self.keys.refresh();
            if !changed {
                return Ok(None);
            }
            keys = again;
        }
    }

    /// Removes the TOTP enrolment and recovery codes.
    pub async fn mfa_disable(&self, raw_user: &str) -> Result<(), AdminError> {
        let user = self.existing(raw_user).await?;
        self.dir.set_mfa(&user, None).await.map_err(unavailable)
    }

    /// Sets the user's own policy, or with `None` follows the server default.
    pub async fn set_mfa_policy(
        &self,
        raw_user: &str,
        policy: Option<MfaPolicy>,
    ) -> Result<(), AdminError> {
        let user = self.existing(raw_user).await?;
        self.dir
            .set_mfa_policy(&user, policy.map(MfaPolicy::as_str))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// The user's two-factor state.
    pub async fn mfa_status(&self, raw_user: &str) -> Result<MfaStatus, AdminError> {
        let user = self.existing(raw_user).await?;
        let (policy, own_policy) = self.effective_policy(&user).await.map_err(unavailable)?;
        let record = self.dir.mfa(&user).await.map_err(unavailable)?;
        let enrolled = record.as_ref().is_some_and(|r| r.confirmed);
        Ok(MfaStatus {
            policy,
            own_policy,
            enrolled,
            pending: record.as_ref().is_some_and(|r| !r.confirmed),
            recovery_codes_left: self
                .dir
                .recovery_codes_left(&user)
                .await
                .map_err(unavailable)?,
            app_passwords: self
                .dir
                .list_app_passwords(&user)
                .await
                .map_err(unavailable)?
                .len(),
            password_alone_opens_pop3: match policy {
                MfaPolicy::Off => true,
                MfaPolicy::Optional => !enrolled,
                MfaPolicy::Required => false,
            },
        })
    }

    /// Creates an app password (returned once, `xxxx-xxxx-xxxx-xxxx`).
    pub async fn create_app_password(
        &self,
        raw_user: &str,
        label: &str,
        expires_at: Option<directory::Millis>,
        networks: Option<String>,
        read_only: bool,
    ) -> Result<(i64, Zeroizing<String>), AdminError> {
        let user = self.existing(raw_user).await?;
        let password = mfa::new_app_password()
            .ok_or_else(|| AdminError::Unavailable("no randomness".into()))?;
        let normalized = mfa::normalize_code(password.as_bytes(), mfa::APP_PASSWORD_LEN)
            .ok_or_else(|| AdminError::Unavailable("bad app password".into()))?;
        let id = self
            .dir
            .add_app_password(&AppPassword {
                id: 0,
                user,
                label: label.to_owned(),
                hash: self.keys.current().codes.hash("app", &normalized),
                created_at: self.guard.now(),
                expires_at,
                networks,
                read_only,
                last_used_at: None,
                last_used_from: None,
            })
            .await
            .map_err(unavailable)?;
        Ok((id, password))
    }
}
