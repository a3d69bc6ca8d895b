//! Password sign-in and the administrative paths that set passwords.
//!
//! The other mechanisms' decisions live in `mechanisms.rs`, the CLI's in `admin.rs`;
//! all of them share the lookups and the hashing pool defined here.
//!
//! Timing is kept uniform, so that no reply and no delay tells whether a name exists:
//! every attempt the guard admits spends one password verification, whether the name
//! was malformed, unknown, disabled or real (attempts refused at admission, or as
//! `busy`, spend none, whoever they name). Hashing runs on a fixed pool of threads with
//! a memory budget (`auth.hash_memory_budget_kib`; see `pool.rs` and docs/signin.md).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use directory::{Directory, DirectoryError, UserRecord};
use sasl::ScramKeys;

use crate::defence::{Clock, DefenceEvents, Guard, LockoutPolicy, SystemClock, Ticket};
use crate::pool::Lane;

mod admin;
mod attempt;
mod mechanisms;
mod scram_counts;
mod token;
mod two_factor;
mod web;

pub use attempt::{Attempt, EventFuture, NoEvents, Proof, SignInEvent, SignInEvents, Verdict};
pub use token::{TokenClaims, TokenError, TokenFuture, TokenVerifier};

pub use two_factor::{Enrolment, MfaPolicy, MfaSettings, MfaStatus};
pub use web::{SecondFactor, WebAccount};
use zeroize::Zeroizing;

use crate::{
    Argon2Params, BadInput, InvalidParams, PasswordHasher, UsernamePolicy, prepare_password,
};

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The canonical user name.
    pub user: String,
    /// The user's Maildir.
    pub maildir: PathBuf,
    /// The networks the account may sign in from (comma-separated CIDRs), checked by
    /// the guard; `None`: anywhere.
    pub allowed_networks: Option<String>,
    /// Set by the guard: the account signed in before, but never (or not lately) from
    /// this network — the case for a security notice to the user.
    pub new_network: bool,
    /// Signed in with a read-only app password: DELE must be refused.
    pub read_only: bool,
}

/// Why a sign-in failed.
///
/// The server maps every [`AuthFailure::Rejected`] to the same `-ERR [AUTH]` text and
/// [`AuthFailure::Unavailable`] to `-ERR [SYS/TEMP]` (RFC 3206); the [`Reason`] is for
/// the audit log only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    /// The credentials were refused.
    #[error("authentication failed")]
    Rejected(Reason),
    /// The directory or the hashing machinery failed; try again later.
    #[error("authentication temporarily unavailable")]
    Unavailable,
    /// The credentials were right, but the user signed in less than the policy's
    /// LOGIN-DELAY ago (RFC 2449 `[LOGIN-DELAY]`). Only ever said after a proof.
    #[error("signed in too recently")]
    LoginDelay,
}

/// The private reason behind [`AuthFailure::Rejected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The user name or password was malformed (see [`BadInput`]).
    BadInput,
    /// No such user.
    UnknownUser,
    /// The password did not match.
    BadPassword,
    /// The password matched, but the account is disabled.
    Disabled,
    /// The client asked to act as someone else (SASL authzid); not supported.
    AuthzidMismatch,
    /// APOP for a user who has no APOP secret.
    NoApopSecret,
    /// This (user, address) failed too often and must wait; nothing was checked.
    Throttled,
    /// The account is locked for unfamiliar networks; nothing was checked.
    Locked,
    /// The address is banned for failing across many accounts; nothing was checked.
    Banned,
    /// The address is outside the networks the account (or app password) may sign in
    /// from.
    IpDenied,
    /// The password was right, but the account has two-factor sign-in on: POP3 needs
    /// an app password (or OAuth).
    MfaRequired,
    /// Password and code were given, the password was right, the code was not (or was
    /// used before).
    BadSecondFactor,
    /// An app password that has expired.
    AppPasswordExpired,
    /// A bearer token that is not a well-formed JWT or introspectable token, or lacks
    /// required claims.
    TokenMalformed,
    /// A bearer token signed with `alg: none`, an HMAC algorithm or an algorithm its
    /// key does not allow.
    TokenAlgorithm,
    /// A bearer token whose signature does not verify.
    TokenSignature,
    /// A bearer token signed by a key the issuer does not publish (rotated out).
    TokenUnknownKey,
    /// A bearer token past its `exp`.
    TokenExpired,
    /// A bearer token before its `nbf`.
    TokenNotYetValid,
    /// A bearer token from an issuer that is not configured.
    TokenIssuer,
    /// A bearer token for another audience.
    TokenAudience,
    /// A bearer token without a required scope.
    TokenScope,
    /// A bearer token the issuer says is not active (revoked), by introspection.
    TokenInactive,
    /// A bearer token without the configured user claim, or one that is no valid
    /// user name.
    TokenNoUser,
    /// A valid bearer token for another user than the one the client named.
    TokenUserMismatch,
    /// Not checked: the hashing queue for attempts from unfamiliar networks was full
    /// (the word the connection limit uses). Counted toward no throttle, lock or ban.
    Busy,
}

