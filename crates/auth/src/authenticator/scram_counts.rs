//! The iteration count shown to a SCRAM client for a name that has no real keys.
//!
//! Real accounts show the count their keys were derived with, which stays what it was
//! when `sasl.scram_iterations` changes until the user next signs in with a password
//! (the keys are then derived again). Fakes shown at the configured count alone would
//! tell every account still on an older count from an unknown name. So a fake's count
//! is drawn, for each name, from the counts the accounts hold, in their proportions:
//! a keyed hash of the canonical name places it in `[0, 1)`, and the accounts' counts
//! are laid out over that interval with the configured count last. As accounts move to
//! the configured count its share grows from the top, so a fake moves to it once and
//! never back, as a real account does.
//!
//! The proportions are read from the directory on the first lookup and again at most
//! every [`REFRESH`] in the background; a name's fake depends only on the name, the
//! server secret and those proportions, never on who asks or how often.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit as _, Mac as _};
use sasl::ScramKeys;
use sha2::Sha256;

use directory::UserRecord;

/// How often the proportions are read again.
pub(super) const REFRESH: Duration = Duration::from_secs(600);

/// How many accounts hold keys at each iteration count.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// (iterations, accounts), the configured count last; empty before the first read.
    shares: Vec<(u32, u64)>,
    read_at: Option<Instant>,
    reading: bool,
}

/// The proportions, shared by every clone of the authenticator.
#[derive(Debug, Default)]
pub(super) struct FakeCounts(Mutex<Counts>, tokio::sync::Mutex<()>);

impl FakeCounts {
    /// Whether the proportions were never read, or are older than [`REFRESH`] and no
    /// read is under way (the caller then reads them and calls [`FakeCounts::set`]).
    /// Marks a read under way.
    pub(super) fn claim_refresh(&self) -> Refresh {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match c.read_at {
            None => Refresh::First,
            Some(_) if c.reading => Refresh::No,
            Some(at) if at.elapsed() < REFRESH => Refresh::No,
            Some(_) => {
                c.reading = true;
                Refresh::Background
            }
        }
    }

    /// Records the proportions read from `users`, for `configured` iterations.
    pub(super) fn set(&self, users: &[UserRecord], configured: u32) {
        let shares = shares(users, configured);
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        c.shares = shares;
        c.read_at = Some(Instant::now());
        c.reading = false;
    }

    /// Held for the first read: lookups that arrive meanwhile wait for it instead of
    /// each listing every account (a burst of SCRAM sign-ins at start-up).
    pub(super) async fn first_read(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.1.lock().await
    }

    /// A failed read: try again at the next lookup after [`REFRESH`].
    pub(super) fn failed(&self) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        c.read_at = Some(Instant::now());
        c.reading = false;
    }

    /// The count a fake for `name` shows.
    pub(super) fn for_name(&self, secret: &[u8], name: &str, configured: u32) -> u32 {
        let c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        pick(&c.shares, position(secret, name), configured)
    }
}

/// What [`FakeCounts::claim_refresh`] asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refresh {
    /// Fresh enough, or being read.
    No,
    /// Never read: read now, before answering.
    First,
    /// Stale: read in the background.
    Background,
}

/// The accounts per count, the configured count last (an empty directory shows it:
/// see [`pick`]).
fn shares(users: &[UserRecord], configured: u32) -> Vec<(u32, u64)> {
    let mut by_count = std::collections::BTreeMap::<u32, u64>::new();
    let mut at_configured = 0u64;
    for user in users {
        let Some(keys) = user.scram_sha256.as_deref().and_then(ScramKeys::parse) else {
            continue;
        };
        if keys.iterations == configured {
            at_configured += 1;
        } else {
            *by_count.entry(keys.iterations).or_default() += 1;
        }
    }
    let mut shares: Vec<(u32, u64)> = by_count.into_iter().collect();
    shares.push((configured, at_configured));
    shares
}

/// Where `name` falls in `[0, 2^64)`: a keyed hash of the canonical name.
fn position(secret: &[u8], name: &str) -> u64 {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(b"scram-count\0");
    mac.update(name.as_bytes());
    let out = mac.finalize().into_bytes();
    u64::from_be_bytes(out[..8].try_into().expect("eight bytes"))
}

/// The count whose stretch of `[0, 2^64)` holds `at`. The configured count (last) takes
/// the top of the interval, so a growing share takes names from below, once each.
fn pick(shares: &[(u32, u64)], at: u64, configured: u32) -> u32 {
    let total: u128 = shares.iter().map(|&(_, n)| u128::from(n)).sum();
    if total == 0 {
        return configured;
    }
    // at / 2^64 * total, in integers.
    let point = (u128::from(at) * total) >> 64;
    let mut below = 0u128;
    for &(count, n) in shares {
        below += u128::from(n);
        if point < below {
            return count;
        }
    }
    configured
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(iterations: Option<u32>) -> UserRecord {
        UserRecord {
            name: "x".into(),
            password_hash: String::new(),
            enabled: true,
            maildir: String::new(),
            scram_sha256: iterations.map(|i| ScramKeys::fake(b"k", "x", i).to_stored()),
            apop_secret: None,
            allowed_networks: None,
        }
    }

    #[test]
    fn an_empty_directory_shows_the_configured_count() {
        let f = FakeCounts::default();
        f.set(&[], 8192);
        for name in ["a", "b", "c"] {
            assert_eq!(f.for_name(b"s", name, 8192), 8192);
        }
    }

    #[test]
    fn fakes_follow_the_accounts_proportions() {
        let f = FakeCounts::default();
        // Three quarters still at 4096, one at the new 8192; keyless accounts ignored.
        let mut users: Vec<_> = (0..300).map(|_| user(Some(4096))).collect();
        users.extend((0..100).map(|_| user(Some(8192))));
        users.extend((0..50).map(|_| user(None)));
        f.set(&users, 8192);
        let old = (0..4000)
            .filter(|i| f.for_name(b"s", &format!("n{i}"), 8192) == 4096)
            .count();
        assert!((2800..3200).contains(&old), "{old} of 4000 at 4096");
    }

    #[test]
    fn a_fake_moves_to_the_configured_count_once() {
        let at = |done: u64| {
            let shares = vec![(4096, 1000 - done), (8192, done.max(1))];
            (0..500u64)
                .map(|i| pick(&shares, position(b"s", &format!("n{i}")), 8192))
                .collect::<Vec<_>>()
        };
        let mut before = at(0);
        for done in (100..=1000).step_by(100) {
            let now = at(done);
            for (b, n) in before.iter().zip(&now) {
                // Never back from 8192 to 4096.
                assert!(!(*b == 8192 && *n == 4096));
            }
            before = now;
        }
        assert!(before.iter().all(|&c| c == 8192));
    }
}
