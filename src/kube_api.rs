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
/// up to a fifth (replicas do not retry in step), from 0.5 s again once 30 s have passed without
/// an error. kube's stream resets a backoff on every event, and a watcher whose list fails still
/// yields one (its `Init`): the backoff ignores those resets, or a failing list would be retried
/// every 0.5 s for as long as it fails.
pub fn watch_backoff() -> WatchBackoff {
    WatchBackoff {
        next: WATCH_RETRY_FIRST,
        last: None,
    }
}

/// How long without an error before the waits start again from the first.
const WATCH_RETRY_QUIET: std::time::Duration = std::time::Duration::from_secs(30);

/// Exponential backoff with jitter, capped, reset by time alone (see [`watch_backoff`]).
pub struct WatchBackoff {
    next: std::time::Duration,
    /// When the last wait was handed out.
    last: Option<std::time::Instant>,
}

impl WatchBackoff {
    /// The wait after an error at `now`, before jitter.
    fn nominal_at(&mut self, now: std::time::Instant) -> std::time::Duration {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) > WATCH_RETRY_QUIET)
        {
            self.next = WATCH_RETRY_FIRST;
        }
        self.last = Some(now);
        let wait = self.next;
        self.next = (self.next * 2).min(WATCH_RETRY_MAX);
        wait
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        let wait = self.nominal_at(std::time::Instant::now());
        Some(wait.mul_f64(1.0 - rand::random::<f64>() / 5.0))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    /// Ignored: only 30 s without an error starts the waits again (see [`watch_backoff`]).
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::utils::Backoff;
    use std::time::{Duration, Instant};

    #[test]
    fn waits_double_up_to_the_cap_through_resets_and_start_again_after_quiet() {
        let mut b = watch_backoff();
        let t0 = Instant::now();
        let mut waits = vec![];
        for i in 0..6 {
            // kube resets the backoff between errors (a failing list still yields Init).
            b.reset();
            waits.push(b.nominal_at(t0 + Duration::from_secs(i)).as_secs_f64());
        }
        assert_eq!(waits, [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]);
        let later = t0 + Duration::from_secs(6 + 31);
        assert_eq!(
            b.nominal_at(later),
            WATCH_RETRY_FIRST,
            "after 30 s without an error"
        );
        let jittered = b.next().unwrap();
        assert!(jittered <= Duration::from_secs(1) && jittered >= Duration::from_millis(800));
    }
}
