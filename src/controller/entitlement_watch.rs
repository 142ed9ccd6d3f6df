//! The Entitlement watch: feeds the Entitlement cache, and maps each change to the identities
//! whose grants it may change, so exactly those are reconciled (no polling).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{Entitlement, MachineIdentity};
use crate::entitle::resolve::EntitlementFacts;
use crate::http::Health;

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
        let selects = current.is_some_and(|e| e.selects(mi.name, mi.labels).unwrap_or(false));
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

/// What each Entitlement (by uid) selected when last seen.
#[derive(Default)]
struct SelectionMemory(Mutex<HashMap<String, BTreeSet<String>>>);

impl SelectionMemory {
    fn replace(&self, uid: &str, selected: Option<BTreeSet<String>>) -> BTreeSet<String> {
        let Ok(mut m) = self.0.lock() else {
            return BTreeSet::new();
        };
        match selected {
            Some(s) => m.insert(uid.to_string(), s),
            None => m.remove(uid),
        }
        .unwrap_or_default()
    }
}

/// Watches Entitlements into `writer`'s cache. Every change is sent, as the identities it may
/// affect, to `to_identities`; the stream yields the changed Entitlements themselves.
pub fn entitlement_stream(
    client: Client,
    namespace: Option<&str>,
    writer: Writer<Entitlement>,
    identities: Store<MachineIdentity>,
    to_identities: UnboundedSender<ObjectRef<MachineIdentity>>,
    health: Arc<Health>,
) -> impl Stream<Item = Result<Entitlement, watcher::Error>> + Send + 'static {
    let api: Api<Entitlement> = super::scoped_api(client, namespace);
    let memory = SelectionMemory::default();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|e: &mut Entitlement| e.metadata.managed_fields = None)
        .reflect(writer)
        .inspect(move |ev| {
            let (ent, gone) = match ev {
                Ok(watcher::Event::InitDone) => {
                    health.entitlements_synced.store(true, Ordering::Relaxed);
                    return;
                }
                Ok(watcher::Event::Apply(e)) | Ok(watcher::Event::InitApply(e)) => (e, false),
                Ok(watcher::Event::Delete(e)) => (e, true),
                _ => return,
            };
            let Some(namespace) = ent.namespace() else {
                return;
            };
            let uid = ent.metadata.uid.clone().unwrap_or_default();
            let facts = (!gone)
                .then(|| EntitlementFacts::from_resource(ent).ok())
                .flatten();
            let cached = identities.state();
            let views = cached
                .iter()
                .filter(|mi| mi.metadata.namespace.as_deref() == Some(namespace.as_str()))
                .map(|mi| IdentityView {
                    name: mi.metadata.name.as_deref().unwrap_or_default(),
                    labels: mi.labels(),
                    carries_grants: mi
                        .status
                        .as_ref()
                        .is_some_and(|s| !s.entitlements.is_empty()),
                });
            let previous = memory.replace(&uid, None);
            let (recheck, selected) = identities_to_recheck(facts.as_ref(), &previous, views);
            if !gone {
                memory.replace(&uid, Some(selected));
            }
            for name in recheck {
                // A closed channel means the identity controller has stopped: shutting down.
                let _ = to_identities.send(ObjectRef::new(&name).within(&namespace));
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
            selector: label.map(|(k, v)| {
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: Some([(k.to_string(), v.to_string())].into()),
                    match_expressions: None,
                }
            }),
            grants: ["a.b".to_string()].into(),
            not_before: None,
            expires_at: None,
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
}
