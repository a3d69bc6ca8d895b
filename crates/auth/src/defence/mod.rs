//! The sign-in defence: throttling, smart lockout, bans, per-user networks and
//! LOGIN-DELAY, decided here and remembered in the directory.
//!
//! Every sign-in goes through [`Guard::admit`] before its credential is checked and
//! [`Guard::settle`] after. `admit` *reserves*: in one transaction of the directory it
//! reads the counts, applies the policy's gate and, if the attempt may go on, counts it
//! as a failure already. Parallel attempts are therefore decided as if they came one
//! after another (fifty guesses sent at once get the checks four sent in turn would),
//! across every node sharing the directory; `settle` takes the reservation back for a
//! success and keeps it for a failure, and an attempt whose caller went away before
//! settling (a client that hung up) stays counted.
//!
//! An attempt refused by `admit` spends no hash and extends no wait or lock (an
//! attempt on a locked account still counts toward its source's ban); the server
//! answers it with the same `-ERR [AUTH]`, after the same delay, as any other failure,
//! so a guess made during a lock reveals nothing.

mod clock;
mod policy;

use std::net::IpAddr;
use std::sync::Arc;

use directory::{Directory, FailureRecord, GuardQuery, GuardState, Millis, ReserveQuery};
use hmac::{Hmac, KeyInit as _, Mac as _};
use ipnet::IpNet;
use sha2::Sha256;

pub use clock::{Clock, ManualClock, SystemClock};
use policy::ms;
pub use policy::{LockoutPolicy, Refusal, network_key, source_key};

use crate::{AuthFailure, Identity, Reason};

/// Successes refresh a familiar network's time at most this often (fewer writes for
/// clients that poll every minute).
const FAMILIAR_REFRESH: Millis = 60 * 60 * 1000;

/// One attempt between [`Guard::admit`] and [`Guard::settle`]. Dropped unsettled, the
/// attempt stays counted as a failure.
#[derive(Debug)]
pub struct Ticket {
    user: String,
    ip: IpAddr,
    source: String,
    network: String,
    state: GuardState,
    familiar: bool,
    /// Counted as a failure in the directory by `admit` until settled (a shared
    /// directory); otherwise only this process's in-flight count holds it.
    reserved: bool,
    /// Admitted past an account lock: only a credential that cannot be guessed may be
    /// checked ([`Guard::admit_past_lock`]).
    past_lock: bool,
    /// The account signed in from this network lately (it is familiar to it).
    network_familiar: bool,
    /// Its place among this process's attempts in flight.
    _place: Option<Box<InFlightPlace>>,
}

/// One admission decision, before it is acted on.
struct Attempt {
    ticket: Ticket,
    admitted: bool,
    /// The counts if this process's attempts in flight all succeed.
    without: GuardState,
    /// This process's attempts in flight on the (user, source) and the account.
    here: u32,
    account: u32,
    now: Millis,
}

impl Ticket {
    /// Admitted past an account lock: check only an app password, a bearer token or a
    /// client certificate, never the account password.
    pub fn past_lock(&self) -> bool {
        self.past_lock
    }

    /// The hashing lane of this attempt: the familiar one for an account's own network
    /// (the real user, polling from home or the office), the others' otherwise.
    pub(crate) fn lane(&self) -> crate::pool::Lane {
        if self.state.last_success.is_some() && self.network_familiar {
            crate::pool::Lane::Familiar
        } else {
            crate::pool::Lane::Others
        }
    }

    /// The ticket's keys (user, source, familiarity), without its place in flight.
    fn clone_key(&self) -> Ticket {
        Ticket {
            user: self.user.clone(),
            ip: self.ip,
            source: self.source.clone(),
            network: self.network.clone(),
            state: self.state,
            familiar: self.familiar,
            reserved: self.reserved,
            past_lock: self.past_lock,
            network_familiar: self.network_familiar,
            _place: None,
        }
    }
}

