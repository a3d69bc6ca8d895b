//! Run-time reload: what `SIGHUP` (and `systemctl reload`) changes without a restart
//! or a dropped session.
//!
//! Everything a connection reads from the configuration hangs off one [`Shared`]: the
//! configuration itself and what is built from it (the authenticator's policies, the
//! TLS acceptor, notices, the audit log). A reload builds a new one from the file read
//! again and swaps it in at once ([`Current`]); each new connection takes the one in
//! force when it arrives, and a session already open goes on with the one it began
//! with. State that must outlive a reload is shared between the two, never copied: the
//! connection count and its limits ([`crate::admission::Admission`], whose limits are
//! replaced in place), the attempts in flight, the live-session registry, the metrics
//! and the session ids.
//!
//! What can only be read at start ([`AT_START_ONLY`]: the data folder, the host name,
//! the listening sockets, the user to run as, the directory, all of `[auth]`, the
//! Maildir root, the metrics listener, the security page, OAuth issuers, the key ring
//! and the certificate watcher's interval) keeps its running value when the file
//! changes it, and the reload says that a restart is needed. A file that does not parse or
//! fails its checks (a client CA that cannot be read among them) changes nothing: the
//! previous configuration goes on and the reload says why. Certificates are read last,
//! as on any SIGHUP: a pair that cannot be loaded leaves the previous ones serving, and
//! the file watcher tries again.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::conn::Shared;
use crate::events::DefenceFanOut;
use crate::tls::CertStore;

/// The configuration in force and what is built from it; new connections load it.
pub(crate) type Current = Arc<ArcSwap<Shared>>;

/// Settings (dotted paths into the file) read only at start. A reload that changes one
/// keeps the running value and logs that it needs a restart.
const AT_START_ONLY: &[&str] = &[
    "data_dir",
    "hostname",
    "listen",
    "process",
    "directory",
    "auth",
    "store.maildir_root",
    "metrics",
    "web",
    "oauth",
    "tls.reload_check_secs",
    "keys",
];

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// The settings now in force that differ from before (dotted paths).
    pub applied: Vec<String>,
    /// Settings the file changes that keep their running value until a restart.
    pub need_restart: Vec<String>,
}

/// A handle to reload the running server; cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    current: Current,
    certs: Arc<CertStore>,
}

impl Reloader {
    pub(crate) fn new(current: Current, certs: Arc<CertStore>) -> Self {
        Self { current, certs }
    }

    /// Reopens the audit log's file (after logrotate), then puts `config` in force (the
    /// configuration file read again), re-reading every certificate and key. With
    /// `None` (no file: the embedded default, or one that could not be read) only the
    /// certificates are read again. On any failure the previous configuration and
    /// certificates go on. Logs its outcome (never key material).
    pub async fn reload(&self, config: Option<Config>) -> anyhow::Result<Reloaded> {
        let old = self.current.load_full();
        old.audit.reopen();
        crate::secrets::reload_ring(&old.config, old.auth.keys());
        let outcome = match config {
            None => self
                .reload_certificates()
                .await
                .map(|()| Reloaded::default()),
            Some(config) => self.apply(&old, config).await,
        };
        match &outcome {
            Ok(done) => {
                for path in &done.need_restart {
                    tracing::warn!(
                        setting = %path,
                        "the configuration changes a setting read only at start: it keeps its running value until a restart"
                    );
                }
                if !done.applied.is_empty() {
                    tracing::info!(changed = %done.applied.join(", "), "configuration reloaded");
                }
                self.warn_about_certificates();
            }
            Err(e) => tracing::error!(
                error = format!("{e:#}"),
                "configuration not reloaded; still running the previous one"
            ),
        }
        outcome
    }

    /// Re-reads the certificates the configuration in force names.
    async fn reload_certificates(&self) -> anyhow::Result<()> {
        let certs = self.certs.clone();
        tokio::task::spawn_blocking(move || certs.reload())
            .await
            .context("reloading the certificates")?
    }

