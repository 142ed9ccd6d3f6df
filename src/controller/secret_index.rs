//! What the operator knows of its identity Secrets without reading them: per Secret, its
//! resourceVersion and the uid of the identity controlling it, kept from the metadata watch. A
//! compact index rather than a cache of objects: at 10,000 identities it is a tenth of the memory.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;

use super::compact_text::CompactText;

/// One identity Secret as the watch last saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersion {
    pub resource_version: String,
    /// The uid of the controlling owner, if any.
    pub controller_uid: Option<String>,
    /// The fingerprint of the trust bundle in its `ca.crt` (the `nhi.dev/trust-bundle`
    /// annotation), if it carries one.
    pub trust_bundle: Option<String>,
}

/// One identity Secret as the index keeps it: a resourceVersion and a uid in binary form, and
/// the trust bundle fingerprint shared by every Secret that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    resource_version: CompactText,
    controller_uid: Option<CompactText>,
    trust_bundle: Option<Arc<str>>,
}

impl Entry {
    fn version(&self) -> SecretVersion {
        SecretVersion {
            resource_version: self.resource_version.to_string(),
            controller_uid: self.controller_uid.as_ref().map(ToString::to_string),
            trust_bundle: self.trust_bundle.as_deref().map(str::to_string),
        }
    }
}

type Entries = HashMap<Box<str>, Entry>;

#[derive(Default)]
struct State {
    live: Entries,
    /// Entries of a relist in progress; they replace `live` when it completes.
    relisting: Option<Entries>,
    /// The trust bundle fingerprints in use (one, two during a CA rotation), each kept once.
    fingerprints: Vec<Arc<str>>,
}

impl State {
    /// The index entry for a Secret's metadata, under its `namespace/name`.
    fn entry(&mut self, meta: &PartialObjectMeta<Secret>) -> Option<(Box<str>, Entry)> {
        let m = &meta.metadata;
        let k = key(m.namespace.as_deref()?, m.name.as_deref()?);
        let controller_uid = m
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true))
            .map(|r| CompactText::new(&r.uid));
        let trust_bundle = m
            .annotations
            .as_ref()
            .and_then(|a| a.get(nhi_core::labels::TRUST_BUNDLE))
            .map(|fp| self.fingerprint(fp));
        let entry = Entry {
            resource_version: CompactText::new(m.resource_version.as_deref().unwrap_or_default()),
            controller_uid,
            trust_bundle,
        };
        Some((k, entry))
    }

    /// `fingerprint`, shared with the Secrets already carrying it; fingerprints no Secret
    /// carries any more are let go.
    fn fingerprint(&mut self, fingerprint: &str) -> Arc<str> {
        if let Some(f) = self.fingerprints.iter().find(|f| &***f == fingerprint) {
            return f.clone();
        }
        self.fingerprints.retain(|f| Arc::strong_count(f) > 1);
        let f: Arc<str> = fingerprint.into();
        self.fingerprints.push(f.clone());
        f
    }
}

/// The index, shared between the watch (writer) and the reconcilers (readers).
#[derive(Default)]
pub struct SecretIndex {
    state: RwLock<State>,
}

fn key(namespace: &str, name: &str) -> Box<str> {
    format!("{namespace}/{name}").into_boxed_str()
}