/// Told when the defence bans an address or locks an account (the audit log).
pub trait DefenceEvents: Send + Sync + 'static {
    /// `source` is banned until `until` for failing on `accounts` accounts.
    fn banned(&self, source: &str, accounts: u32, until: Millis);
    /// `user` is locked for unfamiliar networks until `until`.
    fn locked(&self, user: &str, failures: u32, until: Millis);
}

/// Applies a [`LockoutPolicy`] over a directory, with one clock.
pub struct Guard<D> {
    dir: Arc<D>,
    policy: LockoutPolicy,
    clock: Arc<dyn Clock>,
    events: Option<Arc<dyn DefenceEvents>>,
    /// Keys the hashes of wrong secrets (never stored in the clear).
    attempt_key: [u8; 32],
    /// This process's attempts admitted and not yet settled.
    in_flight: Arc<InFlight>,
}

/// How long an attempt waits for this process's earlier attempts on the same (user,
/// source) or account to be settled, when only they stand in its way.
const IN_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The attempts this process has admitted and not yet settled, per (user, source) and
/// per account (those from unfamiliar networks). A reservation counts as a failure in
/// the directory until settled; an attempt the gate refuses only because of this
/// process's own unsettled reservations waits for them instead, so parallel attempts
/// are decided as they would be one after another: ten right passwords sent at once
/// all get through, fifty wrong ones get the checks four sent in turn would.
struct InFlight {
    counts: std::sync::Mutex<std::collections::HashMap<(String, String), (u32, u32)>>,
    settled: tokio::sync::Notify,
    /// Admission decisions on one user name are taken one at a time in this process
    /// (sharded by the name's hash).
    decisions: Box<[tokio::sync::Mutex<()>]>,
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight {
            counts: Default::default(),
            settled: Default::default(),
            decisions: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }
}

impl InFlight {
    fn decision(&self, user: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(user);
        &self.decisions[(hash % self.decisions.len() as u64) as usize]
    }

    fn key(ticket: &Ticket) -> (String, String) {
        (ticket.user.clone(), ticket.source.clone())
    }

    /// (for the (user, source), for the account from unfamiliar networks)
    fn counts(&self, user: &str, source: &str) -> (u32, u32) {
        let map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let here = map
            .get(&(user.to_owned(), source.to_owned()))
            .map_or(0, |c| c.0);
        let account = map
            .iter()
            .filter(|((u, _), _)| u == user)
            .map(|(_, c)| c.1)
            .sum();
        (here, account)
    }

    /// An attempt in flight is settled (or its failure written): one less, and the
    /// attempts waiting on it decide again.
    fn done(&self, ticket: &Ticket) {
        self.add(ticket, -1);
        self.settled.notify_waiters();
    }

    fn add(&self, ticket: &Ticket, by: i32) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(Self::key(ticket)).or_insert((0, 0));
        let unfamiliar = u32::from(!ticket.familiar);
        if by > 0 {
            entry.0 += 1;
            entry.1 += unfamiliar;
        } else {
            entry.0 = entry.0.saturating_sub(1);
            entry.1 = entry.1.saturating_sub(unfamiliar);
        }
        if entry.0 == 0 {
            map.remove(&Self::key(ticket));
        }
    }
}

/// Holds a ticket's place among the attempts in flight; given back when the ticket is
/// settled or dropped (an attempt dropped unsettled stays counted as a failure).
struct InFlightPlace {
    in_flight: Arc<InFlight>,
    key: Ticket,
    /// Set until the ticket is settled: who records it as a failure if it is dropped
    /// unsettled and the directory did not count it already.
    abandon: Option<Arc<dyn Abandoned>>,
}

impl Drop for InFlightPlace {
    fn drop(&mut self) {
        if let Some(guard) = self.abandon.take() {
            // Still in flight until its failure is written: the next attempt must see
            // one or the other.
            guard.abandoned(self.key.clone_key(), Arc::clone(&self.in_flight));
            return;
        }
        self.in_flight.done(&self.key);
    }
}

