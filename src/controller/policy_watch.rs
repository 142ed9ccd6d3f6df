//! The tenant policy as the controllers see it: the IdentityPolicy and Namespace caches, the
//! effective policy of a namespace read from them, and the watch that re-checks what a change
//! affects (every identity and Entitlement after a policy change; a namespace's after its labels
//! changed) within seconds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::Notify;
use tokio::sync::mpsc::UnboundedSender;
use tracing::info;

use crate::cache::IndexedStore;
use crate::health::Health;
use nhi_api::{Entitlement, IdentityPolicy, MachineIdentity};
use nhi_core::policy::{EffectivePolicy, effective_policy};

/// The label every namespace carries with its own name (set by the apiserver).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// The IdentityPolicy and Namespace caches, and the cluster's DNS domain.
#[derive(Clone)]
pub struct PolicyView {
    pub policies: Store<IdentityPolicy>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub cluster_domain: String,
    /// Health flags: `policies_synced` says both caches have completed their first list.
    pub health: Arc<Health>,
}

impl PolicyView {
    /// The policy of `namespace` now, and whether its labels are known. A namespace not cached
    /// yet (just created) is taken with only its name label, and the caller waits for it: what
    /// it holds is decided once its labels are seen.
    pub fn effective(&self, namespace: &str) -> (EffectivePolicy, bool) {
        let key = ObjectRef::<PartialObjectMeta<Namespace>>::new(namespace);
        let cached = self.namespaces.get(&key);
        let labels = match &cached {
            Some(ns) => ns.labels().clone(),
            None => BTreeMap::from([(NAMESPACE_NAME_LABEL.to_string(), namespace.to_string())]),
        };
        // The cached policies, by reference: nothing is copied but the specs that apply.
        let policies = self.policies.state();
        let policies = policies.iter().map(|p| p.as_ref());
        let policy = effective_policy(namespace, &labels, policies, &self.cluster_domain);
        (policy, cached.is_some())
    }

    /// Whether both caches have completed their first list.
    pub fn is_synced(&self) -> bool {
        self.health.policies_synced.load(Ordering::Relaxed)
    }
}

/// The generation each policy was last seen at: a status write is no change. A re-list (after
/// the watch was cut) is compared with it, and what changed or went meanwhile counts once the
/// re-list is complete.
#[derive(Default)]
struct PolicyGenerations {
    seen: HashMap<String, Option<i64>>,
    /// The policies the current re-list has shown, and whether one is new or changed.
    relisted: std::collections::HashSet<String>,
    relist_changed: bool,
}

impl PolicyGenerations {
    /// Takes in one watch event; whether what every namespace may claim may have changed.
    fn observe(&mut self, ev: &watcher::Event<IdentityPolicy>) -> bool {
        match ev {
            watcher::Event::Init => {
                self.relisted.clear();
                self.relist_changed = false;
                false
            }
            watcher::Event::InitApply(p) => {
                self.relisted.insert(p.name_any());
                let before = self.seen.insert(p.name_any(), p.metadata.generation);
                self.relist_changed |= before != Some(p.metadata.generation);
                false
            }
            watcher::Event::InitDone => {
                let before = self.seen.len();
                let relisted = &self.relisted;
                self.seen.retain(|name, _| relisted.contains(name));
                self.relist_changed || self.seen.len() != before
            }
            watcher::Event::Apply(p) => {
                let before = self.seen.insert(p.name_any(), p.metadata.generation);
                before != Some(p.metadata.generation)
            }
            watcher::Event::Delete(p) => self.seen.remove(&p.name_any()).is_some(),
        }
    }
}

/// Where the watch sends what a change affects.
pub struct Recheck {
    pub identities: IndexedStore<MachineIdentity>,
    pub entitlements: IndexedStore<Entitlement>,
    pub to_identities: UnboundedSender<ObjectRef<MachineIdentity>>,
    pub to_entitlements: UnboundedSender<ObjectRef<Entitlement>>,
}

impl Recheck {
    /// Sends every identity and Entitlement (of `namespace`, or all) to be reconciled.
    fn send(&self, namespace: Option<&str>) {
        let (identities, entitlements) = match namespace {
            Some(ns) => (
                self.identities.in_namespace(ns),
                self.entitlements.in_namespace(ns),
            ),
            None => (self.identities.state(), self.entitlements.state()),
        };
        for mi in identities {
            let _ = self.to_identities.send(ObjectRef::from_obj(mi.as_ref()));
        }
        for ent in entitlements {
            let _ = self.to_entitlements.send(ObjectRef::from_obj(ent.as_ref()));
        }
    }
}

