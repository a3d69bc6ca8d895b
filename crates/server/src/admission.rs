//! Admission under load: how many connections a listener serves at once, from one
//! address and, under pressure, from one network; and which connections make room
//! when the limit is reached.
//!
//! A connection is *waiting* while it has not signed in and waits for its client to
//! say something (the TLS handshake included). Waiting connections are kept in the
//! order in which they fell silent. At the limit a newcomer closes ("sheds") the one
//! silent longest instead of being refused; a newcomer is refused only when no
//! connection is waiting, that is when every one has signed in or is being served.
//!
//! From [`BUSY_PERCENT`] of the limit on, the server is *busy*: a sweep closes waiting
//! connections silent for longer than the short pre-sign-in timeout, and each network
//! (IPv4 /24, IPv6 /48) may hold only its share of connections, besides the
//! per-address cap (IPv4 address, IPv6 /64) that always applies. Below that, networks
//! are never counted against: an office or a mobile operator's NAT pool is not held to
//! a share while there is room for everyone.
//!
//! A newcomer sheds no one before it is known to be welcome: at the limit it is
//! admitted *provisionally* (a few beyond the limit, [`Admission::admit`]), and only
//! once its listener has checked it (not banned; behind a proxy, its real address has
//! room) does [`Ticket::confirm`] shed a waiting connection for it. A banned address
//! or an over-limit client behind a proxy therefore evicts no one.
//!
//! Only complete commands count as speaking (the listeners call [`Ticket::working`]
//! when one arrives): a client trickling a byte now and then is as silent as one that
//! sends nothing.
//!
//! Shed and refused connections are reported by their listeners with one word,
//! `busy`, in the audit log and the metrics.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The share of the connection limit from which the server is busy.
pub(crate) const BUSY_PERCENT: usize = 90;

/// The limits one listener (or group of listeners) applies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Connections at once.
    pub cap: usize,
    /// Connections at once from one address (IPv6: one /64).
    pub per_address: usize,
    /// Connections at once from one network (IPv4 /24, IPv6 /48), while busy.
    pub per_network: usize,
}

/// The connections a listener serves, and the order in which they make room.
pub(crate) struct Admission {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The limits in force (a configuration reload replaces them), and the count of
    /// open connections from which the server counts as busy.
    limits: Limits,
    busy_at: usize,
    /// Connections counted against the limit (shed ones no longer are).
    open: usize,
    /// Connections admitted beyond the limit until their listener confirms them.
    provisional: usize,
    next_id: u64,
    addresses: HashMap<u128, usize>,
    networks: HashMap<u128, usize>,
    /// Waiting connections, by when they fell silent (ties by id).
    waiting: BTreeSet<(Instant, u64)>,
    entries: HashMap<u64, Entry>,
}

struct Entry {
    /// When it began waiting, while it waits.
    since: Option<Instant>,
    /// Counted in `open` (false while provisional, and once shed).
    counted: bool,
    /// Admitted beyond the limit, not yet confirmed.
    provisional: bool,
    shed: CancellationToken,
}

impl State {
    /// How many connections may wait beyond the limit for their listener's checks
    /// (each only for as long as a ban check takes; beyond that, a burst is refused).
    fn spare(&self) -> usize {
        (self.limits.cap / 4).clamp(16, 4096)
    }

    /// Whether the address (always) and its network (while busy) have room.
    fn room_for(&self, address: u128, network: u128) -> bool {
        let count = |map: &HashMap<u128, usize>, key| map.get(&key).copied().unwrap_or(0);
        if count(&self.addresses, address) >= self.limits.per_address {
            return false;
        }
        !(self.open >= self.busy_at && count(&self.networks, network) >= self.limits.per_network)
    }

