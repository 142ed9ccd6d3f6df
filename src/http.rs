//! The operator's HTTP endpoints: `/metrics`, `/readyz` (caches synced and CA loaded),
//! `/livez` (the controller loop is running), and the trust documents `/ca.pem` and `/crl.pem`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::revoke::Revoker;
use crate::revoke::trust::{CA_KEY, CRL_KEY, TrustDocuments, trust_field_selector, trust_selector};

#[derive(Clone)]
struct AppState {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    revoker: Revoker,
    published: Option<PublishedTrust>,
}

/// Serves the endpoints on `addr` until the process exits. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    revoker: Revoker,
    published: Option<PublishedTrust>,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/ca.pem", get(ca_pem))
        .route("/crl.pem", get(crl_pem))
        .route("/readyz", get(readyz))
        .route("/livez", get(livez))
        .with_state(AppState {
            health,
            metrics,
            revoker,
            published,
        });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(bound)
}

/// Where a replica without documents of its own (a standby) reads the published ones: any
/// `nhi-trust` ConfigMap in the watched scope (they all hold the same documents).
#[derive(Clone)]
pub struct PublishedTrust {
    pub client: kube::Client,
    pub scope: Option<String>,
}

impl PublishedTrust {
    async fn read(&self) -> Option<TrustDocuments> {
        use k8s_openapi::api::core::v1::ConfigMap;
        let api: kube::Api<ConfigMap> =
            crate::kube_api::scoped_api(self.client.clone(), self.scope.as_deref());
        // From the apiserver's watch cache: an unauthenticated endpoint must not cost etcd reads.
        let lp = kube::api::ListParams::default()
            .fields(&trust_field_selector())
            .labels(&trust_selector())
            .match_any()
            .limit(1);
        let cm = api.list(&lp).await.ok()?.items.into_iter().next()?;
        let data = cm.data?;
        Some(TrustDocuments {
            ca_pem: data.get(CA_KEY)?.clone(),
            crl_pem: data.get(CRL_KEY)?.clone(),
            crl_number: 0,
        })
    }
}

type Reply = (StatusCode, [(&'static str, &'static str); 1], String);

/// A trust document: the leader's own, else the published one, else 503 (nothing published yet).
async fn trust_document(s: &AppState, pick: impl Fn(&TrustDocuments) -> String) -> Reply {
    let document = match s.revoker.documents() {
        Some(d) => Some(pick(&d)),
        None => match &s.published {
            Some(p) => p.read().await.map(|d| pick(&d)),
            None => None,
        },
    };
    match document {
        Some(document) => (
            StatusCode::OK,
            [("content-type", "application/x-pem-file")],
            document,
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("content-type", "text/plain; charset=utf-8")],
            "no trust documents published yet (the leader is starting)\n".into(),
        ),
    }
}

async fn ca_pem(State(s): State<AppState>) -> Reply {
    trust_document(&s, |d| d.ca_pem.clone()).await
}

async fn crl_pem(State(s): State<AppState>) -> Reply {
    trust_document(&s, |d| d.crl_pem.clone()).await
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
}
