//! The endpoint's listener: TLS with client certificates required, HTTP/1.1 kept alive, bounded
//! connections and timeouts, each request answered by [`super::handler`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::DelegationContext;
use super::handler::{Answer, BAD_REQUEST, NOT_READY, answer};
use nhi_identity::delegate::wire::MAX_BODY;

/// Connections served at once, at most (others wait to be accepted).
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a TLS handshake, or a request's headers, may take (and a kept-alive connection may
/// stay idle).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Listens on `addr` and serves in the background; returns the bound address.
pub async fn serve(addr: SocketAddr, ctx: Arc<DelegationContext>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "delegation endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let ctx = ctx.clone();
            tokio::spawn(async move {
                connection(ctx, tcp).await;
                drop(permit);
            });
        }
    });
    Ok(bound)
}

/// Serves one connection.
async fn connection(ctx: Arc<DelegationContext>, tcp: tokio::net::TcpStream) {
    // The configuration (made afresh after a CA change) and the handshake, within one bound.
    let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let served = ctx.tls.current().await.map_err(|e| {
            tracing::error!(error = %e, "delegation endpoint: no TLS configuration");
        })?;
        served.acceptor.accept(tcp).await.map_err(|e| {
            tracing::debug!(error = %e, "delegation endpoint: handshake refused");
        })
    })
    .await;
    let Ok(Ok(tls)) = accepted else {
        return;
    };
    let peer: Arc<Vec<CertificateDer<'static>>> = Arc::new(
        tls.get_ref()
            .1
            .peer_certificates()
            .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
            .unwrap_or_default(),
    );
    let service = service_fn(move |req: Request<Incoming>| {
        let (ctx, peer) = (ctx.clone(), peer.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, MAX_BODY).collect());
            let answer = match body.await {
                // The configuration of now: a kept-alive connection made before a CA change is
                // judged against the current bundle, and its children get that bundle.
                Ok(Ok(body)) => match ctx.tls.current().await {
                    Ok(served) => {
                        let body = body.to_bytes();
                        answer(
                            &ctx,
                            &served,
                            &peer,
                            (&parts.method, parts.uri.path(), &body),
                        )
                    }
                    Err(e) => unavailable(e),
                },
                Ok(Err(_)) | Err(_) => too_large_or_broken(),
            };
            Ok::<_, Infallible>(response(answer))
        }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "delegation endpoint: connection ended");
    }
}

fn too_large_or_broken() -> Answer {
    Answer::refused(
        StatusCode::PAYLOAD_TOO_LARGE,
        BAD_REQUEST,
        format!(
            "the request body is unreadable, over {MAX_BODY} bytes, or slower than {}s",
            BODY_TIMEOUT.as_secs()
        ),
    )
}

fn unavailable(why: String) -> Answer {
    tracing::error!(error = %why, "delegation endpoint: no TLS configuration");
    Answer::refused(
        StatusCode::SERVICE_UNAVAILABLE,
        NOT_READY,
        "the endpoint cannot sign now; try again".into(),
    )
}

fn response(answer: Answer) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(answer.body)));
    *response.status_mut() = answer.status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Some(seconds) = answer.retry_after {
        headers.insert(RETRY_AFTER, hyper::header::HeaderValue::from(seconds));
    }
    response
}