impl Reason {
    /// Every reason, for exhaustive tests and reports.
    pub const ALL: [Reason; 26] = [
        Reason::BadInput,
        Reason::UnknownUser,
        Reason::BadPassword,
        Reason::Disabled,
        Reason::AuthzidMismatch,
        Reason::NoApopSecret,
        Reason::Throttled,
        Reason::Locked,
        Reason::Banned,
        Reason::IpDenied,
        Reason::MfaRequired,
        Reason::BadSecondFactor,
        Reason::AppPasswordExpired,
        Reason::TokenMalformed,
        Reason::TokenAlgorithm,
        Reason::TokenSignature,
        Reason::TokenUnknownKey,
        Reason::TokenExpired,
        Reason::TokenNotYetValid,
        Reason::TokenIssuer,
        Reason::TokenAudience,
        Reason::TokenScope,
        Reason::TokenInactive,
        Reason::TokenNoUser,
        Reason::TokenUserMismatch,
        Reason::Busy,
    ];
}

impl Reason {
    /// A stable snake_case name for the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadInput => "bad_input",
            Reason::UnknownUser => "unknown_user",
            Reason::BadPassword => "bad_password",
            Reason::Disabled => "disabled",
            Reason::AuthzidMismatch => "authzid_mismatch",
            Reason::NoApopSecret => "no_apop_secret",
            Reason::Throttled => "throttled",
            Reason::Locked => "locked",
            Reason::Banned => "banned",
            Reason::IpDenied => "ip_denied",
            Reason::MfaRequired => "mfa_required",
            Reason::BadSecondFactor => "bad_second_factor",
            Reason::AppPasswordExpired => "app_password_expired",
            Reason::TokenMalformed => "token_malformed",
            Reason::TokenAlgorithm => "token_algorithm",
            Reason::TokenSignature => "token_signature",
            Reason::TokenUnknownKey => "token_unknown_key",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::TokenIssuer => "token_issuer",
            Reason::TokenAudience => "token_audience",
            Reason::TokenScope => "token_scope",
            Reason::TokenInactive => "token_inactive",
            Reason::TokenNoUser => "token_no_user",
            Reason::TokenUserMismatch => "token_user_mismatch",
            Reason::Busy => "busy",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an administrative operation (CLI) failed. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The user name or password was refused, with the reason.
    #[error("bad input: {0}")]
    BadInput(String),
    /// A user with this name already exists.
    #[error("user already exists")]
    Exists,
    /// There is no such user.
    #[error("no such user")]
    NoSuchUser,
    /// The directory or the hashing machinery failed.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<DirectoryError> for AdminError {
    fn from(err: DirectoryError) -> Self {
        match err {
            DirectoryError::Exists => AdminError::Exists,
            DirectoryError::Unavailable(why) => AdminError::Unavailable(why),
        }
    }
}

fn bad_name(err: BadInput) -> AdminError {
    AdminError::BadInput(format!("user name: {err}"))
}

