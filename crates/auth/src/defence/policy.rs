//! The rules of the sign-in defence, as pure functions of counts and times.
//!
//! - Throttling per (user, source): the first `throttle_after` failures are free; after
//!   that each failure makes the next attempt wait `throttle_base × 2^(n-1)`, capped at
//!   `throttle_max`. Attempts during the wait are refused without checking anything.
//! - Smart lockout: failures from networks the account has never signed in from (or
//!   not within `familiar_for`) count toward a lock that applies to unfamiliar networks
//!   only, for `lockout_for` after the last such failure.
//! - Bans: a source that failed on `ban_accounts` distinct user names within
//!   `ban_window` is banned for `ban_for`.
//! - Counts not touched for `forget_after` start again from zero.

use std::net::IpAddr;
use std::time::Duration;

use directory::{GuardState, Millis};

/// Thresholds and durations of the sign-in defence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures per (user, source) answered without delay.
    pub throttle_after: u32,
    /// The first delay after them; each further failure doubles it.
    pub throttle_base: Duration,
    /// The longest delay.
    pub throttle_max: Duration,
    /// Recent wrong secrets remembered per (user, source); repeating one counts once.
    pub remember_wrong_secrets: usize,
    /// Failures from unfamiliar networks that lock the account for unfamiliar networks.
    pub lockout_threshold: u32,
    /// How long such a lock lasts after the last failure.
    pub lockout_for: Duration,
    /// A network stays familiar this long after the user's last success from it.
    pub familiar_for: Duration,
    /// Distinct accounts failed from one source that get it banned.
    pub ban_accounts: u32,
    /// The window those failures are counted in.
    pub ban_window: Duration,
    /// How long a ban lasts.
    pub ban_for: Duration,
    /// Counts untouched this long are forgotten.
    pub forget_after: Duration,
    /// Minimum interval between two successful sign-ins of one user (RFC 2449
    /// LOGIN-DELAY); zero for none.
    pub login_delay: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            throttle_after: 3,
            throttle_base: Duration::from_secs(2),
            throttle_max: Duration::from_secs(15 * 60),
            remember_wrong_secrets: 4,
            // NIST SP 800-63B-4 §3.2.2: no more than 100 consecutive failures.
            lockout_threshold: 50,
            lockout_for: Duration::from_secs(60 * 60),
            familiar_for: Duration::from_secs(180 * 24 * 60 * 60),
            ban_accounts: 10,
            ban_window: Duration::from_secs(60 * 60),
            ban_for: Duration::from_secs(60 * 60),
            forget_after: Duration::from_secs(24 * 60 * 60),
            login_delay: Duration::ZERO,
        }
    }
}

/// Why an attempt is refused before its credential is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The source is banned and the network is not familiar to this account.
    Banned,
    /// The account is locked for unfamiliar networks, and this is one.
    Locked,
    /// This (user, source) must wait before its next attempt.
    Throttled,
}

pub(crate) fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl LockoutPolicy {
    /// When the next attempt of a (user, source) with `failures` may be made.
    pub fn throttled_until(&self, failures: u32, last_failure: Option<Millis>) -> Option<Millis> {
        let last = last_failure?;
        let over = failures
            .checked_sub(self.throttle_after)
            .filter(|n| *n > 0)?;
        let factor = 1u32.checked_shl(over - 1).unwrap_or(u32::MAX);
        let delay = self
            .throttle_base
            .checked_mul(factor)
            .unwrap_or(self.throttle_max)
            .min(self.throttle_max);
        Some(last.saturating_add(ms(delay)))
    }

    /// Until when an account is locked for unfamiliar networks.
    pub fn locked_until(&self, failures: u32, last_failure: Option<Millis>) -> Option<Millis> {
        (failures >= self.lockout_threshold.max(1))
            .then(|| last_failure.map(|l| l.saturating_add(ms(self.lockout_for))))
            .flatten()
    }

    /// Whether a last success at `last_success` keeps a network familiar at `now`.
    pub fn still_familiar(&self, last_success: Option<Millis>, now: Millis) -> bool {
        last_success.is_some_and(|t| t >= now.saturating_sub(ms(self.familiar_for)))
    }

    /// Whether an attempt may go on to have its credential checked.
    pub fn gate(&self, state: &GuardState, now: Millis) -> Result<(), Refusal> {
        let familiar = self.still_familiar(state.network_last_success, now);
        if !familiar && state.source_banned_until.is_some_and(|t| t > now) {
            return Err(Refusal::Banned);
        }
        if !familiar
            && self
                .locked_until(state.account_failures, state.account_last_failure)
                .is_some_and(|t| t > now)
        {
            return Err(Refusal::Locked);
        }
        if self
            .throttled_until(state.failures, state.last_failure)
            .is_some_and(|t| t > now)
        {
            return Err(Refusal::Throttled);
        }
        Ok(())
    }

    /// [`LockoutPolicy::gate`] for a credential that cannot be guessed: the account's
    /// lock for unfamiliar networks does not apply (bans and throttling do).
    pub fn gate_past_lock(&self, state: &GuardState, now: Millis) -> Result<(), Refusal> {
        match self.gate(state, now) {
            Err(Refusal::Locked) => {
                let unlocked = GuardState {
                    account_failures: 0,
                    ..*state
                };
                self.gate(&unlocked, now)
            }
            other => other,
        }
    }

    /// Whether a success at `now` comes too soon after `last_success` (LOGIN-DELAY).
    pub fn too_soon(&self, last_success: Option<Millis>, now: Millis) -> bool {
        !self.login_delay.is_zero()
            && last_success.is_some_and(|t| now < t.saturating_add(ms(self.login_delay)))
    }
}

