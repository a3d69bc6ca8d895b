//! Listening sockets, the connection limit and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Ticket};
use crate::audit::{AuditLog, Record};
use crate::config::Config;
use crate::conn::{Connection, Shared};
use crate::metrics::{Metrics, Refused};
use crate::reload::{Current, Reloader};
use crate::sockets::Sockets;
use crate::tls::TlsSetup;
use crate::{Dir, authenticator_with};

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
    /// The metrics and health HTTP listener.
    metrics_listener: Option<TcpListener>,
    /// The security page's HTTPS listener, and its TLS configuration.
    web_listener: Option<TcpListener>,
    web_tls: Arc<rustls::ServerConfig>,
    /// The configuration in force and what is built from it (a reload replaces it).
    current: Current,
    fingerprint: String,
    reloader: Reloader,
}

impl Server {
    /// Binds every configured socket and starts, for callers that keep their privileges.
    /// `poplar serve` binds with [`Sockets::bind`], drops them, then calls [`Server::start`].
    pub async fn bind(config: Config, dir: Arc<Dir>) -> anyhow::Result<Self> {
        Self::bind_with_clock(config, dir, Arc::new(auth::defence::SystemClock)).await
    }

    /// [`Server::bind`] with the clock every time-dependent defence rule reads, so
    /// tests can move time instead of waiting.
    pub async fn bind_with_clock(
        config: Config,
        dir: Arc<Dir>,
        clock: Arc<dyn auth::defence::Clock>,
    ) -> anyhow::Result<Self> {
        let sockets = Sockets::bind(&config)?;
        Self::start_with_clock(config, dir, sockets, clock).await
    }

    /// Loads TLS (making the self-signed certificate on first start) and takes over the
    /// sockets bound earlier by [`Sockets::bind`]. `poplar serve` calls it after the
    /// privilege drop, so what it creates belongs to the user it serves as.
    pub async fn start(config: Config, dir: Arc<Dir>, sockets: Sockets) -> anyhow::Result<Self> {
        Self::start_with_clock(config, dir, sockets, Arc::new(auth::defence::SystemClock)).await
    }

    /// [`Server::start`] with the clock the defence rules read.
    pub async fn start_with_clock(
        config: Config,
        dir: Arc<Dir>,
        sockets: Sockets,
        clock: Arc<dyn auth::defence::Clock>,
    ) -> anyhow::Result<Self> {
        let TlsSetup {
            config: tls_config,
            web_config: web_tls,
            fingerprint,
            store,
            ..
        } = crate::tls::load(&config)?;
        let sockets = sockets.into_tokio()?;
        let audit = AuditLog::open(config.audit_target())
            .map_err(|e| anyhow::anyhow!("opening the audit log: {e}"))?;
        let notices = Arc::new(crate::notices::Notices::new(
            &config,
            dir.clone(),
            clock.clone(),
        ));
        let metrics = Arc::new(Metrics::new());
        let capacity = crate::capacity::apply(&config.limits);
        if let Some(warning) = &capacity.warning {
            tracing::warn!("{warning}");
        }
        tracing::info!(
            max_connections = capacity.max_connections,
            per_network_while_busy = capacity.per_network,
            basis = %capacity.basis,
            "connection limit"
        );
        metrics.connection_limit(capacity.max_connections);
        // Bans and locks go to the audit log (and notices) and to the metrics.
        let events = crate::reload::defence_events(&audit, &notices, &metrics);
        let auth = authenticator_with(&config, dir, clock, Some(events)).await?;
        let (auth, oauth) = if config.oauth.issuers.is_empty() {
            (auth, None)
        } else {
            let verifier =
                Arc::new(oauth::OAuthVerifier::new(&config.oauth).map_err(anyhow::Error::msg)?);
            (auth.with_token_verifier(verifier.clone()), Some(verifier))
        };
        let shared = Shared {
            auth,
            oauth,
            notices,
            registry: Arc::new(crate::control::Registry::default()),
            audit,
            metrics,
            sessions: Arc::new(crate::conn::SessionIds::new()),
            node: node_id()?,
            acceptor: TlsAcceptor::from(tls_config),
            admission: Admission::new(crate::admission::Limits {
                cap: capacity.max_connections,
                per_address: config.limits.max_connections_per_address,
                per_network: capacity.per_network,
            }),
            config,
        };
        let current: Current = Arc::new(arc_swap::ArcSwap::from_pointee(shared));
        Ok(Self {
            listeners: sockets.pop3,
            metrics_listener: sockets.metrics,
            web_listener: sockets.web,
            web_tls,
            fingerprint,
            reloader: Reloader::new(current.clone(), store),
            current,
        })
    }

