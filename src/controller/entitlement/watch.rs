//! The Entitlement watch: feeds the Entitlement cache, and maps each change to the identities
//! whose grants it may change, so exactly those are reconciled (no polling).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc::UnboundedSender;

use crate::cache::{IndexedStore, IndexedWriter};
use crate::health::Health;
use nhi_api::{Entitlement, MachineIdentity};
use nhi_core::entitle::resolve::EntitlementFacts;

/// An identity as the mapping sees it.
pub struct IdentityView<'a> {
    pub name: &'a str,
    pub labels: &'a std::collections::BTreeMap<String, String>,
    /// Whether its current certificate carries any grant (`status.entitlements`).
    pub carries_grants: bool,
}

/// The identities to reconcile after an Entitlement changed or went away: those it selects now
/// (they may gain grants), those it selected when last seen (they may lose them), and, since the
/// last selection may not be known (a label-selected identity not cached yet at start-up), every
/// identity that carries a grant at all. An identity whose grants did not change is reconciled
/// without being re-issued.
pub fn identities_to_recheck<'a>(
    current: Option<&EntitlementFacts>,
    previously_selected: &BTreeSet<String>,
    identities: impl Iterator<Item = IdentityView<'a>>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut selected = BTreeSet::new();
    let mut recheck = previously_selected.clone();
    for mi in identities {
        let selects = current.is_some_and(|e| e.selects(mi.name, None, mi.labels).unwrap_or(false));
        if selects {
            selected.insert(mi.name.to_string());
        }
        if selects || mi.carries_grants {
            recheck.insert(mi.name.to_string());
        }
    }
    if let Some(e) = current {
        // Named subjects that are not cached yet are reconciled too (they may just be created).
        recheck.extend(e.names.iter().cloned());
        selected.extend(e.names.iter().cloned());
    }
    (recheck, selected)
}

/// The Entitlements whose status may change when `mi` changes (a new certificate in its status,
/// new labels) or goes away: those of its namespace that select it or list it as bound.
pub fn entitlements_to_refresh(
    mi: &MachineIdentity,
    entitlements: &[Arc<Entitlement>],
) -> Vec<ObjectRef<Entitlement>> {
    let namespace = mi.metadata.namespace.as_deref();
    let name = mi.metadata.name.as_deref().unwrap_or_default();
    entitlements
        .iter()
        .filter(|e| e.metadata.namespace.as_deref() == namespace)
        .filter(|e| {
            let listed = e
                .status
                .as_ref()
                .is_some_and(|s| s.bindings.iter().any(|b| b.identity == name));
            let selects = EntitlementFacts::from_resource(e)
                .is_ok_and(|f| f.selects(name, None, mi.labels()).unwrap_or(false));
            listed || selects
        })
        .map(|e| ObjectRef::from_obj(e.as_ref()))
        .collect()
}

/// What the mapping remembers of an Entitlement (by uid) from when it was last seen.
struct Remembered {
    namespace: String,
    generation: Option<i64>,
    selected: BTreeSet<String>,
}

/// The mapping's memory: each Entitlement's last selection, and which ones a relist has shown.
#[derive(Default)]
struct SelectionMemory {
    entries: HashMap<String, Remembered>,
    relisted: Option<BTreeSet<String>>,
}

/// Maps one watch event to the identities to reconcile, as (namespace, names) batches.
fn map_event(
    memory: &mut SelectionMemory,
    ev: &watcher::Event<Entitlement>,
    identities: &IndexedStore<MachineIdentity>,
) -> Vec<(String, BTreeSet<String>)> {
    let (ent, gone) = match ev {
        watcher::Event::Init => {
            memory.relisted = Some(BTreeSet::new());
            return vec![];
        }
        watcher::Event::InitDone => return vanished_during_relist(memory, identities),
        watcher::Event::InitApply(e) => {
            if let (Some(seen), Some(uid)) = (memory.relisted.as_mut(), e.metadata.uid.as_ref()) {
                seen.insert(uid.clone());
            }
            (e, false)
        }
        watcher::Event::Apply(e) => (e, false),
        watcher::Event::Delete(e) => (e, true),
    };
    let Some(namespace) = ent.namespace() else {
        return vec![];
    };
    let uid = ent.metadata.uid.clone().unwrap_or_default();
    // Our own status writes change nothing the identities depend on.
    let unchanged = !gone
        && matches!(ev, watcher::Event::Apply(_))
        && memory
            .entries
            .get(&uid)
            .is_some_and(|r| r.generation == ent.metadata.generation);
    if unchanged {
        return vec![];
    }
    let facts = (!gone)
        .then(|| EntitlementFacts::from_resource(ent).ok())
        .flatten();
    let previous = memory
        .entries
        .remove(&uid)
        .map(|r| r.selected)
        .unwrap_or_default();
    let views = carriers(identities, &namespace);
    let (recheck, selected) = identities_to_recheck(
        facts.as_ref(),
        &previous,
        views.iter().map(IdentityView::from),
    );
    if !gone {
        memory.entries.insert(
            uid,
            Remembered {
                namespace: namespace.clone(),
                generation: ent.metadata.generation,
                selected,
            },
        );
    }
    vec![(namespace, recheck)]
}

