//! The operator's HTTP endpoints: `/metrics`, `/readyz` (caches synced and CA loaded),
//! `/livez` (the controller loop is running), and the trust documents `/ca.pem` and `/crl.pem`
//! (from shared buffers: [`crate::http_trust`]), with a bound on the requests in flight.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::Semaphore;

use crate::health::Health;
pub use crate::http_trust::PublishedTrust;
use crate::http_trust::{Served, TrustCache};
use crate::metrics::Metrics;
use crate::revoke::Revoker;

/// Requests served at once, at most.
pub const MAX_IN_FLIGHT: usize = 64;

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    trust: Arc<TrustCache>,
}

/// Serves the endpoints on `addr` until the process exits. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    revoker: Revoker,
    published: Option<PublishedTrust>,
) -> std::io::Result<SocketAddr> {
    let state = AppState {
        health,
        metrics,
        trust: Arc::new(TrustCache::new(revoker, published)),
    };
    listen(addr, router(state, MAX_IN_FLIGHT)).await
}

/// Serves `app` on `addr` in the background; returns the bound address.
async fn listen(addr: SocketAddr, app: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(bound)
}

/// The routes, serving at most `in_flight` requests at once.
fn router(state: AppState, in_flight: usize) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/ca.pem", get(ca_pem))
        .route("/crl.pem", get(crl_pem))
        .route("/readyz", get(readyz))
        .route("/livez", get(livez))
        .with_state(state)
        // Only GETs: no request body is read.
        .layer(DefaultBodyLimit::max(0))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(Semaphore::new(in_flight)),
            bounded,
        ))
}

type Reply = (StatusCode, [(&'static str, &'static str); 1], Body);

/// A trust document: the leader's own, else the published one, else 503 (nothing published yet).
async fn trust_document(s: &AppState, pick: impl Fn(Served) -> Bytes) -> Reply {
    match s.trust.documents().await {
        Some(served) => (
            StatusCode::OK,
            [("content-type", "application/x-pem-file")],
            Body::from(pick(served)),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/plain; charset=utf-8")],
            Body::from("no trust documents published yet (the leader is starting)\n"),
        ),
    }
}

async fn ca_pem(State(s): State<AppState>) -> Reply {
    trust_document(&s, |d| d.ca).await
}

async fn crl_pem(State(s): State<AppState>) -> Reply {
    trust_document(&s, |d| d.crl).await
}

/// At most [`MAX_IN_FLIGHT`] requests are served at once; more are answered 503 at once
/// (an unauthenticated endpoint must not let a flood queue up work or memory).
async fn bounded(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    match permits.try_acquire() {
        Ok(_permit) => next.run(request).await,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "too many requests in flight\n",
        )
            .into_response(),
    }
}

async fn metrics_handler(
    State(s): State<AppState>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.health.ready() {
        (StatusCode::OK, "ok")
    } else if !s.health.ca_loaded.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "CA not loaded")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

async fn livez(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.health.controller_alive.load(Ordering::Relaxed)
        || !s.health.ca_loaded.load(Ordering::Relaxed)
    {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "controller loop stopped")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn livez_fails_once_the_controller_loop_stopped() {
        let health = Arc::new(Health::default());
        let (revoker, _inbox) = crate::revoke::channel();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            health.clone(),
            Arc::new(Metrics::default()),
            revoker,
            None,
        )
        .await
        .unwrap();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/readyz").await.starts_with("HTTP/1.0 503"));
        // No CRL signed yet (the leader starting): said, not an empty document.
        let crl = get("/crl.pem").await;
        assert!(
            crl.starts_with("HTTP/1.0 503") && crl.contains("no trust documents"),
            "{crl}"
        );
        health.ca_loaded.store(true, Ordering::Relaxed);
        health.controller_alive.store(true, Ordering::Relaxed);
        assert!(get("/livez").await.starts_with("HTTP/1.0 200"));
        health.controller_alive.store(false, Ordering::Relaxed);
        assert!(get("/livez").await.starts_with("HTTP/1.0 503"));
        assert!(
            get("/metrics")
                .await
                .contains("nhi_reconcile_duration_seconds")
        );
    }

    #[tokio::test]
    async fn requests_past_the_bound_are_refused_at_once() {
        let (revoker, _inbox) = crate::revoke::channel();
        let state = AppState {
            health: Arc::new(Health::default()),
            metrics: Arc::new(Metrics::default()),
            trust: Arc::new(TrustCache::new(revoker, None)),
        };
        // No permit left: every request is over the bound.
        let addr = listen("127.0.0.1:0".parse().unwrap(), router(state, 0))
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /livez HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.0 503"), "{out}");
        assert!(out.contains("too many requests in flight"), "{out}");
    }
}
