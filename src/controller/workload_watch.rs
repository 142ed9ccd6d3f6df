//! Watches the objects identities serve (`spec.workloadRef`): one metadata-only watch per
//! referenced kind, started the first time an identity names it. Identities are looked at again
//! when their workload appears or disappears; nothing is polled.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::core::{GroupVersionKind, PartialObjectMeta};
use kube::discovery::{Scope, pinned_kind};
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc::UnboundedSender;
use tracing::{debug, info, warn};

use crate::cache::IndexedStore;
use nhi_api::{MachineIdentity, WorkloadRef};
use nhi_core::lifecycle::workload::{Presence, WATCH_STARTING};

/// Reason: the workload's kind is not served by the cluster.
pub const KIND_UNKNOWN: &str = "WorkloadKindUnknown";
/// Reason: the operator may not list or watch the workload's kind.
pub const WATCH_FAILING: &str = "WorkloadWatchFailing";

/// One watched kind.
#[derive(Default)]
struct KindWatch {
    /// `namespace/name` of every object of the kind.
    names: RwLock<HashSet<String>>,
    synced: AtomicBool,
    /// Why existence cannot be known (reason, message), if so.
    problem: RwLock<Option<(String, String)>>,
}

/// Where to send identities to look at again, and the identity cache to find them in.
struct Wiring {
    identities: IndexedStore<MachineIdentity>,
    trigger: UnboundedSender<ObjectRef<MachineIdentity>>,
}

/// The workload watches, by `apiVersion/kind`.
pub struct WorkloadWatches {
    client: Client,
    scope: Option<String>,
    kinds: Mutex<HashMap<String, Arc<KindWatch>>>,
    wiring: OnceLock<Wiring>,
}

fn kind_key(w: &WorkloadRef) -> String {
    format!("{}/{}", w.api_version, w.kind)
}

fn gvk_of(w: &WorkloadRef) -> GroupVersionKind {
    match w.api_version.split_once('/') {
        Some((group, version)) => GroupVersionKind::gvk(group, version, &w.kind),
        None => GroupVersionKind::gvk("", &w.api_version, &w.kind),
    }
}

impl WorkloadWatches {
    pub fn new(client: Client, scope: Option<String>) -> Self {
        WorkloadWatches {
            client,
            scope,
            kinds: Mutex::default(),
            wiring: OnceLock::new(),
        }
    }

    /// Connects the watches to the identity cache and the identity controller's trigger.
    pub fn wire(
        &self,
        identities: IndexedStore<MachineIdentity>,
        trigger: UnboundedSender<ObjectRef<MachineIdentity>>,
    ) {
        let _ = self.wiring.set(Wiring {
            identities,
            trigger,
        });
    }

