//! What the directory remembers for the sign-in defence: failures per (user, source),
//! failures per account from unfamiliar networks, familiar networks per user, and
//! banned sources. The `auth` crate's lockout policy decides what the numbers mean;
//! the directory only counts, atomically, so that several nodes sharing one database
//! never lose an update.
//!
//! Sources and networks arrive as strings already reduced by the caller (IPv4 /32 or
//! IPv6 /64 for sources, IPv4 /24 or IPv6 /64 for networks); times are milliseconds
//! since the Unix epoch from the server's one clock.

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// What a sign-in attempt needs to know before any credential is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuardState {
    /// Failures remembered for this (user, source).
    pub failures: u32,
    /// When the last of them happened.
    pub last_failure: Option<Millis>,
    /// Failures from unfamiliar networks remembered for the account.
    pub account_failures: u32,
    /// When the last of them happened.
    pub account_last_failure: Option<Millis>,
    /// The last successful sign-in of this user from this network, if it is familiar.
    pub network_last_success: Option<Millis>,
    /// The user's last successful sign-in from anywhere (for LOGIN-DELAY).
    pub last_success: Option<Millis>,
    /// The source is banned until then.
    pub source_banned_until: Option<Millis>,
}

/// The key of a [`GuardState`] lookup.
#[derive(Debug, Clone, Copy)]
pub struct GuardQuery<'a> {
    /// User name as the policy canonicalised it (or as given, when it could not be).
    pub user: &'a str,
    /// Source address key.
    pub source: &'a str,
    /// Network key of the source.
    pub network: &'a str,
    /// Now.
    pub now: Millis,
    /// Failures last seen before this are forgotten.
    pub forget_before: Millis,
}

/// One attempt to reserve: its [`GuardQuery`], and since when a network counts as
/// familiar (failures from others also count toward the account's lock).
#[derive(Debug, Clone, Copy)]
pub struct ReserveQuery<'a> {
    /// The state to read.
    pub query: GuardQuery<'a>,
    /// A network with a success at or after this is familiar to the account.
    pub familiar_since: Millis,
    /// Whether a reservation from an unfamiliar network also counts toward the
    /// account's lock (not for attempts that name no account).
    pub count_account: bool,
}

/// What [`crate::Directory::reserve_attempt`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// The state before this attempt (in-flight attempts counted as failures).
    pub state: GuardState,
    /// The gate admitted the attempt (and, if `counted`, it is now counted as a failure
    /// until settled).
    pub reserved: bool,
    /// The directory counts admitted attempts (a shared one: PostgreSQL). A directory
    /// only one process uses (SQLite) counts nothing here: that process decides its
    /// own attempts in turn, and their counts are written when they are settled.
    pub counted: bool,
    /// The attempt's network was unfamiliar: the reservation also counts toward the
    /// account's lock.
    pub unfamiliar: bool,
}

/// One failed sign-in to remember.
#[derive(Debug, Clone, Copy)]
pub struct FailureRecord<'a> {
    /// User name (canonical, or as given).
    pub user: &'a str,
    /// Source address key.
    pub source: &'a str,
    /// A keyed hash of the wrong secret (never the secret), when the mechanism sent
    /// one that can be compared across attempts.
    pub attempt: Option<&'a str>,
    /// The source's network is not familiar to the account: the failure also counts
    /// toward the account's lock for unfamiliar networks.
    pub unfamiliar: bool,
    /// Now.
    pub now: Millis,
    /// Counts whose last failure is older than this start again from zero.
    pub forget_before: Millis,
    /// How many recent wrong secrets to remember per (user, source).
    pub remember: usize,
    /// Distinct accounts failed from the source are counted since this time.
    pub spray_since: Millis,
    /// The attempt was reserved ([`crate::Directory::reserve_attempt`]), so it is
    /// counted already: only a repeat of a recent wrong secret changes the counts
    /// (taking the reservation back).
    pub reserved: bool,
}

/// The counts after a failure was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureCounts {
    /// The wrong secret was one of the recent ones: nothing was counted.
    pub repeated: bool,
    /// Failures for this (user, source).
    pub failures: u32,
    /// Unfamiliar-network failures for the account.
    pub account_failures: u32,
    /// Distinct user names failed from the source since `spray_since`.
    pub accounts_from_source: u32,
}

/// A row of `poplar lockout list`: failures per (user, source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFailures {
    /// User name.
    pub user: String,
    /// Source address key.
    pub source: String,
    /// Failures counted.
    pub failures: u32,
    /// Last failure.
    pub last_failure: Millis,
}

/// A row of `poplar lockout list`: an account's unfamiliar-network failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFailures {
    /// User name.
    pub user: String,
    /// Failures counted.
    pub failures: u32,
    /// Last failure.
    pub last_failure: Millis,
}

/// A banned source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ban {
    /// Source address key.
    pub source: String,
    /// When it was banned.
    pub banned_at: Millis,
    /// Until when.
    pub banned_until: Millis,
    /// Accounts it had failed on.
    pub accounts: u32,
}

/// Everything the defence remembers that is still in force or counting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockoutState {
    /// Failures per (user, source), newest first.
    pub sources: Vec<SourceFailures>,
    /// Failures per account from unfamiliar networks, newest first.
    pub accounts: Vec<AccountFailures>,
    /// Bans not yet expired, newest first.
    pub bans: Vec<Ban>,
}

/// What `poplar lockout clear` lifts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearTarget<'a> {
    /// Every failure count of this user and its account lock.
    User(&'a str),
    /// The ban of this source and its failure counts.
    Source(&'a str),
    /// Everything.
    All,
}

/// One sign-in attempt on an existing account, kept in its bounded history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInEntry {
    /// Canonical user name.
    pub user: String,
    /// When.
    pub at: Millis,
    /// Client address.
    pub address: String,
    /// `USER`, `PLAIN`, `SCRAM-SHA-256`, ...
    pub mechanism: String,
    /// `success` or `failure`.
    pub result: String,
}

/// Sign-ins kept per user; older ones are dropped as new ones arrive.
pub const HISTORY_PER_USER: i64 = 50;

/// Separates the keyed hashes of recent wrong secrets in `auth_failures.recent`.
pub(crate) const RECENT_SEPARATOR: char = ' ';

/// `recent` with `attempt` added, keeping the newest `keep`.
pub(crate) fn remember(recent: &str, attempt: &str, keep: usize) -> String {
    let mut entries: Vec<&str> = recent
        .split(RECENT_SEPARATOR)
        .filter(|e| !e.is_empty())
        .collect();
    entries.push(attempt);
    let skip = entries.len().saturating_sub(keep);
    entries[skip..].join(&RECENT_SEPARATOR.to_string())
}

#[cfg(test)]
mod tests {
    use super::remember;

    #[test]
    fn remember_keeps_the_newest() {
        assert_eq!(remember("", "a", 3), "a");
        assert_eq!(remember("a b c", "d", 3), "b c d");
        assert_eq!(remember("a", "b", 0), "");
    }
}
