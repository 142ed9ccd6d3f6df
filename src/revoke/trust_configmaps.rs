//! Keeps the `nhi-trust` ConfigMaps current: one in every namespace that has identities or
//! revoked certificates not yet expired, each with the CA bundle and the latest CRL. Changes by
//! anyone else are put right; ConfigMaps no longer needed are removed.

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::{Api, Client};
use tracing::{debug, warn};

use super::trust::{TrustDocuments, trust_configmap, trust_field_selector, trust_selector};
use nhi_core::labels;

/// What was last written to one namespace's ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Published {
    fingerprint: u64,
    resource_version: String,
    uid: String,
}

/// The publisher's memory of the trust ConfigMaps.
pub struct TrustPublisher {
    client: Client,
    /// The one namespace watched, or None for all.
    scope: Option<String>,
    published: HashMap<String, Option<Published>>,
    /// Namespaces found gone or terminating: no trust ConfigMap is written there again unless
    /// identities appear in them.
    gone: std::collections::HashSet<String>,
}

impl TrustPublisher {
    pub fn new(client: Client, scope: Option<String>) -> Self {
        TrustPublisher {
            client,
            scope,
            published: HashMap::new(),
            gone: Default::default(),
        }
    }

    /// Learns the trust ConfigMaps that exist already (from an earlier run): each is updated or
    /// removed at the next sync.
    pub async fn discover(&mut self) -> Result<(), kube::Error> {
        let api: Api<PartialObjectMeta<ConfigMap>> =
            crate::kube_api::scoped_api(self.client.clone(), self.scope.as_deref());
        let list = api
            .list_metadata(
                &ListParams::default()
                    .labels(&trust_selector())
                    .fields(&trust_field_selector()),
            )
            .await?;
        for cm in list.items {
            if cm.metadata.name.as_deref() == Some(labels::TRUST_CONFIGMAP)
                && let Some(ns) = cm.metadata.namespace
            {
                self.published.entry(ns).or_insert(None);
            }
        }
        Ok(())
    }

    /// Whether `namespace` was found gone or terminating.
    pub fn is_gone(&self, namespace: &str) -> bool {
        self.gone.contains(namespace)
    }

    /// An identity exists in `namespace`: it is not gone.
    pub fn present(&mut self, namespace: &str) {
        self.gone.remove(namespace);
    }

    /// The namespaces that have a trust ConfigMap (as far as the publisher knows).
    pub fn namespaces(&self) -> impl Iterator<Item = &String> {
        self.published.keys()
    }

    /// A watch event on a trust ConfigMap: anything but our own last write makes the next sync
    /// write it again.
    pub fn observed(&mut self, namespace: &str, resource_version: Option<&str>, deleted: bool) {
        if let Some(Some(p)) = self.published.get(namespace)
            && (deleted || Some(p.resource_version.as_str()) != resource_version)
        {
            debug!(
                namespace,
                "trust ConfigMap changed by someone else; rewriting it"
            );
            self.published.insert(namespace.to_string(), None);
        }
    }

    /// Brings every namespace in `wanted` to `docs`, and removes the ConfigMaps of the others
    /// (when `may_remove`: the identity cache is complete). Returns the namespaces that failed.
    pub async fn sync(
        &mut self,
        docs: &TrustDocuments,
        wanted: &BTreeSet<String>,
        may_remove: bool,
    ) -> Vec<String> {
        let fingerprint = docs.fingerprint();
        let stale: Vec<String> = wanted
            .iter()
            .filter(|ns| {
                self.published
                    .get(*ns)
                    .and_then(|p| p.as_ref())
                    .is_none_or(|p| p.fingerprint != fingerprint)
            })
            .cloned()
            .collect();
        let unwanted: Vec<(String, Option<String>)> = match may_remove {
            true => self
                .published
                .iter()
                .filter(|(ns, _)| !wanted.contains(*ns))
                .map(|(ns, p)| (ns.clone(), p.as_ref().map(|p| p.uid.clone())))
                .collect(),
            false => vec![],
        };
        debug!(wanted = ?wanted, stale = ?stale, unwanted = ?unwanted, may_remove, "syncing trust ConfigMaps");
        let client = self.client.clone();
        let writes = futures::stream::iter(stale.into_iter().map(|ns| {
            let client = client.clone();
            async move {
                let result = apply(&client, &ns, docs).await;
                (ns, result)
            }
        }))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
        let mut failed = vec![];
        for (ns, result) in writes {
            match result {
                Ok(p) => {
                    self.published
                        .insert(ns, Some(Published { fingerprint, ..p }));
                }
                // The namespace is gone or going: nobody there to verify anything.
                Err(kube::Error::Api(s))
                    if s.code == 404 || (s.code == 403 && s.message.contains("terminat")) =>
                {
                    debug!(namespace = %ns, "namespace gone or terminating; no trust ConfigMap");
                    self.published.remove(&ns);
                    self.gone.insert(ns);
                }
                Err(e) => {
                    warn!(namespace = %ns, error = %e, "cannot publish the trust ConfigMap");
                    failed.push(ns);
                }
            }
        }
        for (ns, uid) in unwanted {
            match remove(&client, &ns, uid).await {
                Ok(()) => {
                    self.published.remove(&ns);
                }
                Err(e) => {
                    warn!(namespace = %ns, error = %e, "cannot remove the trust ConfigMap");
                    failed.push(ns);
                }
            }
        }
        failed
    }
}

async fn apply(client: &Client, ns: &str, docs: &TrustDocuments) -> Result<Published, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = trust_configmap(ns, docs);
    let written = api
        .patch(
            labels::TRUST_CONFIGMAP,
            &PatchParams::apply(labels::FIELD_MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await?;
    Ok(Published {
        fingerprint: 0,
        resource_version: written.metadata.resource_version.unwrap_or_default(),
        uid: written.metadata.uid.unwrap_or_default(),
    })
}

/// Deletes the trust ConfigMap of `ns` if it is ours: the one we wrote (by uid, no read), or one
/// found labelled as ours.
async fn remove(client: &Client, ns: &str, uid: Option<String>) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    // The one we wrote is known by uid; one found at start-up is ours only if labelled so.
    let uid = match uid {
        Some(uid) => Some(uid),
        None => {
            let Some(cm) = api.get_metadata_opt(labels::TRUST_CONFIGMAP).await? else {
                return Ok(());
            };
            let ours = cm
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.get(labels::TRUST).is_some());
            if !ours {
                return Ok(());
            }
            cm.metadata.uid
        }
    };
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(labels::TRUST_CONFIGMAP, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