/// Records an attempt whose caller went away before settling it (a client that hung
/// up mid-check): it counts as a failure, and leaves the attempts in flight after.
trait Abandoned: Send + Sync {
    fn abandoned(self: Arc<Self>, ticket: Ticket, in_flight: Arc<InFlight>);
}

impl<D: Directory> Abandoned for Guard<D> {
    fn abandoned(self: Arc<Self>, ticket: Ticket, in_flight: Arc<InFlight>) {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let now = self.now();
                    self.record_failure(&ticket, None, now).await;
                    in_flight.done(&ticket);
                });
            }
            Err(_) => in_flight.done(&ticket),
        }
    }
}

impl std::fmt::Debug for InFlightPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InFlightPlace")
    }
}

impl<D> std::fmt::Debug for Guard<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<D: Directory> Guard<D> {
    /// A guard; `server_key` keys the hashes of wrong secrets.
    pub fn new(
        dir: Arc<D>,
        policy: LockoutPolicy,
        clock: Arc<dyn Clock>,
        server_key: &[u8],
        events: Option<Arc<dyn DefenceEvents>>,
    ) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(server_key).expect("HMAC takes any key");
        mac.update(b"poplar attempt hash v1");
        Guard {
            dir,
            policy,
            clock,
            events,
            attempt_key: mac.finalize().into_bytes().into(),
            in_flight: Arc::default(),
        }
    }

    /// This guard under another policy, telling `events` from now on: the attempts in
    /// flight, the clock and the key stay shared (a configuration reload).
    pub fn with_policy(
        &self,
        policy: LockoutPolicy,
        events: Option<Arc<dyn DefenceEvents>>,
    ) -> Self {
        Guard {
            dir: Arc::clone(&self.dir),
            policy,
            clock: Arc::clone(&self.clock),
            events,
            attempt_key: self.attempt_key,
            in_flight: Arc::clone(&self.in_flight),
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// The clock every rule reads.
    pub fn now(&self) -> Millis {
        self.clock.now()
    }

    /// Whether a connection from `ip` may be served at all: not while its address is
    /// banned, unless its network is familiar to some account (a shared NAT; then only
    /// sign-ins to accounts it is not familiar to are refused, by [`Guard::admit`]).
    pub async fn connection_allowed(&self, ip: IpAddr) -> bool {
        let now = self.now();
        match self.dir.source_ban(&source_key(ip), now).await {
            Ok(None) => true,
            Ok(Some(_)) => {
                let since = now.saturating_sub(ms(self.policy.familiar_for));
                // A directory failure lets the connection in: its sign-ins are gated
                // again one by one.
                self.dir
                    .network_familiar_to_anyone(&network_key(ip), since)
                    .await
                    .unwrap_or(true)
            }
            Err(err) => {
                tracing::warn!(error = %err, "ban lookup failed");
                true
            }
        }
    }

    /// Admits an attempt on `user` (canonical, or as given when it has no canonical
    /// form; empty: a token that names no one, limited per source only) from `ip`, or
    /// refuses it if the policy says so. An admitted attempt counts as a failure until
    /// [`Guard::settle`] says otherwise, in the directory when it is shared (so every
    /// node sees it) and in this process's in-flight counts always; one dropped
    /// unsettled is recorded as a failure.
    pub async fn admit(self: &Arc<Self>, user: &str, ip: IpAddr) -> Result<Ticket, AuthFailure> {
        self.admit_with(user, ip, false).await
    }

    /// [`Guard::admit`] for a credential that cannot be guessed (an app password, a
    /// bearer token, a client certificate): admitted even while the account is locked
    /// for unfamiliar networks, without counting toward that lock. A ticket admitted so
    /// says [`Ticket::past_lock`]: then only such a credential may be checked, never the
    /// account password. Bans and throttling apply as to any attempt.
    pub async fn admit_past_lock(
        self: &Arc<Self>,
        user: &str,
        ip: IpAddr,
    ) -> Result<Ticket, AuthFailure> {
        self.admit_with(user, ip, true).await
    }

    async fn admit_with(
        self: &Arc<Self>,
        user: &str,
        ip: IpAddr,
        past_lock: bool,
    ) -> Result<Ticket, AuthFailure> {
        let started = tokio::time::Instant::now();
        loop {
            // Registered before the attempt, so no settlement in between is missed.
            let settled = self.in_flight.settled.notified();
            let decision = self.in_flight.decision(user).lock().await;
            let mut attempt = self.decide(user, ip, !user.is_empty(), false).await?;
            if !attempt.admitted
                && past_lock
                && self.policy.gate(&attempt.ticket.state, attempt.now) == Err(Refusal::Locked)
            {
                // Locked, and nothing else: a credential that cannot be guessed may
                // still be tried, counted for its source only.
                attempt = self.decide(user, ip, false, true).await?;
                attempt.ticket.past_lock = attempt.admitted;
            }
            let Attempt {
                mut ticket,
                admitted,
                without,
                here,
                account,
                now,
            } = attempt;
            if admitted {
                self.in_flight.add(&ticket, 1);
                drop(decision);
                // Settling goes by the counts the directory holds.
                if !ticket.reserved {
                    ticket.state = without;
                }
                let abandon: Option<Arc<dyn Abandoned>> =
                    (!ticket.reserved).then(|| self.clone() as Arc<dyn Abandoned>);
                let place = InFlightPlace {
                    in_flight: self.in_flight.clone(),
                    key: ticket.clone_key(),
                    abandon,
                };
                return Ok(Ticket {
                    _place: Some(Box::new(place)),
                    ..ticket
                });
            }
            drop(decision);
            // Refused. If only this process's own unsettled attempts stand in the way,
            // wait for them to be settled, then decide again.
            let waiting_helps = (here > 0 || account > 0)
                && self.policy.gate(&without, now).is_ok()
                && started.elapsed() < IN_FLIGHT_WAIT;
            if !waiting_helps {
                return self.refuse(ticket, now).await;
            }
            let left = IN_FLIGHT_WAIT.saturating_sub(started.elapsed());
            let _ = tokio::time::timeout(left.min(std::time::Duration::from_millis(250)), settled)
                .await;
        }
    }

    /// One admission decision (under the user name's decision lock): the directory's
    /// reservation, and this process's attempts in flight where the directory does not
    /// count them. `count_account`: an admitted attempt from an unfamiliar network also
    /// counts toward the account's lock; `past_lock`: the lock does not refuse.
    async fn decide(
        &self,
        user: &str,
        ip: IpAddr,
        count_account: bool,
        past_lock: bool,
    ) -> Result<Attempt, AuthFailure> {
        // This process's attempts in flight are read before the directory: an attempt
        // settled in between is then counted twice (a refusal that waits and decides
        // again), never missed. Read the other way round, its failure could be missing
        // from the directory read and from the in-flight count both, and one guess
        // more than the lock allows was checked (51 of 1,000 in a CI run).
        let source = source_key(ip);
        let (here, account) = self.in_flight.counts(user, &source);
        let (mut ticket, shared) = self.reserve(user, ip, count_account, past_lock).await?;
        let now = self.now();
        debug_assert_eq!(ticket.source, source);
        let gate = |state: &GuardState| {
            if past_lock {
                self.policy.gate_past_lock(state, now).is_ok()
            } else {
                self.policy.gate(state, now).is_ok()
            }
        };
        // `without`: the counts as they will be if this process's attempts in flight
        // all succeed.
        let (admitted, without) = if shared {
            let mut without = ticket.state;
            without.failures = without.failures.saturating_sub(here);
            if !ticket.familiar {
                without.account_failures = without.account_failures.saturating_sub(account);
            }
            (ticket.reserved, without)
        } else {
            let without = ticket.state;
            let mut with = without;
            if here > 0 {
                with.failures = with.failures.saturating_add(here);
                with.last_failure = Some(now);
            }
            if !ticket.familiar && account > 0 {
                with.account_failures = with.account_failures.saturating_add(account);
                with.account_last_failure = Some(now);
            }
            ticket.state = with;
            (gate(&with), without)
        };
        Ok(Attempt {
            ticket,
            admitted,
            without,
            here,
            account,
            now,
        })
    }

    /// One reservation in the directory (see [`Directory::reserve_attempt`]).
    /// With it, whether the directory counts reservations (a shared one).
    async fn reserve(
        &self,
        user: &str,
        ip: IpAddr,
        count_account: bool,
        past_lock: bool,
    ) -> Result<(Ticket, bool), AuthFailure> {
        let now = self.now();
        let source = source_key(ip);
        let network = network_key(ip);
        let policy = &self.policy;
        let gate = |state: &GuardState| {
            if past_lock {
                policy.gate_past_lock(state, now).is_ok()
            } else {
                policy.gate(state, now).is_ok()
            }
        };
        let reservation = self
            .dir
            .reserve_attempt(
                &ReserveQuery {
                    query: GuardQuery {
                        user,
                        source: &source,
                        network: &network,
                        now,
                        forget_before: now.saturating_sub(ms(policy.forget_after)),
                    },
                    familiar_since: now.saturating_sub(ms(policy.familiar_for)),
                    count_account,
                },
                &gate,
            )
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "defence state lookup failed");
                AuthFailure::Unavailable
            })?;
        Ok((
            Ticket {
                user: user.to_owned(),
                ip,
                familiar: !reservation.unfamiliar,
                reserved: reservation.reserved && reservation.counted,
                source,
                network,
                state: reservation.state,
                past_lock: false,
                network_familiar: policy
                    .still_familiar(reservation.state.network_last_success, now),
                _place: None,
            },
            reservation.counted,
        ))
    }

    /// Checks an attempt against the policy without admitting it (nothing is counted):
    /// for a token that names no one, before the network call that would name its user.
    pub async fn check(&self, user: &str, ip: IpAddr) -> Result<(), AuthFailure> {
        let now = self.now();
        let (source, network) = (source_key(ip), network_key(ip));
        let state = self
            .dir
            .guard_state(&GuardQuery {
                user,
                source: &source,
                network: &network,
                now,
                forget_before: now.saturating_sub(ms(self.policy.forget_after)),
            })
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "defence state lookup failed");
                AuthFailure::Unavailable
            })?;
        self.policy
            .gate(&state, now)
            .map_err(|refusal| AuthFailure::Rejected(refusal_reason(refusal)))
    }

    /// The answer to an attempt the gate refused in the directory's transaction.
    async fn refuse(&self, ticket: Ticket, now: Millis) -> Result<Ticket, AuthFailure> {
        // (The gate said no inside the transaction; with the same state and clock it
        // says so here too.)
        let refusal = self
            .policy
            .gate(&ticket.state, now)
            .err()
            .unwrap_or(Refusal::Throttled);
        if refusal == Refusal::Locked {
            // A sprayer meets accounts its own spray has locked: each still counts as a
            // failure of this source (toward its ban), but not toward the account's
            // lock, which it must not keep extending.
            let counting = Ticket {
                familiar: true,
                ..ticket
            };
            self.record_failure(&counting, None, now).await;
        }
        Err(AuthFailure::Rejected(refusal_reason(refusal)))
    }

    /// A keyed hash of a wrong secret, to recognise a client retrying the same stale
    /// password. Truncated to 128 bits; useless without the server key.
    pub fn attempt_hash(&self, user: &str, secret: &[u8]) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.attempt_key).expect("HMAC takes any key");
        mac.update(user.as_bytes());
        mac.update(&[0]);
        mac.update(secret);
        let tag = mac.finalize().into_bytes();
        tag[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Applies the per-user network list and LOGIN-DELAY to a verified identity, then
    /// records the outcome. `attempt` is the keyed hash of the secret, for mechanisms
    /// whose secret repeats across attempts (passwords).
    pub async fn settle(
        &self,
        ticket: Ticket,
        result: Result<Identity, AuthFailure>,
        attempt: Option<String>,
    ) -> Result<Identity, AuthFailure> {
        self.settle_with(ticket, result, attempt, true).await
    }

    /// [`Guard::settle`]; `login_delay` says whether LOGIN-DELAY applies (it is a POP3
    /// rule: the security page's sign-ins are not mail polls).
    pub async fn settle_with(
        &self,
        mut ticket: Ticket,
        result: Result<Identity, AuthFailure>,
        attempt: Option<String>,
        login_delay: bool,
    ) -> Result<Identity, AuthFailure> {
        let now = self.now();
        // Settled here: no longer an abandoned attempt if dropped.
        if let Some(place) = ticket._place.as_mut() {
            place.abandon = None;
        }
        let result = result.and_then(|identity| {
            if !network_allowed(identity.allowed_networks.as_deref(), ticket.ip) {
                Err(AuthFailure::Rejected(Reason::IpDenied))
            } else {
                Ok(identity)
            }
        });
        match result {
            Ok(mut identity) => {
                // Not a failure after all: the reservation goes back.
                self.release(&ticket, now).await;
                if login_delay && self.policy.too_soon(ticket.state.last_success, now) {
                    return Err(AuthFailure::LoginDelay);
                }
                self.record_success(&ticket, &identity, now).await;
                // A first sign-in ever (or right after a migration) has nothing to
                // compare with: only a known account on an unknown network counts.
                identity.new_network = !self
                    .policy
                    .still_familiar(ticket.state.network_last_success, now)
                    && ticket.state.last_success.is_some();
                Ok(identity)
            }
            Err(AuthFailure::Rejected(Reason::Busy)) => {
                // Not checked (the hashing queue was full): counted nowhere.
                self.release(&ticket, now).await;
                Err(AuthFailure::Rejected(Reason::Busy))
            }
            Err(AuthFailure::Rejected(reason)) => {
                self.record_failure(&ticket, attempt.as_deref(), now).await;
                Err(AuthFailure::Rejected(reason))
            }
            Err(other) => {
                // The directory or the hashing failed: nothing was decided.
                self.release(&ticket, now).await;
                Err(other)
            }
        }
    }

    /// Takes a reservation back.
    async fn release(&self, ticket: &Ticket, now: Millis) {
        if !ticket.reserved {
            return;
        }
        if let Err(err) = self
            .dir
            .release_attempt(
                &ticket.user,
                &ticket.source,
                !ticket.familiar,
                now.saturating_sub(ms(self.policy.forget_after)),
            )
            .await
        {
            tracing::warn!(error = %err, "could not release a sign-in reservation");
        }
    }

    async fn record_success(&self, ticket: &Ticket, identity: &Identity, now: Millis) {
        let s = &ticket.state;
        let fresh = s
            .network_last_success
            .is_some_and(|t| now.saturating_sub(t) < FAMILIAR_REFRESH);
        // A success forgets this (user, source)'s failures and refreshes the network;
        // it leaves the account's count alone, so failures from elsewhere (a spray on
        // this account) do not make the real user's every sign-in a write.
        if fresh && s.failures == 0 {
            return;
        }
        if let Err(err) = self
            .dir
            .record_success(&identity.user, &ticket.source, &ticket.network, now)
            .await
        {
            tracing::warn!(error = %err, "could not record a successful sign-in");
        }
    }

    async fn record_failure(&self, ticket: &Ticket, attempt: Option<&str>, now: Millis) {
        let p = &self.policy;
        let counts = match self
            .dir
            .record_failure(&FailureRecord {
                user: &ticket.user,
                source: &ticket.source,
                attempt,
                unfamiliar: !ticket.familiar,
                now,
                forget_before: now.saturating_sub(ms(p.forget_after)),
                remember: p.remember_wrong_secrets,
                spray_since: now.saturating_sub(ms(p.ban_window)),
                reserved: ticket.reserved,
            })
            .await
        {
            Ok(counts) => counts,
            Err(err) => {
                tracing::warn!(error = %err, "could not record a failed sign-in");
                return;
            }
        };
        if counts.repeated {
            tracing::debug!(source = %ticket.source, "repeated wrong secret counted once");
            return;
        }
        if p.ban_accounts > 0 && counts.accounts_from_source >= p.ban_accounts {
            let until = now.saturating_add(ms(p.ban_for));
            match self
                .dir
                .ban_source(&ticket.source, now, until, counts.accounts_from_source)
                .await
            {
                Ok(()) => {
                    tracing::warn!(
                        source = %ticket.source,
                        accounts = counts.accounts_from_source,
                        "source banned for failing across many accounts"
                    );
                    if let Some(events) = &self.events {
                        events.banned(&ticket.source, counts.accounts_from_source, until);
                    }
                }
                Err(err) => tracing::warn!(error = %err, "could not store a ban"),
            }
        }
        if !ticket.familiar && counts.account_failures == p.lockout_threshold {
            tracing::warn!(user = %ticket.user, "account locked for unfamiliar networks");
            if let (Some(events), Some(until)) = (
                &self.events,
                p.locked_until(counts.account_failures, Some(now)),
            ) {
                events.locked(&ticket.user, counts.account_failures, until);
            }
        }
    }

    /// Forgets counts and bans that no longer matter.
    pub async fn prune(&self) {
        let before = self
            .now()
            .saturating_sub(ms(self.policy.forget_after.max(self.policy.ban_for)));
        if let Err(err) = self.dir.prune_defence(before).await {
            tracing::warn!(error = %err, "could not prune the defence tables");
        }
    }
}

