//! The served certificates and their reload, on request (SIGHUP) or when the files
//! change, without dropping a session.
//!
//! A reload reads every configured pair again and swaps the whole set at once, or
//! nothing: if one pair fails (unreadable, malformed, key and certificate apart, as
//! during a renewal that has written one file of two) the previous set keeps serving
//! and the error is logged. Open sessions never notice; new handshakes get the new set.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use rustls::crypto::CryptoProvider;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use super::certs::{CertResolver, CertSet, CertSource, load_pair};
use crate::config::Config;

/// The certificate Poplar makes itself when none is configured.
#[derive(Debug, Clone)]
struct SelfSigned {
    hostname: String,
}

/// The certificate files, the set loaded from them and the way to load it again.
pub struct CertStore {
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    /// Which files, and how they were when last read. Held for a whole reload, so a
    /// SIGHUP, a configuration reload and a file change never load at once.
    files: Mutex<Files>,
    /// After a failed reload: when the watcher tries again, and how many failed in a
    /// row. A read can fail for a passing reason (a file replaced mid-read, no file
    /// descriptor free) with the files unchanged afterwards; without a retry the old
    /// certificate would serve until it expired.
    retry: Mutex<Option<Retry>>,
}

/// The files a configuration names.
struct Files {
    /// The default certificate first, then those chosen by SNI.
    sources: Vec<CertSource>,
    /// Set when the default is Poplar's own self-signed one, made again if deleted.
    self_signed: Option<SelfSigned>,
    /// The files as they were when last read.
    last_read: Stamps,
}

impl Files {
    fn of(config: &Config) -> Self {
        Files {
            sources: sources(config),
            self_signed: config.tls.cert.is_none().then(|| SelfSigned {
                hostname: config.hostname.clone(),
            }),
            last_read: Vec::new(),
        }
    }

    /// Reads every pair (making the self-signed default when missing), noting the
    /// files' stamps first: a file that changes while it is read is read again later.
    fn load(&mut self, provider: &CryptoProvider) -> anyhow::Result<CertSet> {
        ensure_self_signed(&self.sources, self.self_signed.as_ref())?;
        self.last_read = stamps(&self.sources);
        load_set(&self.sources, provider)
    }
}

/// A pending retry of a failed reload.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: std::time::Instant,
    failures: u32,
}

/// The first retry after a failed reload comes this soon; each further one waits twice
/// as long, up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

impl Retry {
    fn after(failures: u32) -> Self {
        let wait = RETRY_FIRST
            .saturating_mul(
                1u32.checked_shl(failures.saturating_sub(1))
                    .unwrap_or(u32::MAX),
            )
            .min(RETRY_MAX);
        Retry {
            at: std::time::Instant::now() + wait,
            failures,
        }
    }
}

/// One version of a file: the SHA-256 of its contents. Unlike a modification time it
/// cannot miss a same-size rewrite within one clock tick, and reading a few small files
/// every few seconds costs next to nothing.
type FileStamp = [u8; 32];

/// One stamp per file, `None` where the file is missing or unreadable.
type Stamps = Vec<Option<FileStamp>>;

/// The certificate files a configuration names: the default (configured, or the
/// self-signed one in `<data_dir>/tls/`) first, then `tls.certificates` in order.
pub fn sources(config: &Config) -> Vec<CertSource> {
    let default = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => CertSource {
            label: "tls.cert".into(),
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => {
            let dir = config.data_dir.join("tls");
            CertSource {
                label: "self-signed certificate".into(),
                cert: dir.join("cert.pem"),
                key: dir.join("key.pem"),
            }
        }
    };
    let extra = config
        .tls
        .certificates
        .iter()
        .enumerate()
        .map(|(i, c)| CertSource {
            label: format!("tls.certificates[{i}]"),
            cert: c.cert.clone(),
            key: c.key.clone(),
        });
    std::iter::once(default).chain(extra).collect()
}

impl CertStore {
    /// Loads every configured pair (making the self-signed default on first start).
    /// Any failure here is fatal: the server does not start without its certificates.
    pub fn open(config: &Config, provider: Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let mut files = Files::of(config);
        let set = files.load(&provider)?;
        Ok(Self {
            provider,
            resolver: Arc::new(CertResolver::new(set)),
            files: Mutex::new(files),
            retry: Mutex::new(None),
        })
    }

    /// Serves the certificates `config` names from now on (a configuration reload): the
    /// files it names are read as by [`CertStore::reload`]; if any cannot be loaded the
    /// previous set goes on serving and the watcher tries the new files again.
    /// Blocking: call it off the async executor.
    pub fn retarget(&self, config: &Config) -> anyhow::Result<()> {
        *self.lock_files() = Files::of(config);
        self.reload()
    }

    fn lock_files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The crypto provider the certificates were loaded with.
    pub fn provider(&self) -> Arc<CryptoProvider> {
        self.provider.clone()
    }