    /// Sheds the connection silent longest: it is told through its token and stops
    /// counting against the limit at once (its socket closes a moment later).
    fn shed_oldest(&mut self) -> bool {
        let Some((_, id)) = self.waiting.pop_first() else {
            return false;
        };
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.since = None;
            entry.counted = false;
            entry.shed.cancel();
            self.open -= 1;
        }
        true
    }

    /// Moves a connection into (`now`) or out of (None) the waiting order; false if it
    /// has been shed (then nothing changes).
    fn set_waiting(&mut self, id: u64, now: Option<Instant>) -> bool {
        let Some(entry) = self.entries.get_mut(&id) else {
            return false;
        };
        if entry.shed.is_cancelled() {
            return false;
        }
        if !entry.counted {
            // Provisional: not in the order until confirmed.
            return true;
        }
        if let Some(since) = entry.since.take() {
            self.waiting.remove(&(since, id));
        }
        if let Some(now) = now {
            entry.since = Some(now);
            self.waiting.insert((now, id));
        }
        true
    }
}

/// The address key: an IPv4 address (in its IPv4-mapped form), or an IPv6 /64 with
/// its last bit set (so the two kinds never meet).
fn address_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 64) - 1)) | 1,
    }
}

/// The network key: an IPv4 /24 (IPv4-mapped), or an IPv6 /48 with its last bit set.
fn network_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            u128::from(std::net::Ipv4Addr::from(u32::from(v4) & 0xffff_ff00).to_ipv6_mapped())
        }
        IpAddr::V6(v6) => (u128::from(v6) & !((1u128 << 80) - 1)) | 1,
    }
}

fn count_down(map: &mut HashMap<u128, usize>, key: u128) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl Admission {
    pub(crate) fn new(limits: Limits) -> Arc<Self> {
        let admission = Arc::new(Admission {
            state: Mutex::new(State::default()),
        });
        admission.set_limits(limits);
        admission
    }

    /// Puts new limits in force (a configuration reload). Connections already open stay
    /// open; below a lowered limit, new ones are refused or shed as usual until the
    /// count falls under it.
    pub(crate) fn set_limits(&self, limits: Limits) {
        let limits = Limits {
            cap: limits.cap.max(1),
            ..limits
        };
        let mut s = self.lock();
        s.busy_at = (limits.cap * BUSY_PERCENT).div_ceil(100).max(1);
        s.limits = limits;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections counted against the limit now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open
    }

    /// Admits a connection from `ip` (None: a trusted proxy's connection, whose client
    /// is named later with [`Ticket::bind_address`]). Below the limit it counts at once;
    /// at the limit it is admitted provisionally (a few at a time) and makes room only
    /// when [`Ticket::confirm`]ed. None: refused (busy).
    pub(crate) fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Option<Ticket> {
        let now = Instant::now();
        let mut s = self.lock();
        let keys = ip.map(|ip| (address_key(ip), network_key(ip)));
        if let Some((address, network)) = keys
            && !s.room_for(address, network)
        {
            return None;
        }
        let provisional = s.open >= s.limits.cap;
        if provisional {
            if s.provisional >= s.spare() {
                return None;
            }
            s.provisional += 1;
        } else {
            s.open += 1;
        }
        let id = s.next_id;
        s.next_id += 1;
        let shed = CancellationToken::new();
        s.entries.insert(
            id,
            Entry {
                since: (!provisional).then_some(now),
                counted: !provisional,
                provisional,
                shed: shed.clone(),
            },
        );
        if !provisional {
            s.waiting.insert((now, id));
        }
        if let Some((address, network)) = keys {
            *s.addresses.entry(address).or_insert(0) += 1;
            *s.networks.entry(network).or_insert(0) += 1;
        }
        Some(Ticket {
            admission: self.clone(),
            id,
            keys,
            shed,
        })
    }

    /// While busy, sheds every waiting connection silent for `timeout` or longer (the
    /// shorter idle timeout before sign-in). Returns how many were shed.
    pub(crate) fn sweep(&self, timeout: Duration) -> usize {
        let now = Instant::now();
        let mut s = self.lock();
        if s.open + s.provisional < s.busy_at {
            return 0;
        }
        let mut shed = 0;
        while s
            .waiting
            .first()
            .is_some_and(|(since, _)| now.saturating_duration_since(*since) >= timeout)
        {
            s.shed_oldest();
            shed += 1;
        }
        shed
    }
}

/// One admitted connection's place; given back when dropped.
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    keys: Option<(u128, u128)>,
    shed: CancellationToken,
}

impl Ticket {
    /// Cancelled when the connection is shed to make room.
    pub(crate) fn shed_token(&self) -> &CancellationToken {
        &self.shed
    }

