//! Connections for the two HTTP listeners (metrics and the security page): a bounded
//! number at once, each for a bounded time, so a client that never finishes its
//! request cannot pin a listener. The security page's connections are TLS, their
//! handshakes run in tasks of their own (one slow handshake holds up no other).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
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
        (Bounded::new(stream, self.lifetime, permit), peer)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An HTTPS listener: TCP connections are accepted (at most `slots` at once) and
/// their handshakes run in their own tasks, each within `handshake_timeout`; the
/// finished ones are handed to axum.
pub(crate) struct TlsLimited {
    ready: mpsc::Receiver<(Bounded<TlsStream<TcpStream>>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsLimited {
    /// Starts accepting on `listener` until `shutdown`.
    pub fn start(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        slots: usize,
        lifetime: Duration,
        handshake_timeout: Duration,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(slots.max(1));
        let slots = Arc::new(Semaphore::new(slots.max(1)));
        tokio::spawn(async move {
            loop {
                let (stream, peer, permit) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = accept_slot(&listener, &slots, "web") => accepted,
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((Bounded::new(tls, lifetime, permit), peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "web: TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(peer = %peer, "web: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsLimited { ready, local })
    }
}

impl axum::serve::Listener for TlsLimited {
    type Io = Bounded<TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task stopped (shutdown): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// A connection that holds one slot and reads nothing after its deadline.
pub(crate) struct Bounded<S> {
    stream: S,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl<S> Bounded<S> {
    fn new(stream: S, lifetime: Duration, permit: OwnedSemaphorePermit) -> Self {
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