    /// Builds what `config` describes on top of `old`'s lasting state and swaps it in.
    async fn apply(&self, old: &Arc<Shared>, config: Config) -> anyhow::Result<Reloaded> {
        let plan = plan(&old.config, config)?;
        let config = plan.config;
        // What `config check` would warn of, when new.
        let known = old.config.warnings();
        for w in config.warnings().into_iter().filter(|w| !known.contains(w)) {
            tracing::warn!("{w}");
        }
        // The client CA is part of the configuration: one that cannot be read refuses
        // the whole reload. The certificates follow once the rest is in force.
        let (certs, tls_config) = (self.certs.clone(), config.clone());
        let acceptor = tokio::task::spawn_blocking(move || {
            crate::tls::pop3_config(&tls_config, &certs).map(TlsAcceptor::from)
        })
        .await
        .context("loading the client CA")??;
        let audit = if same(&old.config.audit, &config.audit)? {
            old.audit.clone()
        } else {
            AuditLog::open(config.audit_target()).context("opening the audit log")?
        };
        let notices = Arc::new(old.notices.with_config(&config));
        let events = defence_events(&audit, &notices, &old.metrics);
        let mut auth = old
            .auth
            .clone()
            .with_lockout_policy(config.defence.policy(), Some(events))
            .with_mfa(crate::mfa_settings(&config));
        auth = if !config.sasl.scram_enabled() {
            auth.without_scram()
        } else if old.config.sasl.scram_enabled()
            && old.config.sasl.scram_iterations == config.sasl.scram_iterations
        {
            auth
        } else {
            let ring = crate::secrets::key_ring(&config, old.auth.directory()).await?;
            auth.with_scram(config.sasl.scram_iterations, ring.base().to_vec())
        };
        let capacity = crate::capacity::apply(&config.limits);
        if let Some(warning) = &capacity.warning {
            tracing::warn!("{warning}");
        }
        old.admission.set_limits(crate::admission::Limits {
            cap: capacity.max_connections,
            per_address: config.limits.max_connections_per_address,
            per_network: capacity.per_network,
        });
        old.metrics.connection_limit(capacity.max_connections);
        let retarget = config.clone();
        self.current.store(Arc::new(Shared {
            config,
            auth,
            acceptor,
            admission: old.admission.clone(),
            audit,
            notices,
            registry: old.registry.clone(),
            metrics: old.metrics.clone(),
            sessions: old.sessions.clone(),
            oauth: old.oauth.clone(),
            node: old.node.clone(),
        }));
        // Read as on any SIGHUP: a pair that cannot be loaded leaves the previous
        // certificates serving, is logged, and is tried again by the file watcher.
        let certs = self.certs.clone();
        let _ = tokio::task::spawn_blocking(move || certs.retarget(&retarget)).await;
        Ok(Reloaded {
            applied: plan.applied,
            need_restart: plan.need_restart,
        })
    }

    /// What `config check` would say of the certificates now served (expired, naming
    /// another host, without intermediates), as warnings in the log.
    fn warn_about_certificates(&self) {
        for w in crate::tls::check::warnings(&self.current.load().config) {
            tracing::warn!("after the reload: {w}");
        }
    }

    /// SHA-256 fingerprint of the default certificate new handshakes get.
    pub fn fingerprint(&self) -> String {
        self.certs.current().default_cert().fingerprint.clone()
    }

    /// Reloads the certificates whenever their files change, checking every `every`,
    /// until `shutdown`.
    pub(crate) async fn watch_files(self, every: Duration, shutdown: CancellationToken) {
        let certs = self.certs.clone();
        certs
            .watch(every, shutdown, move || self.warn_about_certificates())
            .await;
    }
}

/// Where bans and locks are told: the audit log (and notices) and the metrics.
pub(crate) fn defence_events(
    audit: &AuditLog,
    notices: &Arc<crate::notices::Notices>,
    metrics: &Arc<crate::Metrics>,
) -> Arc<dyn auth::defence::DefenceEvents> {
    Arc::new(DefenceFanOut(vec![
        Arc::new(crate::audit::ServerEvents {
            audit: audit.clone(),
            notices: notices.clone(),
        }),
        metrics.clone(),
    ]))
}

/// A reload's configuration: the new file with every start-only setting at its running
/// value, and what differs.
#[derive(Debug)]
struct Plan {
    config: Config,
    applied: Vec<String>,
    need_restart: Vec<String>,
}

/// Compares the running configuration with the file's, as TOML values: every setting
/// that differs is listed, as applied or (under [`AT_START_ONLY`]) as needing a restart;
/// the configuration put in force is the file's with the start-only settings kept.
fn plan(running: &Config, file: Config) -> anyhow::Result<Plan> {
    let old = toml::Value::try_from(running).context("reading the running configuration")?;
    let new = toml::Value::try_from(&file).context("reading the new configuration")?;
    let mut changed = Vec::new();
    changed_leaves("", Some(&old), Some(&new), &mut changed);
    let start_only = |path: &String| {
        AT_START_ONLY
            .iter()
            .any(|s| path == s || path.strip_prefix(s).is_some_and(|r| r.starts_with('.')))
    };
    let (need_restart, applied) = changed.into_iter().partition(start_only);
    let mut config = file;
    keep_start_only(&mut config, running);
    config.validate()?;
    Ok(Plan {
        config,
        applied,
        need_restart,
    })
}

