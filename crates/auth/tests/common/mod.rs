//! What the credential tests share.

use std::sync::Arc;

use auth::{Argon2Params, Authenticator};
use directory::Directory;

/// Every attempt in these tests comes from here.
pub const IP: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

/// Cheap parameters so the suites run fast in debug builds.
pub const SMALL: Argon2Params = Argon2Params {
    memory_kib: 1024,
    iterations: 1,
    parallelism: 1,
};

/// These tests are about credentials, not the defence (tests/defence.rs): nothing is
/// throttled, locked or banned however often they fail.
pub fn without_defence<D: Directory>(auth: Authenticator<D>) -> Authenticator<D> {
    let policy = auth::defence::LockoutPolicy {
        throttle_after: u32::MAX,
        lockout_threshold: u32::MAX,
        ban_accounts: 0,
        ..Default::default()
    };
    auth.with_defence(policy, Arc::new(auth::defence::SystemClock), b"test key")
}