    /// The bound addresses (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(k, l)| l.local_addr().ok().map(|a| (*k, a)))
            .collect()
    }

    /// The bound address of the metrics and health HTTP listener, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The bound address of the security page's HTTPS listener, if there is one.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// This server's metrics (what `/metrics` serves).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.current.load().metrics.clone()
    }

    /// SHA-256 fingerprint of the default certificate served at start.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A handle that reloads the configuration and certificates (on SIGHUP, say) while
    /// the server runs.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Serves until `shutdown` is cancelled, then lets open sessions finish for the
    /// grace period. A session in UPDATE always completes its deletions.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        // Read at start only: a reload that changes these says a restart is needed.
        let start = self.current.load_full();
        let check_secs = start.config.tls.reload_check_secs;
        if check_secs > 0 {
            let every = Duration::from_secs(check_secs);
            tokio::spawn(self.reloader.watch_files(every, shutdown.clone()));
        }
        // The key ring's file (its rotation) on the same schedule, and always: a server
        // that never read a rotation would seal under a key about to be retired.
        tokio::spawn(crate::secrets::watch_ring(
            start.config.clone(),
            start.auth.keys().clone(),
            Duration::from_secs(if check_secs > 0 { check_secs } else { 5 }),
            shutdown.clone(),
        ));
        tokio::spawn(crate::control::serve(
            crate::control::socket_path(&start.config.data_dir),
            start.registry.clone(),
            shutdown.clone(),
        ));
        // OAuth signing keys: fetched now, then on the issuers' schedules.
        if let Some(verifier) = &start.oauth {
            let stop = shutdown.clone();
            oauth::spawn_refresher(verifier.clone(), async move { stop.cancelled().await });
        }
        // Near the connection limit, connections silent before sign-in for longer than
        // the short timeout (as configured now) are closed (checked every second).
        let sweeping = self.current.clone();
        let stop_sweeping = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = stop_sweeping.cancelled() => return,
                    _ = every.tick() => {
                        let now = sweeping.load();
                        let timeout = Duration::from_secs(now.config.limits.idle_timeout_auth_busy_secs);
                        let shed = now.admission.sweep(timeout);
                        if shed > 0 {
                            tracing::info!(shed, "busy: closed connections silent before sign-in");
                        }
                    }
                }
            }
        });
        // Old failure counts and expired bans are dropped hourly.
        let pruning = self.current.clone();
        let stop_pruning = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tokio::select! {
                    _ = stop_pruning.cancelled() => return,
                    _ = every.tick() => pruning.load_full().auth.guard().prune().await,
                }
            }
        });
        for (kind, listener) in self.listeners {
            let current = self.current.clone();
            let shutdown = shutdown.clone();
            let conns = tracker.clone();
            tracker.spawn(accept_loop(kind, listener, current, shutdown, conns));
        }
        // Ready (for /readyz) from when the accept loops run until shutdown begins; set
        // before the HTTP server starts, so its first answer already says so.
        let serving = Arc::new(AtomicBool::new(true));
        // The HTTP listener outlives the POP3 drain, so /readyz says 503 meanwhile.
        let stop_http = CancellationToken::new();
        let http = self.metrics_listener.map(|listener| {
            tokio::spawn(crate::metrics::serve(
                listener,
                start.metrics.clone(),
                start.auth.directory().clone(),
                serving.clone(),
                stop_http.clone(),
            ))
        });
        let web = self.web_listener.map(|listener| {
            let (tls, current, stop) = (
                self.web_tls.clone(),
                self.current.clone(),
                stop_http.clone(),
            );
            tokio::spawn(async move { crate::web::serve(listener, tls, current, stop).await })
        });
        drop(start);
        shutdown.cancelled().await;
        serving.store(false, Ordering::Release);
        tracker.close();
        let grace = Duration::from_secs(self.current.load().config.limits.shutdown_grace_secs);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!("sessions still open after the shutdown grace period; closing them");
        }
        stop_http.cancel();
        // Idle HTTP connections close at once; a stuck one is not waited for long.
        for http in [http, web].into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(1), http).await;
        }
        Ok(())
    }
}

