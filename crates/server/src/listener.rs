//! Listening sockets, the connection limit and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::conn::{Connection, Shared};
use crate::reload::Reloader;
use crate::tls::TlsSetup;
use crate::{Dir, authenticator};

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Plain POP3 offering STLS.
    Pop3,
    /// Implicit TLS.
    Pop3s,
}

impl ListenerKind {
    /// `pop3` or `pop3s`.
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Pop3 => "pop3",
            ListenerKind::Pop3s => "pop3s",
        }
    }
}

/// A bound server, ready to run.
pub struct Server {
    listeners: Vec<(ListenerKind, TcpListener)>,
    shared: Arc<Shared>,
    fingerprint: String,
    reloader: Reloader,
}

impl Server {
    /// Loads TLS and binds every configured socket.
    pub async fn bind(config: Config, dir: Arc<Dir>) -> anyhow::Result<Self> {
        let TlsSetup {
            config: tls_config,
            fingerprint,
            store,
            ..
        } = crate::tls::load(&config)?;
        let mut listeners = Vec::new();
        let sockets = config
            .listen
            .pop3
            .iter()
            .map(|a| (ListenerKind::Pop3, *a))
            .chain(
                config
                    .listen
                    .pop3s
                    .iter()
                    .map(|a| (ListenerKind::Pop3s, *a)),
            );
        for (kind, addr) in sockets {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {} on {addr}", kind.name()))?;
            listeners.push((kind, listener));
        }
        let auth = authenticator(&config, dir)?;
        let shared = Arc::new(Shared {
            auth,
            acceptor: TlsAcceptor::from(tls_config),
            connections: Arc::new(Semaphore::new(config.limits.max_connections)),
            config,
        });
        Ok(Self {
            listeners,
            shared,
            fingerprint,
            reloader: Reloader::new(store),
        })
    }

    /// The bound addresses (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(k, l)| l.local_addr().ok().map(|a| (*k, a)))
            .collect()
    }

    /// SHA-256 fingerprint of the default certificate served at start.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A handle that reloads certificates (on SIGHUP, say) while the server runs.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Serves until `shutdown` is cancelled, then lets open sessions finish for the
    /// grace period. A session in UPDATE always completes its deletions.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        let check_secs = self.shared.config.tls.reload_check_secs;
        if check_secs > 0 {
            let every = Duration::from_secs(check_secs);
            tokio::spawn(self.reloader.watch_files(every, shutdown.clone()));
        }
        for (kind, listener) in self.listeners {
            let shared = self.shared.clone();
            let shutdown = shutdown.clone();
            let conns = tracker.clone();
            tracker.spawn(accept_loop(kind, listener, shared, shutdown, conns));
        }
        shutdown.cancelled().await;
        tracker.close();
        let grace = Duration::from_secs(self.shared.config.limits.shutdown_grace_secs);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("sessions still open after the shutdown grace period; closing them");
        }
        Ok(())
    }
}

async fn accept_loop(
    kind: ListenerKind,
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = shared.connections.clone().try_acquire_owned() else {
            tracker.spawn(refuse(stream, kind));
            continue;
        };
        let conn = Connection::new(shared.clone(), peer, kind, shutdown.clone());
        tracker.spawn(async move {
            conn.run(stream).await;
            drop(permit);
        });
    }
}

/// Over the connection limit: one line on the plain port, then close. On the TLS port
/// the connection is just closed: a handshake would cost what the limit saves.
async fn refuse(mut stream: TcpStream, kind: ListenerKind) {
    tracing::warn!("connection limit reached; refusing a connection");
    if kind == ListenerKind::Pop3s {
        return;
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        stream.write_all(b"-ERR [SYS/TEMP] too many connections, try again later\r\n"),
    )
    .await;
}
