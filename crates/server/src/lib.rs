//! Poplar's tokio server: listeners, TLS, limits and the connection driver that feeds a
//! connection's bytes to the sans-IO [`pop3_proto::Session`] and carries out what it asks.
//!
//! Shape after `mini-redis`: a listener per socket, admission control (the connection
//! limit, per-address caps, shedding of silent connections), one task per connection, a cancellation token for shutdown and a task tracker to wait on.
#![forbid(unsafe_code)]

mod admission;
pub mod audit;
pub mod capacity;
pub mod config;
mod conn;
pub mod control;
mod events;
mod http_conn;
mod listener;
pub mod metrics;
mod notices;
pub mod process;
pub mod proxy;
mod reload;
pub mod secrets;
mod sockets;
pub mod tls;
mod web;

pub use config::Config;
pub use listener::{ListenerKind, Server};
pub use metrics::Metrics;
pub use reload::Reloader;
pub use secrets::SERVER_KEY as SERVER_KEY_NAME;
pub use sockets::Sockets;

use std::sync::Arc;

use anyhow::Context as _;
use auth::{Authenticator, UsernamePolicy};
use directory::AnyDirectory;

/// The directory the server runs on: SQLite (the embedded default) or PostgreSQL (a
/// cluster's shared directory), chosen by `directory.url`.
pub type Dir = AnyDirectory;

/// Opens the directory the config names, bringing its schema up to date.
pub async fn open_directory(config: &Config) -> anyhow::Result<Dir> {
    let location = config.directory_location()?;
    Dir::connect(&location)
        .await
        .with_context(|| format!("opening directory {}", config.directory_display()))
}

/// Builds the username policy the config describes: one canonical form everywhere.
pub fn username_policy(config: &Config) -> UsernamePolicy {
    UsernamePolicy {
        lowercase: config.auth.lowercase_usernames,
        default_domain: (!config.auth.default_domain.is_empty())
            .then(|| config.auth.default_domain.clone()),
    }
}

/// Builds the authenticator the config describes, on the system clock (for the CLI).
pub async fn authenticator(config: &Config, dir: Arc<Dir>) -> anyhow::Result<Authenticator<Dir>> {
    authenticator_with(config, dir, Arc::new(auth::defence::SystemClock), None).await
}

/// Builds the authenticator the config describes; every defence rule reads `clock`,
/// and bans and locks are reported to `events`.
pub async fn authenticator_with(
    config: &Config,
    dir: Arc<Dir>,
    clock: Arc<dyn auth::defence::Clock>,
    events: Option<Arc<dyn auth::defence::DefenceEvents>>,
) -> anyhow::Result<Authenticator<Dir>> {
    let params = auth::Argon2Params {
        memory_kib: config.auth.argon2_memory_kib,
        iterations: config.auth.argon2_iterations,
        parallelism: 1,
    };
    let ring = secrets::key_ring(config, &dir).await?;
    let key = ring.active().secret();
    let auth = Authenticator::new(dir, username_policy(config), params, config.hash_slots())?;
    let auth = auth
        .with_failure_delay(std::time::Duration::from_millis(
            config.auth.failure_delay_ms,
        ))
        .with_hash_limits(auth::HashLimits {
            import: config.import_bounds(),
            memory_budget_kib: Some(config.hash_memory_budget_kib()),
        })
        .with_apop()
        .with_defence_events(config.defence.policy(), clock, key, events)
        .with_mfa(mfa_settings(config));
    // Read again where it came from when a value names a key not in force yet (a
    // rotation on another node, or by `poplar key` before the file watcher noticed).
    let reread_config = config.clone();
    let reread: auth::keys::Reread = Box::new(move || {
        secrets::find_ring(&reread_config)
            .ok()
            .flatten()
            .map(|(ring, _)| ring)
    });
    let auth = auth.with_keys(auth::keys::Keys::with_reread(ring.clone(), Some(reread)));
    if !config.sasl.scram_enabled() {
        return Ok(auth);
    }
    // The base never rotates: unknown names keep their SCRAM parameters across a
    // rotation, as real ones do.
    Ok(auth.with_scram(config.sasl.scram_iterations, ring.base().to_vec()))
}

/// The two-factor settings the configuration describes (`[mfa]`).
fn mfa_settings(config: &Config) -> auth::MfaSettings {
    auth::MfaSettings {
        default: auth::MfaPolicy::parse(&config.mfa.default).unwrap_or_default(),
        password_with_code: config.mfa.password_with_code,
        issuer: if config.mfa.issuer.is_empty() {
            format!("Poplar {}", config.hostname)
        } else {
            config.mfa.issuer.clone()
        },
    }
}

/// The password policy the configuration describes (`[passwords]`), with the breach
/// filter when checking is on and `with_filter` (a missing file means no filter).
pub fn password_policy(
    config: &Config,
    with_filter: bool,
) -> Result<policy::PasswordPolicy, policy::FilterError> {
    let p = &config.passwords;
    let breached = if p.check_breached && with_filter {
        policy::BreachedFilter::open(&config.breached_filter_path())?
    } else {
        None
    };
    Ok(policy::PasswordPolicy {
        min_length: p.min_length,
        min_length_with_mfa: p.min_length_with_mfa,
        breached,
    })
}

/// Every reason the configured policy refuses `password` for `canonical_user` (the
/// CLI's `user add|passwd` and the security page's password change both ask here).
/// `mfa_required`: the account must sign in with a second factor.
pub fn assess_password(
    config: &Config,
    canonical_user: &str,
    password: &str,
    mfa_required: bool,
    with_filter: bool,
) -> Result<Vec<policy::Problem>, policy::FilterError> {
    let account = policy::Account {
        user: canonical_user,
        hostname: &config.hostname,
        domain: &config.auth.default_domain,
        mfa_required,
    };
    password_policy(config, with_filter)?.check(password, &account)
}