/// The key failures are counted under: the address itself for IPv4, its /64 for IPv6
/// (one customer's allocation), IPv4-mapped addresses as IPv4.
pub fn source_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{}/64", prefix_v6(v6, 64)),
    }
}

/// The network a success makes familiar: IPv4 /24, IPv6 /64.
pub fn network_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => format!("{}/64", prefix_v6(v6, 64)),
    }
}

fn prefix_v6(v6: std::net::Ipv6Addr, bits: u32) -> std::net::Ipv6Addr {
    let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
    std::net::Ipv6Addr::from(u128::from(v6) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Millis = 1000;

    #[test]
    fn throttle_grows_exponentially_and_is_capped() {
        let p = LockoutPolicy::default();
        assert_eq!(p.throttled_until(0, None), None);
        assert_eq!(p.throttled_until(3, Some(0)), None, "three free failures");
        assert_eq!(p.throttled_until(4, Some(0)), Some(2 * S));
        assert_eq!(p.throttled_until(5, Some(0)), Some(4 * S));
        assert_eq!(p.throttled_until(6, Some(0)), Some(8 * S));
        assert_eq!(p.throttled_until(12, Some(0)), Some(512 * S));
        assert_eq!(p.throttled_until(13, Some(0)), Some(900 * S));
        assert_eq!(p.throttled_until(u32::MAX, Some(0)), Some(900 * S));
    }

    #[test]
    fn gate_order_and_familiar_networks() {
        let p = LockoutPolicy::default();
        let now = 10_000 * S;
        let locked = GuardState {
            account_failures: 50,
            account_last_failure: Some(now - S),
            ..GuardState::default()
        };
        assert_eq!(p.gate(&locked, now), Err(Refusal::Locked));
        assert_eq!(p.gate(&locked, now + ms(p.lockout_for)), Ok(()));
        let familiar = GuardState {
            network_last_success: Some(now - 100 * S),
            ..locked
        };
        assert_eq!(
            p.gate(&familiar, now),
            Ok(()),
            "familiar networks are not locked out"
        );
        let banned = GuardState {
            source_banned_until: Some(now + S),
            ..GuardState::default()
        };
        assert_eq!(p.gate(&banned, now), Err(Refusal::Banned));
        assert_eq!(
            p.gate(
                &GuardState {
                    network_last_success: Some(now),
                    ..banned
                },
                now
            ),
            Ok(()),
            "a banned NAT still serves the accounts it is familiar to"
        );
        let throttled = GuardState {
            failures: 4,
            last_failure: Some(now - S),
            network_last_success: Some(now),
            ..GuardState::default()
        };
        assert_eq!(
            p.gate(&throttled, now),
            Err(Refusal::Throttled),
            "familiar or not"
        );
        assert_eq!(p.gate(&throttled, now + S), Ok(()));
        let stale = GuardState {
            network_last_success: Some(now - ms(p.familiar_for) - 1),
            ..locked
        };
        assert_eq!(
            p.gate(&stale, now),
            Err(Refusal::Locked),
            "familiarity expires"
        );
    }

    #[test]
    fn login_delay() {
        let mut p = LockoutPolicy::default();
        assert!(!p.too_soon(Some(0), 1));
        p.login_delay = Duration::from_secs(300);
        assert!(p.too_soon(Some(0), 299 * S));
        assert!(!p.too_soon(Some(0), 300 * S));
        assert!(!p.too_soon(None, 0));
    }

    #[test]
    fn keys() {
        let v4: IpAddr = "192.0.2.77".parse().unwrap();
        assert_eq!(source_key(v4), "192.0.2.77");
        assert_eq!(network_key(v4), "192.0.2.0/24");
        let mapped: IpAddr = "::ffff:192.0.2.77".parse().unwrap();
        assert_eq!(source_key(mapped), "192.0.2.77");
        let v6: IpAddr = "2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap();
        assert_eq!(source_key(v6), "2001:db8:1:2::/64");
        assert_eq!(network_key(v6), "2001:db8:1:2::/64");
    }
}