fn bad_password(err: BadInput) -> AdminError {
    AdminError::BadInput(format!("password: {err}"))
}

/// SCRAM-SHA-256 settings, when SCRAM is enabled.
#[derive(Clone)]
struct Scram {
    iterations: u32,
    /// Keys the fake SCRAM parameters of unknown users (see [`ScramKeys::fake`]).
    server_secret: Arc<[u8]>,
    /// The iteration counts fakes show, in the accounts' proportions.
    counts: Arc<scram_counts::FakeCounts>,
}

/// The first half of a SCRAM sign-in: the keys to run the exchange with, and the
/// account they belong to (none for an unknown user, who gets fake keys).
#[derive(Debug)]
pub struct ScramLookup {
    /// Real keys, or fake ones indistinguishable from real ones.
    pub keys: ScramKeys,
    account: Option<ScramAccount>,
    reason_if_absent: Reason,
    ticket: Option<Ticket>,
}

/// What a password check is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Opening a POP3 session: app passwords count, and two-factor sign-in applies.
    Pop3,
    /// Proving the account password itself (the security page's first step).
    AccountPassword,
}

/// The account a SCRAM lookup found.
#[derive(Debug)]
struct ScramAccount {
    name: String,
    enabled: bool,
    maildir: String,
    allowed_networks: Option<String>,
}

/// Decides who someone is, from a user name and a password.
pub struct Authenticator<D> {
    dir: Arc<D>,
    policy: UsernamePolicy,
    hasher: Arc<PasswordHasher>,
    pool: Arc<crate::pool::HashPool>,
    scram: Option<Scram>,
    /// Whether APOP secrets may be set and checked.
    apop: bool,
    /// The key ring's keys: APOP and TOTP secrets sealed, app passwords and recovery
    /// codes keyed.
    keys: Arc<crate::keys::Keys>,
    guard: Arc<Guard<D>>,
    two_factor: Arc<two_factor::TwoFactor>,
    /// Checks OAuth bearer tokens, when an issuer is configured.
    tokens: Option<Arc<dyn TokenVerifier>>,
    /// How long after its start a refused sign-in is answered.
    failure_delay: std::time::Duration,
}

// By hand: a derive would demand `D: Clone`, but only the `Arc` is cloned.
impl<D> Clone for Authenticator<D> {
    fn clone(&self) -> Self {
        Authenticator {
            dir: Arc::clone(&self.dir),
            policy: self.policy.clone(),
            hasher: Arc::clone(&self.hasher),
            pool: Arc::clone(&self.pool),
            scram: self.scram.clone(),
            apop: self.apop,
            keys: Arc::clone(&self.keys),
            guard: Arc::clone(&self.guard),
            two_factor: Arc::clone(&self.two_factor),
            tokens: self.tokens.clone(),
            failure_delay: self.failure_delay,
        }
    }
}

impl<D: Directory> Authenticator<D> {
    /// An authenticator over `dir`. At most `max_concurrent_hashes` (at least 1) argon2
    /// computations run at once across all clones.
    ///
    /// Computes the dummy hash, so it blocks for one hash's time; call it at start-up.
    pub fn new(
        dir: Arc<D>,
        policy: UsernamePolicy,
        params: Argon2Params,
        max_concurrent_hashes: usize,
    ) -> Result<Self, InvalidParams> {
        let mut key = [0u8; 32];
        // The default guard's key only has to be unpredictable; the server replaces it
        // with one derived from its persistent key (`with_defence`).
        let _ = getrandom::fill(&mut key);
        let guard = Arc::new(Guard::new(
            Arc::clone(&dir),
            LockoutPolicy::default(),
            Arc::new(SystemClock),
            &key,
            None,
        ));
        let two_factor = Arc::new(two_factor::TwoFactor::new(MfaSettings::default()));
        // Until the server's ring is given (`with_keys`): a random one of its own.
        let ring = crate::KeyRing::generate()
            .ok_or_else(|| InvalidParams::new("no randomness for a key ring"))?;
        Ok(Authenticator {
            guard,
            two_factor,
            dir,
            policy,
            hasher: Arc::new(PasswordHasher::new(params)?),
            pool: crate::pool::HashPool::new(max_concurrent_hashes, params.memory_kib.into()),
            scram: None,
            apop: false,
            keys: crate::keys::Keys::new(ring),
            tokens: None,
            failure_delay: std::time::Duration::from_secs(1),
        })
    }

