//! Connections for the two HTTP listeners (metrics and the security page): a bounded
//! number at once, each for a bounded time, so a client that never finishes its
//! request cannot pin a listener. The security page's connections are TLS, their
//! handshakes run in tasks of their own (one slow handshake holds up no other), its
//! requests' headers must arrive in time, and near its limit the connection idle
//! longest makes room for a newcomer (the same admission as POP3's).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Waits for a free slot, then for a connection; backs off on accept errors (out of
/// file descriptors and similar) instead of spinning.
async fn accept_slot(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
    what: &str,
) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            // Never closed; wait instead of spinning if it ever were.
            std::future::pending::<()>().await;
            continue;
        };
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return (stream, peer, permit);
            }
            Err(e) => {
                tracing::warn!(error = %e, "{what} listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A plain HTTP listener serving at most `slots` connections at once, each for at
/// most `lifetime`.
pub(crate) struct Limited {
    pub inner: TcpListener,
    pub slots: Arc<Semaphore>,
    pub lifetime: Duration,
}

impl axum::serve::Listener for Limited {
    type Io = Bounded<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        let (stream, peer, permit) = accept_slot(&self.inner, &self.slots, "metrics").await;
        (Bounded::new(stream, self.lifetime, Some(permit)), peer)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// How the HTTPS listener limits its connections.
pub(crate) struct TlsLimits {
    /// Connections at once, from one address, and from one network while busy.
    pub admission: crate::admission::Limits,
    /// How long one connection may stay open (keep-alive requests included).
    pub lifetime: Duration,
    /// How long a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How long a request's headers may take to arrive, counted from when the
    /// connection is ready for a request (so an idle keep-alive connection is closed
    /// after it too).
    pub header_timeout: Duration,
    /// While busy, connections with no request in progress for this long are closed.
    pub busy_idle_timeout: Duration,
    /// How long a request's body may take to arrive.
    pub body_timeout: Duration,
}

/// Why the HTTPS listener turned a connection away, for the audit log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    /// Refused at once: no room for its address, network or at all.
    Refused,
    /// Closed to make room for a newer connection, or by the busy sweep.
    Shed,
}

/// Serves `app` over TLS on `listener` until `shutdown`. Connections are admitted
/// under `limits` (shedding the one idle longest at the limit, see
/// [`crate::admission`]), none from an address `allow` refuses; each handshake runs in
/// its connection's own task, then hyper serves HTTP/1.1 with a header-read timeout.
/// The client's address reaches the handlers as `ConnectInfo<SocketAddr>`. `report`
/// hears of every connection turned away for want of room.
pub(crate) async fn serve_tls<A, F>(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: TlsLimits,
    allow: A,
    app: axum::Router,
    report: Arc<dyn Fn(Busy, SocketAddr) + Send + Sync>,
    shutdown: CancellationToken,
) where
    A: Fn(IpAddr) -> F + Send + Sync + 'static,
    F: Future<Output = bool> + Send + 'static,
{
    let admission = crate::admission::Admission::new(limits.admission);
    // Connections are tracked so that a shutdown lets requests in progress finish.
    let connections = tokio_util::task::TaskTracker::new();
    let allow = Arc::new(allow);
    let limits = Arc::new(limits);
    let sweeping = admission.clone();
    let sweep_timeout = limits.busy_idle_timeout;
    let stop_sweeping = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop_sweeping.cancelled() => return,
                _ = every.tick() => { sweeping.sweep(sweep_timeout); }
            }
        }
    });
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "web listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(ticket) = admission.admit(Some(peer.ip())) else {
            tracing::debug!(peer = %peer, "web: no room; connection refused");
            report(Busy::Refused, peer);
            continue;
        };
        let (acceptor, allow, limits, app, report, shutdown) = (
            acceptor.clone(),
            allow.clone(),
            limits.clone(),
            app.clone(),
            report.clone(),
            shutdown.clone(),
        );
        connections.spawn(async move {
            if !allow(peer.ip()).await {
                tracing::debug!(peer = %peer, "web: connection refused (banned)");
                return;
            }
            // Welcome: only now, at the limit, does it make room.
            if !ticket.confirm() {
                report(Busy::Refused, peer);
                return;
            }
            let ticket = Arc::new(ticket);
            let handshake = tokio::select! {
                _ = ticket.shed_token().cancelled() => {
                    report(Busy::Shed, peer);
                    return;
                }
                handshake = tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)) => handshake,
            };
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "web: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "web: TLS handshake timed out");
                    return;
                }
            };
            if serve_connection(tls, peer, &limits, app, &ticket, &shutdown).await {
                report(Busy::Shed, peer);
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// Serves one TLS connection until it closes, is shed (then true), or the server
/// stops (then the request in progress is finished first). A connection with a request
/// in progress, or a response still being written, is never shed.
async fn serve_connection(
    tls: TlsStream<TcpStream>,
    peer: SocketAddr,
    limits: &TlsLimits,
    app: axum::Router,
    ticket: &Arc<crate::admission::Ticket>,
    shutdown: &CancellationToken,
) -> bool {
    use tower::ServiceExt as _;
    let in_flight = ticket.clone();
    let body_timeout = limits.body_timeout;
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let (app, in_flight) = (app.clone(), in_flight.clone());
            async move {
                if !in_flight.working() {
                    // Shed as the request arrived: its place is someone else's.
                    let mut busy = axum::response::Response::new(axum::body::Body::empty());
                    *busy.status_mut() = axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    return Ok::<_, std::convert::Infallible>(busy);
                }
                let mut request = request.map(|body| {
                    axum::body::Body::new(InTime {
                        body,
                        deadline: Box::pin(tokio::time::sleep(body_timeout)),
                    })
                });
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let response = app.oneshot(request).await?;
                // Waiting again once the response is written (or dropped).
                Ok(response.map(|body| axum::body::Body::new(Answered { body, in_flight })))
            }
        });
    let io = hyper_util::rt::TokioIo::new(Bounded::new(tls, limits.lifetime, None));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            biased;
            _ = ticket.shed_token().cancelled() => {
                tracing::debug!(peer = %peer, "web: idle connection closed to make room");
                return true;
            }
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(peer = %peer, error = %e, "web: connection ended");
                }
                return false;
            }
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A request body that must arrive within its deadline (a client trickling a form
/// cannot hold a connection that is never shed while its request is in progress).
struct InTime {
    body: hyper::body::Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for InTime {
    type Data = axum::body::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("request body not received in time".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A response body that puts its connection back in the waiting order once written
/// or dropped.
struct Answered {
    body: axum::body::Body,
    in_flight: Arc<crate::admission::Ticket>,
}

impl hyper::body::Body for Answered {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Answered {
    fn drop(&mut self) {
        self.in_flight.waiting();
    }
}

/// A connection that reads nothing after its deadline (and holds its listener's
/// slot, if it has one, until dropped).
pub(crate) struct Bounded<S> {
    stream: S,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl<S> Bounded<S> {
    fn new(stream: S, lifetime: Duration, permit: Option<OwnedSemaphorePermit>) -> Self {
        Bounded {
            stream,
            deadline: Box::pin(tokio::time::sleep(lifetime)),
            _permit: permit,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "HTTP connection open too long",
            )));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
