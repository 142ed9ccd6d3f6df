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
        let policies: Vec<IdentityPolicy> = self
            .policies
            .state()
            .iter()
            .map(|p| (**p).clone())
            .collect();
        let policy = effective_policy(namespace, &labels, &policies, &self.cluster_domain);
        (policy, cached.is_some())
    }

    /// Whether both caches have completed their first list.
    pub fn is_synced(&self) -> bool {
        self.health.policies_synced.load(Ordering::Relaxed)
    }
}

/// What a re-list of the policies has shown so far.
#[derive(Default)]
struct Relist {
    seen: std::collections::HashSet<String>,
    /// Some policy is new or at another generation than when last seen.
    changed: bool,
}

/// Where the watch sends what a change affects.
pub struct Recheck {
    pub identities: Store<MachineIdentity>,
    pub entitlements: Store<Entitlement>,
    pub to_identities: UnboundedSender<ObjectRef<MachineIdentity>>,
    pub to_entitlements: UnboundedSender<ObjectRef<Entitlement>>,
}

impl Recheck {
    /// Sends every identity and Entitlement (of `namespace`, or all) to be reconciled.
    fn send(&self, namespace: Option<&str>) {
        let within = |ns: Option<String>| namespace.is_none() || ns.as_deref() == namespace;
        for mi in self.identities.state() {
            if within(mi.namespace()) {
                let _ = self.to_identities.send(ObjectRef::from_obj(mi.as_ref()));
            }
        }
        for ent in self.entitlements.state() {
            if within(ent.namespace()) {
                let _ = self.to_entitlements.send(ObjectRef::from_obj(ent.as_ref()));
            }
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
        // The generation each policy was last seen at: a status write is no change. A re-list
        // (after the watch was cut) is compared with it: what changed or went meanwhile is
        // re-checked once it is complete.
        let mut seen_generations: HashMap<String, Option<i64>> = HashMap::new();
        let mut relist = Relist::default();
        let changed = &self.changed;
        let policy_events = watcher(policy_api, watcher::Config::default())
            .default_backoff()
            .modify(|p: &mut IdentityPolicy| p.metadata.managed_fields = None)
            .reflect(self.policy_writer)
            .for_each(|ev| {
                match ev {
                    Ok(watcher::Event::Init) => relist = Relist::default(),
                    Ok(watcher::Event::InitDone) => {
                        let gone: Vec<String> = seen_generations
                            .keys()
                            .filter(|name| !relist.seen.contains(*name))
                            .cloned()
                            .collect();
                        for name in &gone {
                            seen_generations.remove(name);
                        }
                        if (relist.changed || !gone.is_empty()) && synced.load(Ordering::Relaxed) {
                            recheck.send(None);
                        }
                        mark(&policies_synced);
                        changed.notify_one();
                    }
                    Ok(watcher::Event::InitApply(p)) => {
                        relist.seen.insert(p.name_any());
                        let before = seen_generations.insert(p.name_any(), p.metadata.generation);
                        relist.changed |= before != Some(p.metadata.generation);
                    }
                    // A policy's spec changed (or it went): everything may be affected.
                    Ok(watcher::Event::Apply(p)) => {
                        let before = seen_generations.insert(p.name_any(), p.metadata.generation);
                        if before != Some(p.metadata.generation) && synced.load(Ordering::Relaxed) {
                            recheck.send(None);
                            changed.notify_one();
                        }
                    }
                    Ok(watcher::Event::Delete(p)) => {
                        seen_generations.remove(&p.name_any());
                        if synced.load(Ordering::Relaxed) {
                            recheck.send(None);
                        }
                    }
                    _ => {}
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
            .default_backoff()
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