    /// Whether the connection was shed.
    #[cfg(test)]
    pub(crate) fn was_shed(&self) -> bool {
        self.shed.is_cancelled()
    }

    /// The connection (not signed in) waits for its client from now on.
    pub(crate) fn waiting(&self) {
        self.admission
            .lock()
            .set_waiting(self.id, Some(Instant::now()));
    }

    /// The connection is being served (a command or request in progress), or has
    /// signed in: it is not shed.
    /// False if it was shed already (then it must close without serving what arrived:
    /// its place is someone else's).
    #[must_use]
    pub(crate) fn working(&self) -> bool {
        self.admission.lock().set_waiting(self.id, None)
    }

    /// Confirms a connection its listener has checked: one admitted provisionally
    /// (at the limit) now takes its place, shedding the connection silent longest.
    /// False if there is none to shed, or it was shed meanwhile (refused: busy).
    #[must_use]
    pub(crate) fn confirm(&self) -> bool {
        let mut s = self.admission.lock();
        let Some(entry) = s.entries.get(&self.id) else {
            return false;
        };
        if !entry.provisional {
            return !entry.shed.is_cancelled();
        }
        if s.open >= s.limits.cap && !s.shed_oldest() {
            return false;
        }
        let now = Instant::now();
        s.open += 1;
        s.provisional -= 1;
        if let Some(entry) = s.entries.get_mut(&self.id) {
            entry.provisional = false;
            entry.counted = true;
            entry.since = Some(now);
        }
        s.waiting.insert((now, self.id));
        true
    }