    /// Sets the sign-in defence: its policy, the clock every rule reads, and the
    /// server key that keys the hashes of wrong secrets.
    pub fn with_defence(
        self,
        policy: LockoutPolicy,
        clock: Arc<dyn Clock>,
        server_key: &[u8],
    ) -> Self {
        self.with_defence_events(policy, clock, server_key, None)
    }

    /// [`Authenticator::with_defence`], telling `events` about bans and locks.
    pub fn with_defence_events(
        mut self,
        policy: LockoutPolicy,
        clock: Arc<dyn Clock>,
        server_key: &[u8],
        events: Option<Arc<dyn DefenceEvents>>,
    ) -> Self {
        self.guard = Arc::new(Guard::new(
            Arc::clone(&self.dir),
            policy,
            clock,
            server_key,
            events,
        ));
        self
    }

    /// The same defence state under a new policy, telling `events` about bans and
    /// locks from now on (a configuration reload; attempts in flight stay counted).
    pub fn with_lockout_policy(
        mut self,
        policy: LockoutPolicy,
        events: Option<Arc<dyn DefenceEvents>>,
    ) -> Self {
        self.guard = Arc::new(self.guard.with_policy(policy, events));
        self
    }

    /// The sign-in defence.
    pub fn guard(&self) -> &Guard<D> {
        &self.guard
    }

    /// The name failures are counted under: the canonical name, or (bounded) the name
    /// as given when it has none.
    fn guard_name(&self, raw_user: &str) -> String {
        self.policy.canonical(raw_user).unwrap_or_else(|_| {
            let mut end = raw_user.len().min(crate::MAX_USERNAME_BYTES);
            while !raw_user.is_char_boundary(end) {
                end -= 1;
            }
            raw_user[..end].to_owned()
        })
    }

    /// Enables OAUTHBEARER and XOAUTH2, with `verifier` checking the tokens.
    pub fn with_token_verifier(mut self, verifier: Arc<dyn TokenVerifier>) -> Self {
        self.tokens = Some(verifier);
        self
    }

    /// Enables APOP secrets (sealed under the key ring: [`Authenticator::with_keys`]).
    pub fn with_apop(mut self) -> Self {
        self.apop = true;
        self
    }

    /// Seals and keys with the server's key ring (APOP and TOTP secrets, app passwords,
    /// recovery codes); shared with whoever puts a new version of it in force.
    pub fn with_keys(mut self, keys: Arc<crate::keys::Keys>) -> Self {
        self.keys = keys;
        self
    }

    /// The key ring's keys in force (to put a new version of the ring in force).
    pub fn keys(&self) -> &Arc<crate::keys::Keys> {
        &self.keys
    }

    /// Enables SCRAM-SHA-256: keys with `iterations` are derived whenever a password is
    /// set or verified and the stored keys are missing or weaker. `server_secret` keys
    /// the fake parameters shown for unknown users.
    pub fn with_scram(mut self, iterations: u32, server_secret: Vec<u8>) -> Self {
        self.scram = Some(Scram {
            iterations: iterations.max(4096),
            server_secret: server_secret.into(),
            counts: Arc::default(),
        });
        self
    }

    /// Turns SCRAM-SHA-256 off (a configuration reload that drops it).
    pub fn without_scram(mut self) -> Self {
        self.scram = None;
        self
    }

    /// Whether a PLAIN/SCRAM authorization identity may be used: only one that names
    /// the signing-in user (acting for someone else is not supported).
    pub fn authzid_allowed(&self, authzid: Option<&str>, canonical_user: &str) -> bool {
        match authzid {
            None => true,
            Some(a) => self.policy.canonical(a).is_ok_and(|a| a == canonical_user),
        }
    }