    /// The rustls resolver serving the current set.
    pub fn resolver(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    /// The set new handshakes use now.
    pub fn current(&self) -> Arc<CertSet> {
        self.resolver.current()
    }

    /// Reads every pair again and swaps the set in, or keeps the old one and says why.
    /// Blocking (small file reads): call it off the async executor.
    pub fn reload(&self) -> anyhow::Result<()> {
        let mut files = self.lock_files();
        let loaded = files.load(&self.provider);
        let mut retry = self.retry.lock().unwrap_or_else(PoisonError::into_inner);
        match loaded {
            Ok(set) => {
                *retry = None;
                self.swap_in(set);
                Ok(())
            }
            Err(e) => {
                let next = Retry::after(retry.map_or(1, |r| r.failures.saturating_add(1)));
                *retry = Some(next);
                tracing::error!(
                    error = format!("{e:#}"),
                    retry_in_secs = next
                        .at
                        .saturating_duration_since(std::time::Instant::now())
                        .as_secs(),
                    "certificate reload failed; still serving the previous certificates, and trying again"
                );
                Err(e)
            }
        }
    }

    /// Serves `set` to new handshakes from now on, and says so.
    fn swap_in(&self, set: CertSet) {
        tracing::info!(
            certificate_sha256 = %set.default_cert().fingerprint,
            sni_certificates = set.extra().len(),
            "certificates reloaded"
        );
        self.resolver.replace(set);
    }

    /// Whether a failed reload is due to be tried again.
    fn retry_due(&self) -> bool {
        self.retry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|r| std::time::Instant::now() >= r.at)
    }

    /// Whether a certificate or key file differs from when it was last read.
    fn files_changed(&self) -> Option<Stamps> {
        let files = self.lock_files();
        let now = stamps(&files.sources);
        (files.last_read != now).then_some(now)
    }

    /// Checks the files every `every` and reloads when they have changed and then stood
    /// still for a moment (a renewal writes the certificate and key one after the
    /// other), until `shutdown`.
    /// `after` runs after every reload that succeeded (the warnings about what is now
    /// served).
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
        after: impl Fn() + Send + Sync + 'static,
    ) {
        let after = Arc::new(after);
        let settle = every.min(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if self.retry_due() {
                tracing::info!("retrying the failed certificate reload");
                self.clone().reload_off_thread(after.clone()).await;
                continue;
            }
            let Some(seen) = self.files_changed() else {
                continue;
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(settle) => {}
            }
            if self.files_changed().as_ref() != Some(&seen) {
                continue; // still being written: look again next time
            }
            tracing::info!("certificate files changed; reloading");
            self.clone().reload_off_thread(after.clone()).await;
        }
    }

    /// [`CertStore::reload`] on a blocking thread (it reads files), then `after` if it
    /// succeeded. The outcome is logged by `reload`.
    async fn reload_off_thread(self: Arc<Self>, after: Arc<impl Fn() + Send + Sync + 'static>) {
        let _ = tokio::task::spawn_blocking(move || {
            if self.reload().is_ok() {
                after();
            }
        })
        .await;
    }
}

/// Makes Poplar's own certificate when it is the default and missing (first start, or
/// deleted to have a new one made).
fn ensure_self_signed(
    sources: &[CertSource],
    self_signed: Option<&SelfSigned>,
) -> anyhow::Result<()> {
    let (Some(own), Some(default)) = (self_signed, sources.first()) else {
        return Ok(());
    };
    if default.cert.exists() && default.key.exists() {
        return Ok(());
    }
    let dir = default
        .cert
        .parent()
        .context("self-signed certificate folder")?;
    super::self_signed(dir, &default.cert, &default.key, &own.hostname)
}

fn load_set(sources: &[CertSource], provider: &CryptoProvider) -> anyhow::Result<CertSet> {
    let (default, extra) = sources.split_first().context("no certificate configured")?;
    let default = load_pair(default, provider)?;
    let extra = extra
        .iter()
        .map(|s| load_pair(s, provider))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(CertSet::new(default, extra))
}