impl SecretIndex {
    /// The Secret `namespace/name` as last seen, or None when the watch has not seen it.
    pub fn get(&self, namespace: &str, name: &str) -> Option<SecretVersion> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.live.get(&key(namespace, name)).map(Entry::version)
    }

    /// How many of the indexed identity Secrets controlled by an identity `live` accepts carry
    /// a trust bundle other than the one fingerprinted `fingerprint`, and how many there are.
    pub fn bundle_laggards(
        &self,
        fingerprint: &str,
        live: impl Fn(&str) -> bool,
    ) -> (usize, usize) {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let ours = state.live.values().filter(|v| {
            v.controller_uid
                .as_ref()
                .is_some_and(|u| live(&u.to_string()))
        });
        let (mut behind, mut total) = (0, 0);
        for v in ours {
            total += 1;
            if v.trust_bundle.as_deref() != Some(fingerprint) {
                behind += 1;
            }
        }
        (behind, total)
    }

    /// How many Secrets are indexed.
    #[cfg(test)]
    fn len(&self) -> usize {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.live.len()
    }

    /// Applies one watch event. A relist (Init … InitDone) updates entries as it goes and, when
    /// complete, drops those it did not find: Secrets deleted while the watch was down.
    pub fn apply(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let mut guard = self.state.write().unwrap_or_else(|e| e.into_inner());
        let state = &mut *guard;
        match event {
            // The first list has nothing to drop: it fills the live entries alone (a second
            // map would double the index while the operator starts over every Secret).
            watcher::Event::Init => {
                state.relisting = (!state.live.is_empty()).then(HashMap::new);
            }
            watcher::Event::InitApply(s) => {
                if let Some((k, v)) = state.entry(s) {
                    // Live at once too: the reconcile this event triggers must see the version
                    // the relist found, not one from before the watch went down.
                    if let Some(relisting) = state.relisting.as_mut() {
                        relisting.insert(k.clone(), v.clone());
                    }
                    state.live.insert(k, v);
                }
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = state.relisting.take() {
                    state.live = fresh;
                }
            }
            watcher::Event::Apply(s) => {
                if let Some((k, v)) = state.entry(s) {
                    state.live.insert(k, v);
                }
            }
            watcher::Event::Delete(s) => {
                if let Some((k, _)) = state.entry(s) {
                    state.live.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    fn secret(name: &str, rv: &str, owner: Option<&str>) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                owner_references: owner.map(|uid| {
                    vec![
                        OwnerReference {
                            uid: "not-the-controller".into(),
                            ..Default::default()
                        },
                        OwnerReference {
                            uid: uid.into(),
                            controller: Some(true),
                            ..Default::default()
                        },
                    ]
                }),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    #[test]
    fn records_the_version_and_controller_and_forgets_deleted_secrets() {
        let index = SecretIndex::default();
        index.apply(&watcher::Event::Apply(secret("a", "1", Some("uid-a"))));
        index.apply(&watcher::Event::Apply(secret("a", "2", Some("uid-a"))));
        assert_eq!(
            index.get("ns", "a"),
            Some(SecretVersion {
                resource_version: "2".into(),
                controller_uid: Some("uid-a".into()),
                trust_bundle: None,
            })
        );
        assert_eq!(index.get("other", "a"), None);
        index.apply(&watcher::Event::Delete(secret("a", "3", None)));
        assert_eq!(index.get("ns", "a"), None);
    }

    #[test]
    fn counts_the_identity_secrets_whose_bundle_is_behind() {
        let index = SecretIndex::default();
        let with_bundle = |name: &str, fp: Option<&str>| {
            let mut s = secret(name, "1", Some(name));
            s.metadata.annotations = fp.map(|fp| {
                [(nhi_core::labels::TRUST_BUNDLE.to_string(), fp.to_string())]
                    .into_iter()
                    .collect()
            });
            s
        };
        index.apply(&watcher::Event::Apply(with_bundle("a", Some("new"))));
        index.apply(&watcher::Event::Apply(with_bundle("b", Some("old"))));
        index.apply(&watcher::Event::Apply(with_bundle("c", None)));
        // Not controlled by an identity: not counted.
        index.apply(&watcher::Event::Apply(secret("stray", "1", None)));
        let all = |_: &str| true;
        assert_eq!(index.bundle_laggards("new", all), (2, 3));
        // Secrets of identities gone or going away are not waited for.
        assert_eq!(index.bundle_laggards("new", |uid| uid != "b"), (1, 2));
        index.apply(&watcher::Event::Apply(with_bundle("b", Some("new"))));
        index.apply(&watcher::Event::Apply(with_bundle("c", Some("new"))));
        assert_eq!(index.bundle_laggards("new", all), (0, 3));
        // One copy of the fingerprint for every Secret carrying it; the old one is let go.
        index.apply(&watcher::Event::Apply(with_bundle("d", Some("newer"))));
        let state = index.state.read().unwrap();
        let (a, c) = (&state.live["ns/a"], &state.live["ns/c"]);
        assert!(Arc::ptr_eq(
            a.trust_bundle.as_ref().unwrap(),
            c.trust_bundle.as_ref().unwrap()
        ));
        let kept: Vec<&str> = state.fingerprints.iter().map(|f| &**f).collect();
        assert_eq!(kept, ["new", "newer"]);
    }

    #[test]
    fn a_relist_replaces_the_index_only_when_complete() {
        let index = SecretIndex::default();
        index.apply(&watcher::Event::Apply(secret("gone", "1", None)));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(secret("kept", "5", Some("u"))));
        // Until the relist completes, readers see the old entries too, and the new ones at once.
        assert!(index.get("ns", "gone").is_some());
        assert_eq!(index.get("ns", "kept").unwrap().resource_version, "5");
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.get("ns", "gone"), None);
        assert_eq!(index.get("ns", "kept").unwrap().resource_version, "5");
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn the_first_list_fills_the_index_without_a_second_copy() {
        let index = SecretIndex::default();
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(secret("a", "5", Some("u"))));
        assert!(index.state.read().unwrap().relisting.is_none());
        assert_eq!(index.get("ns", "a").unwrap().resource_version, "5");
        index.apply(&watcher::Event::InitDone);
        assert_eq!(index.get("ns", "a").unwrap().resource_version, "5");
        assert_eq!(index.len(), 1);
    }
}