    /// The user name policy, for callers that need the canonical name first (for
    /// example to derive a Maildir path). Canonicalisation is idempotent.
    pub fn policy(&self) -> &UsernamePolicy {
        &self.policy
    }

    /// The directory behind this authenticator.
    pub fn directory(&self) -> &Arc<D> {
        &self.dir
    }

    /// Checks a user name and password from `source`, as USER/PASS, PLAIN and LOGIN
    /// present them, under the sign-in defence (throttling, lockout, bans, per-user
    /// networks, LOGIN-DELAY).
    pub async fn verify_password(
        &self,
        raw_user: &str,
        raw_password: &[u8],
        source: IpAddr,
    ) -> Result<Identity, AuthFailure> {
        self.verify_password_as(raw_user, raw_password, None, source)
            .await
    }

    /// [`Authenticator::verify_password`] with the SASL authorization identity the
    /// client asked to act as (PLAIN's authzid): one that names someone else is refused
    /// like a wrong password, after the hash (so it takes as long), and counted as one.
    pub async fn verify_password_as(
        &self,
        raw_user: &str,
        raw_password: &[u8],
        authzid: Option<&str>,
        source: IpAddr,
    ) -> Result<Identity, AuthFailure> {
        let name = self.guard_name(raw_user);
        let ticket = self.guard.admit_past_lock(&name, source).await?;
        let result = if ticket.past_lock() {
            // Locked for unfamiliar networks: an app password may still open POP3;
            // the account password is never checked, whatever the secret looks like.
            self.check_app_password_only(raw_user, raw_password, source)
                .await
        } else {
            self.check_password(raw_user, raw_password, source, Purpose::Pop3, ticket.lane())
                .await
        }
        .and_then(|identity| {
            if self.authzid_allowed(authzid, &identity.user) {
                Ok(identity)
            } else {
                Err(AuthFailure::Rejected(Reason::AuthzidMismatch))
            }
        });
        // The keyed hash of a wrong secret, to count a stale one once; never of a
        // password that may be right (refused for its authzid, or not checked at all
        // during a lock).
        let attempt = matches!(result, Err(AuthFailure::Rejected(r))
            if r != Reason::AuthzidMismatch && r != Reason::Locked)
        .then(|| self.guard.attempt_hash(&name, raw_password));
        self.guard.settle(ticket, result, attempt).await
    }

