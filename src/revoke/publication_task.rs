//! The publishing task: keeps the `nhi-trust` ConfigMaps at the trust documents last signed, in
//! every namespace that needs one, apart from the revocation service so that publication never
//! holds up the answers to revocation requests.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration as StdDuration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tracing::warn;

use super::handle::Shared;
use super::trust::{trust_field_selector, trust_selector};
use super::trust_configmaps::TrustPublisher;
use crate::health::Health;
use crate::metrics::Metrics;
use nhi_api::MachineIdentity;

/// The shortest time between two publications of new documents: a burst of revocations is
/// published once per interval in each namespace, not once per CRL signed.
pub const PUBLICATION_INTERVAL: StdDuration = StdDuration::from_secs(1);

/// What the publishing task needs from the operator.
pub struct PublishingDeps {
    pub client: Client,
    pub identities: Store<MachineIdentity>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
}

/// Runs until the revocation service stops. `record_namespaces` carries, with each newly signed
/// CRL (stored in `shared.documents`), the namespaces of the revoked certificates it lists.
pub(super) async fn run(
    mut record_namespaces: watch::Receiver<BTreeSet<String>>,
    shared: Arc<Shared>,
    deps: PublishingDeps,
    scope: Option<String>,
) {
    let mut publisher = TrustPublisher::new(deps.client.clone(), scope.clone());
    if let Err(e) = publisher.discover().await {
        warn!(error = %e, "cannot list existing trust ConfigMaps; they are found as identities appear");
    }
    let api: Api<PartialObjectMeta<ConfigMap>> =
        crate::kube_api::scoped_api(deps.client.clone(), scope.as_deref());
    let cfg = watcher::Config::default()
        .labels(&trust_selector())
        .fields(&trust_field_selector());
    let mut trust_changes = watcher(api, cfg)
        .backoff(crate::kube_api::watch_backoff())
        .boxed();
    // The namespaces a relist of the trust ConfigMaps has shown so far.
    let mut relisted: Option<HashSet<String>> = None;
    let mut sync_due = true;
    // After a failed publication, the next attempt.
    let mut retry: Option<tokio::time::Instant> = None;
    let mut backoff = StdDuration::from_secs(1);
    // When the last publication started, and the earliest the next may.
    let mut next_allowed = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        let retry_now = retry.is_none_or(|at| now >= at);
        if sync_due
            && retry_now
            && now >= next_allowed
            && let Some(docs) = shared.documents.load_full()
        {
            next_allowed = now + PUBLICATION_INTERVAL;
            let synced = deps.health.identities_synced.load(Ordering::Relaxed);
            let from_record = record_namespaces.borrow_and_update().clone();
            let wanted = wanted_namespaces(&deps.identities, from_record, &mut publisher);
            let failed = publisher.sync(&docs, &wanted, synced).await;
            if let Ok(mut p) = shared.published.lock() {
                *p = publisher.namespaces().cloned().collect();
            }
            sync_due = !failed.is_empty();
            if sync_due {
                deps.metrics.count_failure("TrustPublicationFailed");
                retry = Some(tokio::time::Instant::now() + backoff);
                backoff = (backoff * 2).min(StdDuration::from_secs(60));
            } else {
                retry = None;
                backoff = StdDuration::from_secs(1);
            }
        }
        let never = tokio::time::Instant::now() + StdDuration::from_secs(3600);
        let held_back = sync_due && tokio::time::Instant::now() < next_allowed;
        tokio::select! {
            _ = tokio::time::sleep_until(next_allowed), if held_back => {}
            changed = record_namespaces.changed() => match changed {
                Ok(()) => {
                    sync_due = true;
                    retry = None;
                }
                // The revocation service has stopped.
                Err(_) => return,
            },
            _ = tokio::time::sleep_until(retry.unwrap_or(never)), if retry.is_some() => {}
            _ = shared.namespaces_changed.notified() => {
                // Let a burst of identity changes arrive before looking at the namespaces.
                tokio::time::sleep(StdDuration::from_millis(50)).await;
                sync_due = true;
            }
            Some(ev) = trust_changes.next() => {
                match ev {
                    Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                        let ns = cm.namespace().unwrap_or_default();
                        publisher.observed(&ns, cm.metadata.resource_version.as_deref(), false);
                        if let Some(seen) = relisted.as_mut() {
                            seen.insert(ns);
                        }
                    }
                    Ok(watcher::Event::Delete(cm)) => {
                        publisher.observed(&cm.namespace().unwrap_or_default(), None, true)
                    }
                    // A (re)list: whatever changed while the watch was down is found.
                    Ok(watcher::Event::Init) => {
                        relisted = Some(HashSet::new());
                        continue;
                    }
                    Ok(watcher::Event::InitDone) => {
                        let seen = relisted.take().unwrap_or_default();
                        let missing: Vec<String> = publisher
                            .namespaces()
                            .filter(|ns| !seen.contains(*ns))
                            .cloned()
                            .collect();
                        for ns in missing {
                            publisher.observed(&ns, None, true);
                        }
                    }
                    Err(e) => {
                        warn!(error = %e, "watching the trust ConfigMaps failed; retrying");
                        continue;
                    }
                }
                sync_due = true;
            }
        }
    }
}

/// The namespaces that need a trust ConfigMap: those with identities, and those whose revoked
/// certificates have not expired yet (their relying services still need the CRL) unless the
/// namespace is gone.
fn wanted_namespaces(
    identities: &Store<MachineIdentity>,
    from_record: BTreeSet<String>,
    publisher: &mut TrustPublisher,
) -> BTreeSet<String> {
    let mut wanted: BTreeSet<String> = from_record
        .into_iter()
        .filter(|ns| !publisher.is_gone(ns))
        .collect();
    for mi in identities.state() {
        if let Some(ns) = mi.metadata.namespace.as_deref() {
            publisher.present(ns);
            wanted.insert(ns.to_string());
        }
    }
    wanted
}
