//! Connections for the two HTTP listeners (metrics and the security page): a bounded
//! number at once, each for a bounded time, so a client that never finishes its
//! request cannot pin a listener. The security page's connections are TLS, their
//! handshakes run in tasks of their own (one slow handshake holds up no other).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
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
        (Bounded::new(stream, self.lifetime, permit, None), peer)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An HTTPS listener: TCP connections are accepted (at most `slots` at once, at most
/// `per_address` from one address, none from an address `allow` refuses) and their
/// handshakes run in their own tasks, each within `handshake_timeout`; the finished
/// ones are handed to axum.
pub(crate) struct TlsLimited {
    ready: mpsc::Receiver<(Bounded<TlsStream<TcpStream>>, SocketAddr)>,
    local: SocketAddr,
}

/// How the HTTPS listener limits its connections.
pub(crate) struct TlsLimits {
    pub slots: usize,
    pub per_address: usize,
    pub lifetime: Duration,
    pub handshake_timeout: Duration,
}

impl TlsLimited {
    /// Starts accepting on `listener` until `shutdown`.
    pub fn start<A, F>(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        limits: TlsLimits,
        allow: A,
        shutdown: CancellationToken,
    ) -> std::io::Result<Self>
    where
        A: Fn(IpAddr) -> F + Send + Sync + 'static,
        F: Future<Output = bool> + Send + 'static,
    {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(limits.slots.max(1));
        let slots = Arc::new(Semaphore::new(limits.slots.max(1)));
        let counts: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
        let allow = Arc::new(allow);
        tokio::spawn(async move {
            loop {
                let (stream, peer, permit) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    accepted = accept_slot(&listener, &slots, "web") => accepted,
                };
                let Some(address) = AddressSlot::take(&counts, peer.ip(), limits.per_address)
                else {
                    tracing::debug!(peer = %peer, "web: too many connections from one address");
                    continue;
                };
                let (acceptor, tx, allow) = (acceptor.clone(), tx.clone(), allow.clone());
                let (lifetime, timeout) = (limits.lifetime, limits.handshake_timeout);
                tokio::spawn(async move {
                    if !allow(peer.ip()).await {
                        tracing::debug!(peer = %peer, "web: connection refused (banned)");
                        return;
                    }
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let conn = Bounded::new(tls, lifetime, permit, Some(address));
                            let _ = tx.send((conn, peer)).await;
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

/// One connection's place in the per-address count, given back when it closes.
pub(crate) struct AddressSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl AddressSlot {
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
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
    _address: Option<AddressSlot>,
}

impl<S> Bounded<S> {
    fn new(
        stream: S,
        lifetime: Duration,
        permit: OwnedSemaphorePermit,
        address: Option<AddressSlot>,
    ) -> Self {
        Bounded {
            stream,
            deadline: Box::pin(tokio::time::sleep(lifetime)),
            _permit: permit,
            _address: address,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_and_given_back() {
        let counts = Arc::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = AddressSlot::take(&counts, ip, 2).unwrap();
        let b = AddressSlot::take(&counts, ip, 2).unwrap();
        assert!(AddressSlot::take(&counts, ip, 2).is_none());
        assert!(AddressSlot::take(&counts, "192.0.2.2".parse().unwrap(), 2).is_some());
        drop(a);
        let c = AddressSlot::take(&counts, ip, 2).unwrap();
        drop((b, c));
        assert!(counts.lock().unwrap().is_empty());
    }
}