    /// Checks a user name and password, with no defence around it.
    ///
    /// Every outcome spends one argon2 verification, so the time taken does not say
    /// which [`Reason`] applied. A password that does not match a disabled account is
    /// reported as [`Reason::BadPassword`]; [`Reason::Disabled`] means the password was
    /// right. On success, a hash with outdated parameters is replaced (best effort).
    ///
    /// For [`Purpose::AccountPassword`] only the account password counts: no app
    /// password, no `password` + code, and two-factor sign-in is the caller's business.
    async fn check_password(
        &self,
        raw_user: &str,
        raw_password: &[u8],
        source: IpAddr,
        purpose: Purpose,
        lane: Lane,
    ) -> Result<Identity, AuthFailure> {
        let user = match self.policy.canonical(raw_user) {
            Ok(user) => user,
            Err(_) => return self.dummy_then(raw_password, Reason::BadInput, lane).await,
        };
        let Some(record) = self.lookup(&user).await? else {
            return self
                .dummy_then(raw_password, Reason::UnknownUser, lane)
                .await;
        };
        // An app password: random and long, so a keyed-hash lookup decides it, with no
        // argon2 (its failures fall through to the password check like any other).
        let pop3 = purpose == Purpose::Pop3;
        if pop3 && let Some(result) = self.try_app_password(&record, raw_password, source).await? {
            return result;
        }
        let mfa_on = pop3 && self.two_factor_on(&record.name).await?;
        // With two factors on, `password` + the current 6-digit code may open a
        // one-off session where the configuration allows it.
        let (raw_password, code) = match self.split_code(mfa_on, raw_password) {
            Some((password, code)) => (password, Some(code)),
            None => (raw_password, None),
        };
        let Ok(password) = prepare_password(raw_password) else {
            return self.dummy_then(raw_password, Reason::BadInput, lane).await;
        };

        let UserRecord {
            name,
            password_hash,
            enabled,
            maildir,
            scram_sha256,
            allowed_networks,
            ..
        } = record;
        let scram_stale = self.scram.as_ref().is_some_and(|s| {
            scram_sha256
                .as_deref()
                .and_then(ScramKeys::parse)
                .is_none_or(|k| k.iterations < s.iterations)
        });
        // Imported hashes were made from the bytes the old server saw, before any
        // SASLprep; they are checked against the password exactly as sent. The check
        // holds the stored hash's memory, within the pool's budget.
        let as_sent = Zeroizing::new(String::from_utf8_lossy(raw_password).into_owned());
        let memory_kib = self.hasher.memory_to_check(&password_hash);
        let (matched, stale, password, password_hash) = self
            .hashing_sized(lane, memory_kib, move |h| {
                let (matched, stale) = h.verify_stored(&password_hash, &password, &as_sent);
                (matched, stale, password, password_hash)
            })
            .await?;
        if !matched {
            return Err(AuthFailure::Rejected(Reason::BadPassword));
        }
        if !enabled {
            return Err(AuthFailure::Rejected(Reason::Disabled));
        }
        if stale || scram_stale {
            self.rehash(&name, password, password_hash, !stale).await;
        }
        if mfa_on {
            // The password was right, but alone it does not open the account; the
            // client hears the same answer as for a wrong one.
            let Some(code) = code else {
                return Err(AuthFailure::Rejected(Reason::MfaRequired));
            };
            if !self.accept_totp(&name, code).await? {
                return Err(AuthFailure::Rejected(Reason::BadSecondFactor));
            }
        }
        Ok(Identity {
            user: name,
            maildir: PathBuf::from(maildir),
            allowed_networks,
            new_network: false,
            read_only: false,
        })
    }

    /// During a lock for unfamiliar networks: only an app password of the account is
    /// looked up (a keyed hash, no argon2); anything else is refused as [`Reason::Locked`]
    /// without being checked.
    async fn check_app_password_only(
        &self,
        raw_user: &str,
        raw_password: &[u8],
        source: IpAddr,
    ) -> Result<Identity, AuthFailure> {
        let Ok(user) = self.policy.canonical(raw_user) else {
            return Err(AuthFailure::Rejected(Reason::Locked));
        };
        let Some(record) = self.lookup(&user).await? else {
            return Err(AuthFailure::Rejected(Reason::Locked));
        };
        match self.try_app_password(&record, raw_password, source).await? {
            Some(result) => result,
            None => Err(AuthFailure::Rejected(Reason::Locked)),
        }
    }

    /// Spends one dummy verification (so a refusal takes as long as a real check),
    /// then refuses for `reason`.
    async fn dummy_then(
        &self,
        raw_password: &[u8],
        reason: Reason,
        lane: Lane,
    ) -> Result<Identity, AuthFailure> {
        let password =
            prepare_password(raw_password).unwrap_or_else(|_| Zeroizing::new(String::new()));
        self.hashing_in(lane, move |h| h.verify_dummy(&password))
            .await?;
        Err(AuthFailure::Rejected(reason))
    }

    /// The argon2id hash and, with SCRAM on, the SCRAM keys of one prepared password:
    /// both come from the same string, so no mechanism sees a different password.
    async fn credentials(
        &self,
        password: Zeroizing<String>,
    ) -> Result<(String, Option<String>), AdminError> {
        let scram = self.scram.as_ref().map(|s| s.iterations);
        self.hashing(move |h| derive(h, &password, None, scram))
            .await
            .flatten()
            .ok_or_else(|| AdminError::Unavailable("password hashing failed".into()))
    }