fn stamps(sources: &[CertSource]) -> Stamps {
    // Reading follows symlinks, so certbot's switch of `live/` links counts.
    let stamp = |path: &PathBuf| std::fs::read(path).ok().map(|b| Sha256::digest(&b).into());
    sources
        .iter()
        .flat_map(|s| [stamp(&s.cert), stamp(&s.key)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::certs::tests::write_pair;
    use super::*;
    use crate::config::SniCertificate;

    fn store_for(dir: &std::path::Path) -> (Config, CertStore) {
        let default = write_pair(dir, "default", &["localhost"]);
        let sni = write_pair(dir, "sni", &["mail.one.test"]);
        let mut config = Config {
            data_dir: dir.join("data"),
            ..Config::default()
        };
        config.tls.cert = Some(default.cert);
        config.tls.key = Some(default.key);
        config.tls.certificates = vec![SniCertificate {
            cert: sni.cert,
            key: sni.key,
        }];
        let store = CertStore::open(&config, Arc::new(super::super::provider())).unwrap();
        (config, store)
    }

    #[test]
    fn reload_swaps_in_renewed_files_and_keeps_the_old_set_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (_config, store) = store_for(dir.path());
        let before = store.current();
        assert!(store.files_changed().is_none());

        // Renewal of the SNI certificate.
        write_pair(dir.path(), "sni", &["mail.one.test"]);
        assert!(store.files_changed().is_some());
        store.reload().unwrap();
        assert!(store.files_changed().is_none());
        let renewed = store.current();
        assert_eq!(
            renewed.default_cert().fingerprint,
            before.default_cert().fingerprint
        );
        assert_ne!(
            renewed.extra()[0].fingerprint,
            before.extra()[0].fingerprint
        );

        // A certificate written without its key: refused, the renewed set stays.
        let other = write_pair(dir.path(), "other", &["mail.one.test"]);
        std::fs::copy(&other.cert, dir.path().join("sni.cert.pem")).unwrap();
        let err = format!("{:#}", store.reload().unwrap_err());
        assert!(err.contains("tls.certificates[0]"), "{err}");
        assert!(Arc::ptr_eq(&store.current(), &renewed));
        // The failed attempt is remembered as read (no reload on every look), and a
        // retry is scheduled, 5 s away, then 10 s after a second failure.
        assert!(store.files_changed().is_none());
        let first = store.retry.lock().unwrap().unwrap();
        assert_eq!(first.failures, 1);
        assert!(!store.retry_due());
        assert!(store.reload().is_err());
        let second = store.retry.lock().unwrap().unwrap();
        assert_eq!(second.failures, 2);
        assert!(second.at >= first.at + Duration::from_secs(4));
        std::fs::copy(&other.key, dir.path().join("sni.key.pem")).unwrap();
        assert!(store.files_changed().is_some());
        store.reload().unwrap();
        assert_eq!(store.current().extra()[0].fingerprint, {
            let p = super::super::provider();
            load_pair(&other, &p).unwrap().fingerprint
        });
        // A success ends the retries.
        assert!(store.retry.lock().unwrap().is_none());
    }

    #[test]
    fn retries_back_off_to_five_minutes() {
        let wait = |n| Retry::after(n).at - std::time::Instant::now();
        assert!(wait(1) <= RETRY_FIRST && wait(1) > RETRY_FIRST - Duration::from_secs(1));
        assert!(wait(3) > Duration::from_secs(19));
        assert!(wait(40) <= RETRY_MAX && wait(40) > RETRY_MAX - Duration::from_secs(1));
    }

    #[tokio::test]
    async fn the_watcher_retries_a_failed_reload_with_the_files_unchanged() {
        // A passing failure (the files read fine afterwards, unchanged): as if a read had
        // failed once. The watcher tries again when the retry is due.
        let dir = tempfile::tempdir().unwrap();
        let (_config, store) = store_for(dir.path());
        let store = Arc::new(store);
        *store.retry.lock().unwrap() = Some(Retry {
            at: std::time::Instant::now(),
            failures: 1,
        });
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(store.clone().watch(
            Duration::from_millis(20),
            shutdown.clone(),
            || {},
        ));
        for _ in 0..500 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if store.retry.lock().unwrap().is_none() {
                break;
            }
        }
        assert!(
            store.retry.lock().unwrap().is_none(),
            "the reload was not retried"
        );
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn a_missing_file_fails_the_reload_but_not_the_service() {
        let dir = tempfile::tempdir().unwrap();
        let (config, store) = store_for(dir.path());
        let before = store.current();
        std::fs::remove_file(config.tls.key.as_ref().unwrap()).unwrap();
        assert!(store.reload().is_err());
        assert!(Arc::ptr_eq(&store.current(), &before));
    }

    #[test]
    fn the_self_signed_default_is_made_again_if_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let store = CertStore::open(&config, Arc::new(super::super::provider())).unwrap();
        // Made at open, before the files were first looked at: not a change.
        assert!(store.files_changed().is_none());
        let first = store.current().default_cert().fingerprint.clone();
        std::fs::remove_file(dir.path().join("tls/cert.pem")).unwrap();
        store.reload().unwrap();
        assert_ne!(store.current().default_cert().fingerprint, first);
    }

    #[tokio::test]
    async fn watch_reloads_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let (_config, store) = store_for(dir.path());
        let store = Arc::new(store);
        let before = store.current().extra()[0].fingerprint.clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(store.clone().watch(
            Duration::from_millis(20),
            shutdown.clone(),
            || {},
        ));
        write_pair(dir.path(), "sni", &["mail.one.test"]);
        for _ in 0..500 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if store.current().extra()[0].fingerprint != before {
                break;
            }
        }
        assert_ne!(store.current().extra()[0].fingerprint, before);
        shutdown.cancel();
        task.await.unwrap();
    }
}
