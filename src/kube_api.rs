//! How the operator talks to the Kubernetes API: handles scoped the way it runs, the name it
//! gives itself, how its watches retry (a leaf: it imports nothing of the crate).

use kube::{Api, Client};

/// An `Api` over all namespaces, or one when the operator is namespace-scoped.
pub fn scoped_api<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// Names this replica in the apiserver's audit log and request logs:
/// `nhi-operator/<version> (<POD_NAME>)` (the host name out of a pod), as kubectl and
/// controllers name themselves.
pub fn identify(config: &mut kube::Config) {
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "local".into());
    let agent = format!("nhi-operator/{} ({instance})", env!("CARGO_PKG_VERSION"));
    if let Ok(value) = hyper::http::HeaderValue::from_str(&agent) {
        config
            .headers
            .push((hyper::http::header::USER_AGENT, value));
    }
}

/// The first wait before a watch is tried again after an error.
const WATCH_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
/// The longest: an identity system catches up within seconds of its apiserver's return (kube's
/// default waits up to 30 s, and keeps its longest wait for two minutes after an outage).
const WATCH_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(5);

/// How the operator's watches retry: doubling from 0.5 s up to 5 s, each wait jittered down by
/// up to a fifth (replicas do not retry in step), back to 0.5 s once a watch has worked for 30 s.
pub fn watch_backoff() -> kube::runtime::utils::ResetTimerBackoff<WatchBackoff> {
    kube::runtime::utils::ResetTimerBackoff::new(
        WatchBackoff {
            next: WATCH_RETRY_FIRST,
        },
        std::time::Duration::from_secs(30),
    )
}

/// Exponential backoff with jitter, capped (see [`watch_backoff`]).
pub struct WatchBackoff {
    next: std::time::Duration,
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        let wait = self.next;
        self.next = (self.next * 2).min(WATCH_RETRY_MAX);
        Some(wait.mul_f64(1.0 - rand::random::<f64>() / 5.0))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = WATCH_RETRY_FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;

    #[test]
    fn waits_double_up_to_the_cap_and_start_again_after_a_reset() {
        let mut b = WatchBackoff {
            next: WATCH_RETRY_FIRST,
        };
        let waits: Vec<f64> = (0..6).map(|_| b.next().unwrap().as_secs_f64()).collect();
        let nominal = [0.5, 1.0, 2.0, 4.0, 5.0, 5.0];
        for (w, n) in waits.iter().zip(nominal) {
            assert!(*w <= n && *w >= n * 0.8, "{waits:?}");
        }
        b.reset();
        assert!(b.next().unwrap() <= WATCH_RETRY_FIRST);
    }
}