    /// Replaces an outdated hash, or adds missing SCRAM keys, after a successful
    /// sign-in; `verified` is the stored hash the password matched, kept as it is
    /// when `keep_hash` (only the SCRAM keys need work). The password is the same, so
    /// the directory keeps its date and its imported mark. Written only if `verified`
    /// is still what is stored: a password changed while this sign-in was in flight
    /// stands. Failures only cost the upgrade, never the sign-in.
    async fn rehash(
        &self,
        user: &str,
        password: Zeroizing<String>,
        verified: String,
        keep_hash: bool,
    ) {
        let scram = self.scram.as_ref().map(|s| s.iterations);
        let keep = keep_hash.then(|| verified.clone());
        let Some((hash, scram)) = self
            .hashing(move |h| derive(h, &password, keep, scram))
            .await
            .flatten()
        else {
            return;
        };
        match self
            .dir
            .upgrade_credentials(user, &verified, &hash, scram.as_deref())
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::info!(
                user,
                "credentials changed during sign-in; upgrade not stored"
            ),
            Err(err) => tracing::warn!(error = %err, "could not store upgraded credentials"),
        }
    }

    /// The directory's record for a canonical name; a directory failure is
    /// [`AuthFailure::Unavailable`] (`-ERR [SYS/TEMP]`), never a rejection.
    async fn lookup(&self, user: &str) -> Result<Option<UserRecord>, AuthFailure> {
        self.dir.find_user(user).await.map_err(|err| {
            tracing::warn!(error = %err, "directory lookup failed during sign-in");
            AuthFailure::Unavailable
        })
    }

    /// Runs `work` on a hashing thread once one is free and the pool's memory budget
    /// has room for the configured argon2 memory. `None` if the job panicked (it holds
    /// no secret in its panic message).
    async fn hashing<T, F>(&self, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&PasswordHasher) -> T + Send + 'static,
    {
        let hasher = Arc::clone(&self.hasher);
        // On the fixed hashing threads: the memory bound holds whatever the load, and
        // a cancelled caller's job still finishes there without blocking anyone else.
        // Administration and upgrades after a success go in the familiar lane.
        self.pool
            .run(Lane::Familiar, self.hasher.memory_kib(), move || {
                work(&hasher)
            })
            .await
            .ok()
            .flatten()
    }

    /// [`Authenticator::hashing`] for a sign-in's check, in `lane`: a full queue for
    /// unfamiliar networks refuses the attempt unchecked ([`Reason::Busy`]).
    async fn hashing_in<T, F>(&self, lane: Lane, work: F) -> Result<T, AuthFailure>
    where
        T: Send + 'static,
        F: FnOnce(&PasswordHasher) -> T + Send + 'static,
    {
        self.hashing_sized(lane, self.hasher.memory_kib(), work)
            .await
    }

    /// [`Authenticator::hashing_in`] for a check that holds `memory_kib` (a stored
    /// hash's own cost, see [`PasswordHasher::memory_to_check`]).
    async fn hashing_sized<T, F>(
        &self,
        lane: Lane,
        memory_kib: u64,
        work: F,
    ) -> Result<T, AuthFailure>
    where
        T: Send + 'static,
        F: FnOnce(&PasswordHasher) -> T + Send + 'static,
    {
        let hasher = Arc::clone(&self.hasher);
        match self.pool.run(lane, memory_kib, move || work(&hasher)).await {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err(AuthFailure::Unavailable),
            Err(crate::pool::Busy) => Err(AuthFailure::Rejected(Reason::Busy)),
        }
    }
}

/// Hashes (unless `keep_hash`) and derives SCRAM keys (when `scram_iterations`) for one
/// prepared password. `None` only if the system's random source fails.
fn derive(
    hasher: &PasswordHasher,
    password: &str,
    keep_hash: Option<String>,
    scram_iterations: Option<u32>,
) -> Option<(String, Option<String>)> {
    let hash = keep_hash.unwrap_or_else(|| hasher.hash(password));
    let scram = match scram_iterations {
        Some(i) => Some(ScramKeys::generate(password, i).ok()?.to_stored()),
        None => None,
    };
    Some((hash, scram))
}
