//! How the operator's requests retry a throttled or unavailable apiserver: a bounded retry in
//! place of kube's default, on a client stack of kube's own.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use kube::client::retry::RetryPolicy;
use tower::retry::{Retry, RetryLayer};
use tower::{Layer, Service};

/// The first wait before a request answered 429, 503 or 504 is sent again.
const FIRST: Duration = Duration::from_millis(100);
/// The longest wait between two tries of one request.
const MAX: Duration = Duration::from_secs(2);
/// How many times one request is sent again: the waits add up to at most about 5 s.
const RETRIES: u32 = 6;

/// How the operator's requests retry a 429, 503 or 504 (a throttling or restarting apiserver,
/// etcd gone under it): from 0.1 s doubling to 2 s, six times, or after the server's
/// Retry-After when it asks for longer. kube's default tries 15 times with waits doubling to
/// minutes: a watch or a write caught in a control-plane restart slept for tens of seconds after
/// the apiserver was back. Past these tries the error reaches the caller (a watch retries by
/// [`crate::kube_api::watch_backoff`], a reconcile is requeued).
pub fn request_retry() -> RetryLayer<RetryPolicy> {
    // The bounds are constants kube accepts; were they refused, kube's own bounded default
    // (0.5 s to 5 s, three tries) is the fallback rather than a panic at start-up.
    let policy = RetryPolicy::new(FIRST, MAX, RETRIES, true).unwrap_or_default();
    RetryLayer::new(policy)
}

/// kube's service stack, as `ClientBuilder::try_from(Config)` builds it.
type KubeStack = tower::util::BoxService<
    hyper::Request<kube::client::Body>,
    hyper::Response<Box<kube::client::DynBody>>,
    tower::BoxError,
>;

/// The service of a [`client_builder`].
pub type RetryingService = Retry<RetryPolicy, Shared<KubeStack>>;

/// A client builder for `config` whose requests retry by [`request_retry`] (kube's own retry
/// off); other layers (the fence) go on top.
pub fn client_builder(
    mut config: kube::Config,
) -> Result<kube::client::ClientBuilder<RetryingService>, kube::Error> {
    config.default_retry = false;
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&SharedLayer)
        .with_layer(&request_retry()))
}

/// A service shared by its clones (a retry sends a request again through a clone): kube's
/// stack is boxed and cannot be cloned. It is always ready (kube's layers are), and the lock is
/// held only to start a call, never across one.
pub struct Shared<S>(Arc<Mutex<S>>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

/// Makes a [`Shared`] service.
pub struct SharedLayer;

impl<S> Layer<S> for SharedLayer {
    type Service = Shared<S>;
    fn layer(&self, inner: S) -> Shared<S> {
        Shared(Arc::new(Mutex::new(inner)))
    }
}

impl<S, R> Service<R> for Shared<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // A poisoned lock only means a call panicked while starting: the service is still whole.
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> S::Future {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers 503 to the first `failures` calls, then 200; counts every call.
    #[derive(Clone)]
    struct Flaky {
        calls: Arc<AtomicUsize>,
        failures: usize,
    }

    impl Service<hyper::Request<kube::client::Body>> for Flaky {
        type Response = hyper::Response<String>;
        type Error = tower::BoxError;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: hyper::Request<kube::client::Body>) -> Self::Future {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let status = if n < self.failures { 503 } else { 200 };
            let response = hyper::Response::builder()
                .status(status)
                .body(String::new())
                .unwrap();
            std::future::ready(Ok(response))
        }
    }

    async fn send(failures: usize) -> (u16, usize, Duration) {
        use tower::ServiceExt;
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = SharedLayer.layer(Flaky {
            calls: calls.clone(),
            failures,
        });
        let service = request_retry().layer(inner);
        let request = hyper::Request::get("/api/v1/namespaces")
            .body(kube::client::Body::empty())
            .unwrap();
        let started = tokio::time::Instant::now();
        let response = service.oneshot(request).await.unwrap();
        (
            response.status().as_u16(),
            calls.load(Ordering::SeqCst),
            started.elapsed(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_503_is_tried_again_until_it_passes() {
        let (status, calls, _) = send(3).await;
        assert_eq!((status, calls), (200, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_apiserver_is_given_up_on_within_seconds() {
        let (status, calls, waited) = send(usize::MAX).await;
        assert_eq!((status, calls), (503, 1 + RETRIES as usize));
        assert!(
            waited <= Duration::from_secs(8),
            "gave up after {waited:?} (kube's default waits minutes)"
        );
    }
}