async fn accept_loop(
    kind: ListenerKind,
    listener: TcpListener,
    current: Current,
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
        // The configuration in force now serves this connection to its end.
        let shared = current.load_full();
        shared.metrics.connection(kind);
        if shared.config.proxy.trusts(peer.ip()) {
            // The real client address comes in the PROXY header: read it in the
            // connection's own task (a slow proxy never holds up the accept loop),
            // then admit the connection under that address.
            let Some(ticket) = shared.admission.admit(None) else {
                tracing::debug!(peer = %peer, "connection limit reached; refusing a connection");
                audit_refusal(&shared, &stream, peer, kind, Refused::Busy);
                tracker.spawn(refuse(stream, kind, Refused::Busy));
                continue;
            };
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                let mut stream = stream;
                let timeout = Duration::from_secs(shared.config.proxy.header_timeout_secs);
                let header = tokio::select! {
                    // Shed while the proxy has not sent the header: closed like any
                    // other silent connection.
                    _ = ticket.shed_token().cancelled() => {
                        shared.metrics.shed(kind.into());
                        audit_refusal(&shared, &stream, peer, kind, Refused::Busy);
                        return;
                    }
                    header = crate::proxy::read_header(&mut stream, timeout) => header,
                };
                match header {
                    Ok(header) => {
                        let client = header.source.unwrap_or(peer);
                        admit(kind, stream, client, &shared, shutdown, Some(ticket)).await;
                    }
                    Err(e) => {
                        tracing::info!(proxy = %peer, error = %e, "connection from a trusted proxy without a valid PROXY header closed");
                        audit_refusal(&shared, &stream, peer, kind, Refused::Proxy);
                    }
                }
            });
            continue;
        }
        let shutdown = shutdown.clone();
        tracker.spawn(async move { admit(kind, stream, peer, &shared, shutdown, None).await });
    }
}

/// Admits a connection from `peer` (the real client, behind a proxy or not): access
/// rules, the connection limits, bans; then serves it.
async fn admit(
    kind: ListenerKind,
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    shutdown: CancellationToken,
    proxied: Option<Ticket>,
) {
    if !shared.config.access.allows(peer.ip()) {
        tracing::info!(peer = %peer, "connection refused by the access rules");
        audit_refusal(shared, &stream, peer, kind, Refused::Denied);
        refuse(stream, kind, Refused::Denied).await;
        return;
    }
    // The connection limit (at the limit, provisionally: see `confirm` below), the
    // per-address cap and, while busy, the per-network one.
    let ticket = match proxied {
        Some(mut ticket) => ticket.bind_address(peer.ip()).then_some(ticket),
        None => shared.admission.admit(Some(peer.ip())),
    };
    let Some(ticket) = ticket else {
        tracing::debug!(peer = %peer, "too many connections; refusing one");
        audit_refusal(shared, &stream, peer, kind, Refused::Busy);
        refuse(stream, kind, Refused::Busy).await;
        return;
    };
    // The ban check reads the directory: in the connection's task, so a slow lookup
    // never holds up the accept loop.
    if !shared.auth.guard().connection_allowed(peer.ip()).await {
        tracing::info!(peer = %peer, "connection from a banned address refused");
        audit_refusal(shared, &stream, peer, kind, Refused::Banned);
        refuse(stream, kind, Refused::Banned).await;
        return;
    }
    // Welcome: only now, at the limit, does it make room (a banned address evicts no one).
    if !ticket.confirm() {
        tracing::debug!(peer = %peer, "connection limit reached; refusing a connection");
        audit_refusal(shared, &stream, peer, kind, Refused::Busy);
        refuse(stream, kind, Refused::Busy).await;
        return;
    }
    let conn = Connection::new(shared.clone(), peer, kind, shutdown, ticket);
    conn.run(stream).await;
}

/// A random id for this process, naming it as the owner of maildrop leases.
fn node_id() -> anyhow::Result<String> {
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a refusal to the audit log and counts it.
fn audit_refusal(
    shared: &Shared,
    stream: &TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    reason: Refused,
) {
    shared.metrics.refused(reason);
    shared.audit.write(
        Record {
            event: "refused",
            listener: Some(kind.name()),
            reason: Some(reason.as_str()),
            ..Record::default()
        }
        .addresses(peer, stream.local_addr().ok()),
    );
}

/// One line on the plain port, then close. On the TLS port the connection is just
/// closed: a handshake would cost what the refusal saves.
async fn refuse(mut stream: TcpStream, kind: ListenerKind, why: Refused) {
    if kind == ListenerKind::Pop3s {
        return;
    }
    let line: &[u8] = match why {
        Refused::Busy => b"-ERR [SYS/TEMP] too many connections, try again later\r\n",
        Refused::Denied => b"-ERR [SYS/PERM] connections from your address are not accepted\r\n",
        Refused::Proxy => return,
        Refused::Banned => {
            b"-ERR [SYS/TEMP] too many failed sign-ins from your address, try again later\r\n"
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.write_all(line)).await;
}