/// A relist completed: the Entitlements it did not show were deleted while the watch was down (a
/// relist shows no Delete for them); the identities they selected are rechecked.
fn vanished_during_relist(
    memory: &mut SelectionMemory,
    identities: &IndexedStore<MachineIdentity>,
) -> Vec<(String, BTreeSet<String>)> {
    let Some(seen) = memory.relisted.take() else {
        return vec![];
    };
    let vanished: Vec<String> = memory
        .entries
        .keys()
        .filter(|uid| !seen.contains(*uid))
        .cloned()
        .collect();
    vanished
        .into_iter()
        .filter_map(|uid| memory.entries.remove(&uid))
        .map(|r| {
            let views = carriers(identities, &r.namespace);
            let (recheck, _) =
                identities_to_recheck(None, &r.selected, views.iter().map(IdentityView::from));
            (r.namespace, recheck)
        })
        .collect()
}

/// The cached identities of a namespace.
fn carriers(
    identities: &IndexedStore<MachineIdentity>,
    namespace: &str,
) -> Vec<Arc<MachineIdentity>> {
    identities.in_namespace(namespace)
}

impl<'a> From<&'a Arc<MachineIdentity>> for IdentityView<'a> {
    fn from(mi: &'a Arc<MachineIdentity>) -> Self {
        IdentityView {
            name: mi.metadata.name.as_deref().unwrap_or_default(),
            labels: mi.labels(),
            carries_grants: mi
                .status
                .as_ref()
                .is_some_and(|s| !s.entitlements.is_empty()),
        }
    }
}