/// Whether `ip` is inside a comma-separated CIDR list; `None` allows everything, and an
/// entry that does not parse allows nothing (the CLI validates lists when they are set).
pub fn network_allowed(list: Option<&str>, ip: IpAddr) -> bool {
    let Some(list) = list else {
        return true;
    };
    let ip = ip.to_canonical();
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .filter_map(|e| parse_network(e).ok())
        .any(|net| net.contains(&ip))
}

/// The stored form of a network list given as CIDRs or addresses (each normalised,
/// comma-joined); the first entry that is not a network is the error.
pub fn network_list<S: AsRef<str>>(entries: &[S]) -> Result<String, String> {
    let parsed = entries
        .iter()
        .map(|e| parse_network(e.as_ref()).map(|n| n.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(parsed.join(","))
}

/// A CIDR, or a single address as its /32 or /128.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("not a network: {text:?}"))
}

/// The private reason of a refusal by the gate.
fn refusal_reason(refusal: Refusal) -> Reason {
    match refusal {
        Refusal::Banned => Reason::Banned,
        Refusal::Throttled => Reason::Throttled,
        Refusal::Locked => Reason::Locked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_lists() {
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(network_allowed(None, ip));
        assert!(network_allowed(Some("10.0.0.0/8, 192.0.2.0/24"), ip));
        assert!(!network_allowed(Some("10.0.0.0/8"), ip));
        assert!(
            !network_allowed(Some(""), ip),
            "an empty list allows nothing"
        );
        assert!(network_allowed(Some("192.0.2.9"), ip));
        let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
        assert!(network_allowed(Some("192.0.2.0/24"), mapped));
        assert!(parse_network("2001:db8::/32").is_ok());
        assert!(parse_network("nonsense").is_err());
        assert_eq!(
            network_list(&["192.0.2.9", "2001:db8::1/32"]).unwrap(),
            "192.0.2.9/32,2001:db8::/32"
        );
        assert!(network_list(&["10.0.0.0/8", "x"]).is_err());
    }
}