    /// Names the client of a connection admitted without an address (behind a trusted
    /// proxy): false if its address or network has no room.
    pub(crate) fn bind_address(&mut self, ip: IpAddr) -> bool {
        if self.keys.is_some() {
            return true;
        }
        let (address, network) = (address_key(ip), network_key(ip));
        let mut s = self.admission.lock();
        if !s.room_for(address, network) {
            return false;
        }
        *s.addresses.entry(address).or_insert(0) += 1;
        *s.networks.entry(network).or_insert(0) += 1;
        self.keys = Some((address, network));
        true
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut s = self.admission.lock();
        if let Some(entry) = s.entries.remove(&self.id) {
            if let Some(since) = entry.since {
                s.waiting.remove(&(since, self.id));
            }
            if entry.counted {
                s.open -= 1;
            }
            if entry.provisional {
                s.provisional -= 1;
            }
        }
        if let Some((address, network)) = self.keys {
            count_down(&mut s.addresses, address);
            count_down(&mut s.networks, network);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn limits(cap: usize, per_address: usize, per_network: usize) -> Limits {
        Limits {
            cap,
            per_address,
            per_network,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_limit_the_connection_silent_longest_makes_room() {
        let a = Admission::new(limits(3, 10, 10));
        let first = a.admit(ip("192.0.2.1")).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = a.admit(ip("198.51.100.1")).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let third = a.admit(ip("203.0.113.1")).unwrap();
        // The first speaks again: the second is now silent longest.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(first.working());
        first.waiting();
        // At the limit a newcomer is admitted provisionally and sheds no one until its
        // listener confirms it; dropped unconfirmed (a banned address), it took nothing.
        let banned = a.admit(ip("203.0.113.9")).unwrap();
        drop(banned);
        assert!(!second.was_shed());
        let fourth = a.admit(ip("203.0.113.2")).unwrap();
        assert!(fourth.confirm());
        assert!(second.was_shed() && !first.was_shed() && !third.was_shed());
        // A shed connection learns it when it next wants to work.
        assert!(!second.working());
        assert_eq!(a.open(), 3);
        // Shed tickets stop counting at once; dropping them later changes nothing.
        drop(second);
        assert_eq!(a.open(), 3);
        // Signed in (working) connections are never shed: with every one of them
        // working, the newcomer is refused.
        for t in [&first, &third, &fourth] {
            assert!(t.working());
        }
        let refused = a.admit(ip("203.0.113.3")).unwrap();
        assert!(!refused.confirm());
        drop(refused);
        drop(third);
        assert!(a.admit(ip("203.0.113.3")).is_some());
        assert_eq!(a.open(), 2, "the dropped admission gave its place back");
    }

    #[tokio::test(start_paused = true)]
    async fn the_address_cap_always_applies_the_network_cap_only_while_busy() {
        let a = Admission::new(limits(100, 2, 3));
        let x1 = a.admit(ip("192.0.2.1")).unwrap();
        let _x2 = a.admit(ip("192.0.2.1")).unwrap();
        assert!(a.admit(ip("192.0.2.1")).is_none(), "per address");
        // Not busy: a network may hold more than its share.
        let mut same_net: Vec<Ticket> = (2..8)
            .map(|i| a.admit(ip(&format!("192.0.2.{i}"))).unwrap())
            .collect();
        assert_eq!(a.open(), 8);
        // Busy (90 of 100): the /24 already holds 8 > 3 and gets no more.
        let others: Vec<Ticket> = (0..82)
            .map(|i| a.admit(ip(&format!("10.{i}.0.1"))).unwrap())
            .collect();
        assert_eq!(a.open(), 90);
        assert!(
            a.admit(ip("192.0.2.200")).is_none(),
            "per network while busy"
        );
        assert!(
            a.admit(ip("198.51.100.7")).is_some(),
            "other networks still come in"
        );
        drop(others);
        same_net.clear();
        drop(x1);
        assert!(a.admit(ip("192.0.2.1")).is_some());
        // IPv6: the address is the /64, the network the /48.
        let b = Admission::new(limits(10, 1, 1));
        let _v = b.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(b.admit(ip("2001:db8:1:2::99")).is_none(), "same /64");
        assert!(
            b.admit(ip("2001:db8:1:3::1")).is_some(),
            "same /48, not busy"
        );
        // IPv4-mapped IPv6 counts as IPv4.
        let _m = b.admit(ip("192.0.2.9")).unwrap();
        assert!(b.admit(ip("::ffff:192.0.2.9")).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_sweep_closes_silent_connections_only_while_busy() {
        let a = Admission::new(limits(10, 10, 10));
        let quiet: Vec<Ticket> = (0..5)
            .map(|i| a.admit(ip(&format!("10.0.{i}.1"))).unwrap())
            .collect();
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(a.sweep(Duration::from_secs(10)), 0, "not busy");
        let talking: Vec<Ticket> = (0..4)
            .map(|i| a.admit(ip(&format!("10.1.{i}.1"))).unwrap())
            .collect();
        assert_eq!(a.open(), 9, "busy from 9 of 10");
        // Busy: every connection silent for the short timeout goes, not just enough to
        // be below the mark.
        assert_eq!(a.sweep(Duration::from_secs(10)), 5);
        assert!(quiet.iter().all(Ticket::was_shed) && !talking.iter().any(Ticket::was_shed));
        assert_eq!(a.open(), 4);
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(a.sweep(Duration::from_secs(10)), 0, "no longer busy");
    }

    #[tokio::test(start_paused = true)]
    async fn provisional_admissions_are_bounded() {
        let a = Admission::new(limits(64, 100, 100));
        let held: Vec<Ticket> = (0..64)
            .map(|i| a.admit(ip(&format!("10.0.{i}.1"))).unwrap())
            .collect();
        for t in &held {
            assert!(t.working());
        }
        // A quarter of the limit (at least 16) may wait beyond it for their checks; the
        // next is refused at once.
        let pending: Vec<Ticket> = (0..16)
            .map(|i| a.admit(ip(&format!("10.1.{i}.1"))).unwrap())
            .collect();
        assert!(a.admit(ip("10.2.0.1")).is_none());
        drop(pending);
        assert!(a.admit(ip("10.2.0.1")).is_some());
        assert_eq!(a.open(), 64);
    }

    #[tokio::test(start_paused = true)]
    async fn a_proxied_connection_is_counted_under_its_client_once_named() {
        let a = Admission::new(limits(10, 1, 10));
        let mut t = a.admit(None).unwrap();
        assert!(t.bind_address("192.0.2.1".parse().unwrap()));
        let mut u = a.admit(None).unwrap();
        assert!(!u.bind_address("192.0.2.1".parse().unwrap()));
        drop(t);
        assert!(u.bind_address("192.0.2.1".parse().unwrap()));
        assert_eq!(a.open(), 1);
    }
}
