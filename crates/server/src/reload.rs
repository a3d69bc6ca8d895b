//! Run-time reload: what `SIGHUP` re-reads without a restart or a dropped session.
//!
//! Today that is the certificates and keys (every `tls.cert`/`tls.key` and
//! `tls.certificates` pair) and the audit log's file (reopened after logrotate); the
//! configuration file itself is read only at start.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
use crate::tls::CertStore;

/// A handle to reload the running server; cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    certs: Arc<CertStore>,
    audit: AuditLog,
    /// For the warnings about the certificates just loaded.
    config: Arc<crate::Config>,
}

impl Reloader {
    pub(crate) fn new(certs: Arc<CertStore>, audit: AuditLog, config: Arc<crate::Config>) -> Self {
        Self {
            certs,
            audit,
            config,
        }
    }

    /// Reopens the audit log's file, then re-reads every certificate and key pair and
    /// swaps them in at once for new handshakes; on any failure keeps serving the
    /// previous ones. The outcome is logged (never key material). Blocking: small file
    /// reads.
    pub fn reload(&self) -> anyhow::Result<()> {
        self.audit.reopen();
        self.certs.reload()?;
        self.warn_about_certificates();
        Ok(())
    }

    /// What `config check` would say of the certificates now served (expired, naming
    /// another host, without intermediates), as warnings in the log.
    fn warn_about_certificates(&self) {
        for w in crate::tls::check::warnings(&self.config) {
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
