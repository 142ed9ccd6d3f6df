//! Fencing: a leader writes to the API only while its Lease is current by its own monotonic
//! clock. A replica paused past its renew deadline (SIGSTOP, a frozen VM) finds, when it
//! resumes, that every write it attempts is refused before it leaves the process, whatever
//! work was in flight: the replica that took over is the only writer.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::http::{Method, Request};
use tokio::time::Instant;
use tower::{Layer, Service};

/// Whether this replica may write now. Shared by the Lease holder (which renews it) and every
/// writer (through [`FenceLayer`]).
#[derive(Clone, Debug)]
pub struct Fence {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
enum State {
    /// No leader election: one replica, always the writer.
    Open,
    /// Writes until `renewed + valid_for` (None: not the leader).
    Leased {
        renewed: Option<Instant>,
        valid_for: Duration,
    },
}

/// A write refused because the Lease is not current.
#[derive(Debug, thiserror::Error)]
#[error(
    "not writing: this replica does not hold a current Lease ({why}); another replica may lead"
)]
pub struct Fenced {
    why: String,
}

impl Fence {
    /// A fence that never closes (no leader election).
    pub fn open() -> Self {
        Fence {
            state: Arc::new(Mutex::new(State::Open)),
        }
    }

    /// A fence that is open for `valid_for` after each renewal (the renew deadline), closed
    /// until the first.
    pub fn leased(valid_for: Duration) -> Self {
        Fence {
            state: Arc::new(Mutex::new(State::Leased {
                renewed: None,
                valid_for,
            })),
        }
    }

    /// The Lease was acquired or renewed by an attempt that started at `started`.
    pub fn renewed(&self, started: Instant) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let State::Leased { renewed, .. } = &mut *state {
            *renewed = Some(renewed.map_or(started, |r| r.max(started)));
        }
    }

    /// The Lease is no longer held: nothing more is written.
    pub fn close(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let State::Leased { renewed, .. } = &mut *state {
            *renewed = None;
        }
    }

    /// Ok when a write may leave now.
    pub fn check(&self, now: Instant) -> Result<(), Fenced> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            State::Open => Ok(()),
            State::Leased { renewed: None, .. } => Err(Fenced {
                why: "not acquired, or given up".into(),
            }),
            State::Leased {
                renewed: Some(at),
                valid_for,
            } => {
                let age = now.saturating_duration_since(*at);
                match age < *valid_for {
                    true => Ok(()),
                    false => Err(Fenced {
                        why: format!(
                            "last renewed {:.1}s ago, past the {}s deadline",
                            age.as_secs_f64(),
                            valid_for.as_secs()
                        ),
                    }),
                }
            }
        }
    }
}

/// Whether a request changes something (reads, lists and watches pass the fence).
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The layer that puts a [`Fence`] in front of a Kubernetes client's requests.
#[derive(Clone)]
pub struct FenceLayer(pub Fence);

impl<S> Layer<S> for FenceLayer {
    type Service = FencedService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        FencedService {
            inner,
            fence: self.0.clone(),
        }
    }
}

/// A service whose writes pass the fence first.
#[derive(Clone)]
pub struct FencedService<S> {
    inner: S,
    fence: Fence,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> Service<Request<B>> for FencedService<S>
where
    S: Service<Request<B>>,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !is_write(request.method()) {
            let call = self.inner.call(request);
            return Box::pin(async move { call.await.map_err(Into::into) });
        }
        let what = format!("{} {}", request.method(), request.uri().path());
        let refuse = move |fenced: Fenced| {
            tracing::warn!(request = %what, reason = %fenced, "write refused by the fence");
            Box::new(fenced) as BoxError
        };
        // Checked before the request is handed on (a service may start sending at once), and
        // at every poll after: what runs inside (kube's retries of a 429 or 503, token refresh,
        // connecting) may send it long after it was made.
        let fence = self.fence.clone();
        if let Err(fenced) = fence.check(Instant::now()) {
            return Box::pin(std::future::ready(Err(refuse(fenced))));
        }
        let mut call = Box::pin(self.inner.call(request));
        Box::pin(std::future::poll_fn(move |cx| {
            if let Err(fenced) = fence.check(Instant::now()) {
                return Poll::Ready(Err(refuse(fenced)));
            }
            call.as_mut().poll(cx).map_err(Into::into)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_current_until_its_deadline_from_the_start_of_the_last_renewal() {
        let fence = Fence::leased(Duration::from_secs(4));
        let t0 = Instant::now();
        assert!(fence.check(t0).is_err(), "closed until acquired");
        fence.renewed(t0);
        assert!(fence.check(t0 + Duration::from_millis(3999)).is_ok());
        let late = fence.check(t0 + Duration::from_secs(30)).unwrap_err();
        assert!(late.to_string().contains("past the 4s deadline"), "{late}");
        // A renewal that started earlier than the last one never moves the deadline back.
        fence.renewed(t0 + Duration::from_secs(3));
        fence.renewed(t0 + Duration::from_secs(1));
        assert!(fence.check(t0 + Duration::from_millis(6500)).is_ok());
        fence.close();
        assert!(
            fence.check(t0 + Duration::from_secs(4)).is_err(),
            "given up"
        );
        assert!(Fence::open().check(t0 + Duration::from_secs(3600)).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_still_under_way_when_the_lease_ends_is_refused_then() {
        let fence = Fence::leased(Duration::from_secs(4));
        fence.renewed(Instant::now());
        let sent = Arc::new(Mutex::new(false));
        let flag = sent.clone();
        // An inner service that sends only after 10 s (a retry after a 503, say).
        let inner = tower::service_fn(move |_: Request<()>| {
            let flag = flag.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                *flag.lock().unwrap() = true;
                Ok::<_, std::convert::Infallible>(())
            }
        });
        let mut service = FenceLayer(fence).layer(inner);
        let request = Request::builder().method(Method::PUT).body(()).unwrap();
        let refused = service.call(request).await.unwrap_err();
        assert!(refused.to_string().contains("not writing"), "{refused}");
        assert!(!*sent.lock().unwrap(), "never sent");
    }

    #[tokio::test]
    async fn writes_are_refused_before_they_leave_and_reads_pass() {
        let fence = Fence::leased(Duration::from_secs(4));
        let sent = Arc::new(Mutex::new(vec![]));
        let log = sent.clone();
        let inner = tower::service_fn(move |r: Request<()>| {
            log.lock().unwrap().push(r.method().clone());
            async { Ok::<_, std::convert::Infallible>(()) }
        });
        let mut service = FenceLayer(fence.clone()).layer(inner);
        let request = |m: Method| Request::builder().method(m).body(()).unwrap();
        assert!(service.call(request(Method::GET)).await.is_ok());
        let refused = service.call(request(Method::PATCH)).await.unwrap_err();
        assert!(refused.to_string().contains("not writing"), "{refused}");
        fence.renewed(Instant::now());
        assert!(service.call(request(Method::POST)).await.is_ok());
        assert_eq!(*sent.lock().unwrap(), [Method::GET, Method::POST]);
    }
}