    /// Whether the workload `w` exists in `namespace`. The first question about a kind starts its
    /// watch; until it has listed, the answer is Unknown (and the identity is looked at again once
    /// it has).
    pub fn presence(self: &Arc<Self>, namespace: &str, w: &WorkloadRef) -> Presence {
        let key = kind_key(w);
        let watch = {
            let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
            match kinds.get(&key) {
                Some(k) => k.clone(),
                None => {
                    let k = Arc::new(KindWatch::default());
                    kinds.insert(key.clone(), k.clone());
                    tokio::spawn(self.clone().watch_kind(w.clone(), k.clone()));
                    k
                }
            }
        };
        if let Some((reason, message)) = watch
            .problem
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Presence::Unknown { reason, message };
        }
        if !watch.synced.load(Ordering::Acquire) {
            return Presence::Unknown {
                reason: WATCH_STARTING.into(),
                message: format!("the operator is starting to watch {key}"),
            };
        }
        let names = watch.names.read().unwrap_or_else(|e| e.into_inner());
        match names.contains(&format!("{namespace}/{}", w.name)) {
            true => Presence::Present,
            false => Presence::Missing,
        }
    }

    /// Asks the identities that name a workload of this kind (in `only`, when given: a
    /// `namespace/name`) to be looked at again.
    fn trigger(&self, w: &WorkloadRef, only: Option<&str>) {
        let Some(wiring) = self.wiring.get() else {
            return;
        };
        let key = kind_key(w);
        // One workload's change looks at its namespace's identities only.
        let identities = match only.and_then(|o| o.split_once('/')) {
            Some((ns, _)) => wiring.identities.in_namespace(ns),
            None => wiring.identities.state(),
        };
        for mi in identities {
            let Some(r) = mi.spec.workload_ref.as_ref() else {
                continue;
            };
            let ns = mi.namespace().unwrap_or_default();
            if kind_key(r) != key || only.is_some_and(|o| o != format!("{ns}/{}", r.name)) {
                continue;
            }
            let _ = wiring.trigger.send(ObjectRef::from_obj(mi.as_ref()));
        }
    }

    fn set_problem(&self, w: &WorkloadRef, watch: &KindWatch, problem: Option<(String, String)>) {
        let mut p = watch.problem.write().unwrap_or_else(|e| e.into_inner());
        if *p != problem {
            *p = problem;
            drop(p);
            self.trigger(w, None);
        }
    }

    /// Discovers the kind, then keeps `watch` current from a metadata-only watch of it.
    async fn watch_kind(self: Arc<Self>, w: WorkloadRef, watch: Arc<KindWatch>) {
        let Some(resource) = self.discover(&w, &watch).await else {
            return;
        };
        self.set_problem(&w, &watch, None);
        info!(kind = %kind_key(&w), "watching workloads");
        let api: Api<PartialObjectMeta<DynamicObject>> = match &self.scope {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        let mut events = watcher(api, watcher::Config::default())
            .backoff(crate::kube_api::watch_backoff())
            .boxed();
        let mut relist: Option<HashSet<String>> = None;
        while let Some(ev) = events.next().await {
            self.on_event(&w, &watch, &mut relist, ev);
        }
    }

    /// The API resource of the workload's kind. A kind that is not served (a typo, or a CRD not
    /// installed yet) is looked up again now and then: identities naming it are never retired
    /// for it. None for a cluster-scoped kind (a problem for good).
    async fn discover(&self, w: &WorkloadRef, watch: &KindWatch) -> Option<ApiResource> {
        let key = kind_key(w);
        loop {
            match pinned_kind(&self.client, &gvk_of(w)).await {
                Ok((resource, caps)) if caps.scope == Scope::Namespaced => return Some(resource),
                Ok(_) => {
                    let message = format!(
                        "{key} is cluster-scoped; workloadRef names an object in the identity's namespace"
                    );
                    self.set_problem(w, watch, Some((KIND_UNKNOWN.into(), message)));
                    return None;
                }
                Err(e) => {
                    let message = format!("{key} is not served by this cluster: {e}");
                    self.set_problem(w, watch, Some((KIND_UNKNOWN.into(), message)));
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }
        }
    }

    /// Keeps `watch` current with one event of the kind's watch (`relist`: the names a relist in
    /// progress has shown), and asks the identities it concerns to be looked at again.
    fn on_event(
        &self,
        w: &WorkloadRef,
        watch: &KindWatch,
        relist: &mut Option<HashSet<String>>,
        ev: Result<watcher::Event<PartialObjectMeta<DynamicObject>>, watcher::Error>,
    ) {
        let name_of = |o: &PartialObjectMeta<DynamicObject>| {
            format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
        };
        let names = || watch.names.write().unwrap_or_else(|e| e.into_inner());
        // The watch works again (it resumed without a relist after an error).
        let working = || {
            if watch.synced.load(Ordering::Acquire) {
                self.set_problem(w, watch, None);
            }
        };
        match ev {
            Ok(watcher::Event::Init) => *relist = Some(HashSet::new()),
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(r) = relist.as_mut() {
                    r.insert(name_of(&o));
                }
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(r) = relist.take() {
                    *names() = r;
                }
                watch.synced.store(true, Ordering::Release);
                self.set_problem(w, watch, None);
                debug!(kind = %kind_key(w), "workload watch listed");
                self.trigger(w, None);
            }
            Ok(watcher::Event::Apply(o)) => {
                working();
                let name = name_of(&o);
                if names().insert(name.clone()) {
                    self.trigger(w, Some(&name));
                }
            }
            Ok(watcher::Event::Delete(o)) => {
                working();
                let name = name_of(&o);
                names().remove(&name);
                self.trigger(w, Some(&name));
            }
            Err(e) => {
                let key = kind_key(w);
                warn!(kind = %key, error = %e, "workload watch failing");
                let message = format!("cannot watch {key}: {e}");
                self.set_problem(w, watch, Some((WATCH_FAILING.into(), message)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_split_into_group_and_version() {
        let w = |v: &str, k: &str| WorkloadRef {
            api_version: v.into(),
            kind: k.into(),
            name: "x".into(),
            grace_period: None,
        };
        let d = gvk_of(&w("apps/v1", "Deployment"));
        assert_eq!((d.group.as_str(), d.version.as_str()), ("apps", "v1"));
        let sa = gvk_of(&w("v1", "ServiceAccount"));
        assert_eq!(
            (sa.group.as_str(), sa.version.as_str(), sa.kind.as_str()),
            ("", "v1", "ServiceAccount")
        );
        assert_eq!(kind_key(&w("apps/v1", "Deployment")), "apps/v1/Deployment");
    }
}