/// The start-only settings ([`AT_START_ONLY`]) taken from the running configuration
/// itself, not from its TOML form: what serialising hides (an OAuth client secret is
/// written as "(redacted)") must keep its real running value.
fn keep_start_only(config: &mut Config, running: &Config) {
    config.data_dir.clone_from(&running.data_dir);
    config.hostname.clone_from(&running.hostname);
    config.listen = running.listen.clone();
    config.process = running.process.clone();
    config.directory = running.directory.clone();
    config.auth = running.auth.clone();
    config
        .store
        .maildir_root
        .clone_from(&running.store.maildir_root);
    config.metrics = running.metrics.clone();
    config.web = running.web.clone();
    config.oauth = running.oauth.clone();
    config.keys = running.keys.clone();
    config.tls.reload_check_secs = running.tls.reload_check_secs;
}

/// Whether two parts of a configuration are equal, as the file would say them.
fn same<T: serde::Serialize>(a: &T, b: &T) -> anyhow::Result<bool> {
    Ok(toml::Value::try_from(a)? == toml::Value::try_from(b)?)
}

/// Appends the dotted paths of every setting that differs between `a` and `b` (tables
/// compared key by key; anything else, arrays included, as a whole).
fn changed_leaves(
    path: &str,
    a: Option<&toml::Value>,
    b: Option<&toml::Value>,
    out: &mut Vec<String>,
) {
    if a == b {
        return;
    }
    if let (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) = (a, b) {
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let sub = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            changed_leaves(&sub, a.get(key), b.get(key), out);
        }
        return;
    }
    out.push(path.to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        let config: Config = toml::from_str(text).unwrap();
        config.validate().unwrap();
        config
    }

    #[test]
    fn live_settings_apply_and_start_only_ones_keep_their_running_value() {
        let running = parse("data_dir = \"/srv/a\"\n[listen]\npop3 = [\"127.0.0.1:1110\"]\n");
        let file = parse(
            "data_dir = \"/srv/b\"\n[listen]\npop3 = [\"127.0.0.1:2110\"]\n\
             [access]\ndeny = [\"10.0.0.0/8\"]\n[defence]\nthrottle_after = 2\n\
             [auth]\nfailure_delay_ms = 10\n",
        );
        let plan = plan(&running, file).unwrap();
        assert_eq!(plan.config.data_dir, std::path::PathBuf::from("/srv/a"));
        assert_eq!(
            plan.config.listen.pop3, running.listen.pop3,
            "listeners are bound at start"
        );
        assert_eq!(plan.config.defence.throttle_after, 2);
        assert!(plan.config.access.allows("192.0.2.1".parse().unwrap()));
        assert!(!plan.config.access.allows("10.1.2.3".parse().unwrap()));
        assert_eq!(
            plan.config.auth.failure_delay_ms,
            running.auth.failure_delay_ms
        );
        assert_eq!(plan.applied, ["access.deny", "defence.throttle_after"]);
        assert_eq!(
            plan.need_restart,
            ["auth.failure_delay_ms", "data_dir", "listen.pop3"]
        );
    }

    #[test]
    fn start_only_settings_keep_their_real_running_value() {
        // Every AT_START_ONLY path, changed in the file, is back to the running value
        // after the plan: keep_start_only and the list agree.
        let running = parse(
            "[oauth]\n[[oauth.issuers]]\nname = \"id\"\nissuer = \"https://id.example\"\naudience = [\"pop\"]\nintrospection_url = \"https://id.example/introspect\"\nclient_id = \"poplar\"\nclient_secret = \"s3cret\"\n",
        );
        let plan = plan(&running, running.clone()).unwrap();
        let shown = format!("{:?}", plan.config.oauth);
        assert!(!shown.contains("(redacted)"), "{shown}");
        assert_eq!(
            toml::to_string(&plan.config).unwrap(),
            toml::to_string(&running).unwrap()
        );
    }

    #[test]
    fn an_unchanged_file_changes_nothing() {
        let running = parse("[limits]\nmax_commands = 500\n");
        let plan = plan(&running, running.clone()).unwrap();
        assert!(plan.applied.is_empty() && plan.need_restart.is_empty());
    }

    #[test]
    fn a_setting_removed_from_a_start_only_section_is_kept_too() {
        let running = parse("[store]\nmaildir_root = \"/var/mail/vhosts\"\nexpire_days = 30\n");
        let file = parse("[store]\nexpire_days = 7\n");
        let plan = plan(&running, file).unwrap();
        assert_eq!(
            plan.config.store.maildir_root,
            Some(std::path::PathBuf::from("/var/mail/vhosts"))
        );
        assert_eq!(plan.config.store.expire_days, Some(7));
        assert_eq!(plan.applied, ["store.expire_days"]);
        assert_eq!(plan.need_restart, ["store.maildir_root"]);
    }
}
