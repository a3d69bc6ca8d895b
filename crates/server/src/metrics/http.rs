//! The metrics and health HTTP listener: `/metrics` (OpenMetrics text, or the classic
//! Prometheus text format to clients that do not ask for OpenMetrics), `/healthz`
//! (the process answers) and `/readyz` (the POP3 listeners are serving and the
//! directory answers a trivial query).
//!
//! It asks no password, so it is on loopback by default and serves little: a few
//! connections at once, each for a bounded time, so a client that never finishes its
//! request cannot pin it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use directory::Directory as _;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::Dir;
use crate::http_conn::Limited;

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
        lifetime: CONNECTION_LIFETIME,
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