/// Creates the caches of a [`PolicyView`] and the task that fills them; `scope` is the one
/// namespace watched, if any.
pub fn policy_view(
    client: Client,
    scope: Option<String>,
    cluster_domain: String,
    health: Arc<Health>,
) -> (PolicyView, PolicyWatch) {
    let (policies, policy_writer) = reflector::store();
    let (namespaces, namespace_writer) = reflector::store();
    let view = PolicyView {
        policies,
        namespaces,
        cluster_domain,
        health: health.clone(),
    };
    let watch = PolicyWatch {
        client,
        scope,
        policy_writer,
        namespace_writer,
        health,
        changed: Arc::new(Notify::new()),
    };
    (view, watch)
}

/// The task that fills a [`PolicyView`]'s caches.
pub struct PolicyWatch {
    client: Client,
    scope: Option<String>,
    policy_writer: reflector::store::Writer<IdentityPolicy>,
    namespace_writer: reflector::store::Writer<PartialObjectMeta<Namespace>>,
    health: Arc<Health>,
    /// Notified when what the policies' statuses say may have changed.
    changed: Arc<Notify>,
}

impl PolicyWatch {
    /// What is notified when the policies' statuses may need writing.
    pub fn changes(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// Watches until shutdown; once both caches are complete, each later change is sent to
    /// `recheck`.
    pub async fn run(self, recheck: Recheck) {
        let policies_synced = AtomicBool::new(false);
        let namespaces_synced = AtomicBool::new(false);
        let synced = &self.health.policies_synced;
        let mark = |flag: &AtomicBool| {
            flag.store(true, Ordering::Relaxed);
            let both = policies_synced.load(Ordering::Relaxed)
                && namespaces_synced.load(Ordering::Relaxed);
            if both && !synced.swap(true, Ordering::Relaxed) {
                info!("policy caches synced");
            }
        };
        let policy_api: Api<IdentityPolicy> = Api::all(self.client.clone());
        let mut generations = PolicyGenerations::default();
        let changed = &self.changed;
        let policy_events = watcher(policy_api, watcher::Config::default())
            .backoff(crate::kube_api::watch_backoff())
            .modify(|p: &mut IdentityPolicy| p.metadata.managed_fields = None)
            .reflect(self.policy_writer)
            .for_each(|ev| {
                if let Ok(ev) = ev {
                    let recheck_all = generations.observe(&ev);
                    if recheck_all && synced.load(Ordering::Relaxed) {
                        recheck.send(None);
                    }
                    if matches!(ev, watcher::Event::InitDone) {
                        mark(&policies_synced);
                    }
                    if recheck_all || matches!(ev, watcher::Event::InitDone) {
                        changed.notify_one();
                    }
                }
                futures::future::ready(())
            });
        let namespace_api: Api<PartialObjectMeta<Namespace>> = Api::all(self.client.clone());
        let config = match &self.scope {
            Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
            None => watcher::Config::default(),
        };
        let mut seen_labels: HashMap<String, BTreeMap<String, String>> = HashMap::new();
        let namespace_events = watcher(namespace_api, config)
            .backoff(crate::kube_api::watch_backoff())
            .modify(|n: &mut PartialObjectMeta<Namespace>| n.metadata.managed_fields = None)
            .reflect(self.namespace_writer)
            .for_each(|ev| {
                match ev {
                    Ok(watcher::Event::InitDone) => mark(&namespaces_synced),
                    Ok(watcher::Event::InitApply(ns) | watcher::Event::Apply(ns)) => {
                        let relabelled = seen_labels.insert(ns.name_any(), ns.labels().clone())
                            != Some(ns.labels().clone());
                        if relabelled && synced.load(Ordering::Relaxed) {
                            recheck.send(Some(&ns.name_any()));
                            changed.notify_one();
                        }
                    }
                    Ok(watcher::Event::Delete(ns)) => {
                        seen_labels.remove(&ns.name_any());
                        changed.notify_one();
                    }
                    _ => {}
                }
                futures::future::ready(())
            });
        tokio::join!(policy_events, namespace_events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, generation: i64) -> IdentityPolicy {
        let mut p = IdentityPolicy::new(name, nhi_core::policy::effective::built_in_default());
        p.metadata.generation = Some(generation);
        p
    }

    #[test]
    fn a_status_write_is_no_change_and_a_relist_counts_what_changed_or_went() {
        use watcher::Event::*;
        let mut g = PolicyGenerations::default();
        for ev in [Init, InitApply(policy("a", 1)), InitApply(policy("b", 1))] {
            assert!(!g.observe(&ev));
        }
        assert!(g.observe(&InitDone), "the first list is new");
        assert!(!g.observe(&Apply(policy("a", 1))), "a status write");
        assert!(g.observe(&Apply(policy("a", 2))), "a spec change");
        // The watch is cut; meanwhile b went away: the re-list says so.
        for ev in [Init, InitApply(policy("a", 2))] {
            assert!(!g.observe(&ev));
        }
        assert!(g.observe(&InitDone));
        // A re-list showing nothing new is no change.
        for ev in [Init, InitApply(policy("a", 2))] {
            g.observe(&ev);
        }
        assert!(!g.observe(&InitDone));
        assert!(g.observe(&Delete(policy("a", 2))));
    }
}
