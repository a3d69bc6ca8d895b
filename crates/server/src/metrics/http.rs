//! The metrics and health HTTP listener: `/metrics` (OpenMetrics text, or the classic
//! Prometheus text format to clients that do not ask for OpenMetrics), `/healthz`
//! (the process answers) and `/readyz` (the POP3 listeners are serving and the
//! directory answers a trivial query).
//!
//! It asks no password, so it is on loopback by default and serves little: a few
//! connections at once, each for a bounded time, so a client that never finishes its
//! request cannot pin it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use directory::Directory as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::Dir;

/// The OpenMetrics 1.0 text format; Prometheus asks for it and understands it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// HTTP connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 16;
/// How long one HTTP connection may stay open (requests on it included).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long `/readyz` waits for the directory.
const DIRECTORY_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers read.
#[derive(Clone)]
struct Health {
    metrics: Arc<Metrics>,
    dir: Arc<Dir>,
    /// Set while the POP3 listeners are accepting connections.
    serving: Arc<AtomicBool>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    dir: Arc<Dir>,
    serving: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Health {
            metrics,
            dir,
            serving,
        });
    let listener = Limited {
        inner: listener,
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    // axum's serve only returns once the shutdown signal fired.
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
}

/// OpenMetrics to clients that ask for it (Prometheus does), the classic text format
/// to the rest.
async fn scrape(State(health): State<Health>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers.get_all(header::ACCEPT).iter().any(|accept| {
        accept
            .to_str()
            .is_ok_and(|a| a.contains("application/openmetrics-text"))
    });
    if openmetrics {
        (
            [(header::CONTENT_TYPE, OPENMETRICS)],
            health.metrics.encode(),
        )
    } else {
        (
            [(header::CONTENT_TYPE, super::text::CONTENT_TYPE)],
            health.metrics.encode_classic(),
        )
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    if !health.serving.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: not serving POP3\n",
        );
    }
    // A lookup of a name no account can have: one indexed query, no side effects.
    match tokio::time::timeout(DIRECTORY_TIMEOUT, health.dir.find_user("")).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the directory failed a query");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the directory does not answer\n",
            )
        }
        Err(_) => {
            tracing::warn!("readiness: the directory did not answer in time");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the directory does not answer\n",
            )
        }
    }
}

/// A listener that serves at most [`MAX_CONNECTIONS`] at once.
struct Limited {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

impl axum::serve::Listener for Limited {
    type Io = Bounded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Bounded, SocketAddr) {
        loop {
            let Ok(permit) = self.slots.clone().acquire_owned().await else {
                // Never closed; wait instead of spinning if it ever were.
                std::future::pending::<()>().await;
                continue;
            };
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let deadline = Box::pin(tokio::time::sleep(CONNECTION_LIFETIME));
                    return (
                        Bounded {
                            stream,
                            deadline,
                            _permit: permit,
                        },
                        peer,
                    );
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An HTTP connection that holds one slot and reads nothing after its deadline.
struct Bounded {
    stream: TcpStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Bounded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "metrics connection open too long",
            )));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Bounded {
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