/// Watches Entitlements into `writer`'s cache. Every change of an Entitlement's spec, and every
/// deletion (seen or missed while the watch was down), is sent, as the identities it may affect,
/// to `to_identities`; the stream yields the changed Entitlements themselves.
pub fn entitlement_stream(
    client: Client,
    namespace: Option<&str>,
    mut writer: IndexedWriter<Entitlement>,
    identities: IndexedStore<MachineIdentity>,
    to_identities: UnboundedSender<ObjectRef<MachineIdentity>>,
    health: Arc<Health>,
) -> impl Stream<Item = Result<Entitlement, watcher::Error>> + Send + 'static {
    let api: Api<Entitlement> = crate::kube_api::scoped_api(client.clone(), namespace);
    let memory = Mutex::new(SelectionMemory::default());
    watcher(api, watcher::Config::default())
        .backoff(crate::kube_api::watch_backoff())
        .modify(|e: &mut Entitlement| e.metadata.managed_fields = None)
        .map(move |ev| {
            if let Ok(ev) = &ev {
                writer.apply(ev);
            }
            ev
        })
        .inspect(move |ev| {
            let Ok(ev) = ev else {
                return;
            };
            if let watcher::Event::InitDone = ev {
                health.entitlements_synced.store(true, Ordering::Relaxed);
            }
            // Kubernetes permissions go with their Entitlement at once, not when the garbage
            // collector gets to them (the owner reference is the fallback).
            if let watcher::Event::Delete(e) = ev {
                let had = e.spec.kubernetes.is_some()
                    || e.status.as_ref().is_some_and(|s| s.kubernetes.is_some());
                if let (true, Some(ns)) = (had, e.namespace()) {
                    let (client, name, uid) = (client.clone(), e.name_any(), e.metadata.uid.clone());
                    tokio::spawn(async move {
                        // Only the objects this very Entitlement owns (not a re-created one's).
                        let owner = uid.as_deref().unwrap_or("-");
                        let removal = super::rbac::remove_rbac(&client, &ns, &name, owner);
                        if let Err(err) = removal.await {
                            tracing::warn!(namespace = %ns, entitlement = %name, error = %err, "removing the RBAC of a deleted Entitlement failed; the garbage collector will");
                        }
                    });
                }
            }
            let Ok(mut memory) = memory.lock() else {
                return;
            };
            for (namespace, names) in map_event(&mut memory, ev, &identities) {
                for name in names {
                    // A closed channel means the identity controller has stopped: shutting down.
                    let _ = to_identities.send(ObjectRef::new(&name).within(&namespace));
                }
            }
        })
        .touched_objects()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn facts(names: &[&str], label: Option<(&str, &str)>) -> EntitlementFacts {
        EntitlementFacts {
            name: "e".into(),
            names: names.iter().map(|s| s.to_string()).collect(),
            pins: Default::default(),
            selector: label.map(|(k, v)| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some([(k.to_string(), v.to_string())].into()),
                    match_expressions: None,
                }
            }),
            grants: ["a.b".to_string()].into(),
            not_before: None,
            expires_at: None,
            expiry_lead: time::Duration::ZERO,
        }
    }

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn maps_a_change_to_the_identities_it_may_affect_and_no_others() {
        let pay: BTreeMap<String, String> = [("team".to_string(), "pay".to_string())].into();
        let ops: BTreeMap<String, String> = [("team".to_string(), "ops".to_string())].into();
        let views = || {
            vec![
                IdentityView {
                    name: "api",
                    labels: &pay,
                    carries_grants: false,
                },
                IdentityView {
                    name: "web",
                    labels: &ops,
                    carries_grants: false,
                },
                IdentityView {
                    name: "old",
                    labels: &ops,
                    carries_grants: true,
                },
                IdentityView {
                    name: "idle",
                    labels: &ops,
                    carries_grants: false,
                },
            ]
            .into_iter()
        };
        let by_label = facts(&[], Some(("team", "pay")));
        let (recheck, selected) = identities_to_recheck(Some(&by_label), &set(&[]), views());
        assert_eq!(selected, set(&["api"]));
        assert_eq!(recheck, set(&["api", "old"]));
        // The selector moves from pay to ops: the previously selected identity is rechecked.
        let moved = facts(&[], Some(("team", "ops")));
        let (recheck, selected) = identities_to_recheck(Some(&moved), &set(&["api"]), views());
        assert_eq!(selected, set(&["idle", "old", "web"]));
        assert!(recheck.contains("api"));
        // Deleted: what it selected, and whoever carries grants.
        let (recheck, _) = identities_to_recheck(None, &set(&["web"]), views());
        assert_eq!(recheck, set(&["old", "web"]));
        // A named subject not cached yet is still rechecked.
        let named = facts(&["new"], None);
        let (recheck, _) = identities_to_recheck(Some(&named), &set(&[]), views());
        assert_eq!(recheck, set(&["new", "old"]));
    }

    fn entitlement(uid: &str, generation: i64, names: &[&str]) -> Entitlement {
        let mut e: Entitlement = serde_json::from_value(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": format!("e-{uid}"), "namespace": "ns", "uid": uid, "generation": generation},
            "spec": {"subjects": {"names": names}, "grants": ["a.b"], "justification": "j"}
        }))
        .unwrap();
        e.status = None;
        e
    }

    fn names(batches: Vec<(String, BTreeSet<String>)>) -> BTreeSet<String> {
        batches.into_iter().flat_map(|(_, n)| n).collect()
    }

    #[test]
    fn status_writes_map_to_nothing_and_missed_deletions_are_caught_at_relist() {
        let (store, _writer) = crate::cache::indexed_store::<MachineIdentity>();
        let mut memory = SelectionMemory::default();
        let e1 = entitlement("u1", 1, &["api"]);
        assert_eq!(
            names(map_event(
                &mut memory,
                &watcher::Event::Apply(e1.clone()),
                &store
            )),
            set(&["api"])
        );
        // The same generation again (our own status write): nothing to do.
        assert!(map_event(&mut memory, &watcher::Event::Apply(e1.clone()), &store).is_empty());
        // A spec change: the old and the new subjects.
        let e1b = entitlement("u1", 2, &["web"]);
        assert_eq!(
            names(map_event(&mut memory, &watcher::Event::Apply(e1b), &store)),
            set(&["api", "web"])
        );
        // A relist that no longer shows u1: its subjects are rechecked.
        map_event(&mut memory, &watcher::Event::Init, &store);
        let e2 = entitlement("u2", 1, &["db"]);
        assert_eq!(
            names(map_event(
                &mut memory,
                &watcher::Event::InitApply(e2),
                &store
            )),
            set(&["db"])
        );
        assert_eq!(
            names(map_event(&mut memory, &watcher::Event::InitDone, &store)),
            set(&["web"])
        );
        assert!(!memory.entries.contains_key("u1"));
    }
}
