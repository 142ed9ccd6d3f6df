//! Reads and writes the revocation record: a ConfigMap in the operator's namespace, updated with
//! optimistic concurrency so two writers never lose each other's entries.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use nhi_core::labels;
use nhi_core::revocation::{RecordError, RevocationRecord};

/// Key of the record in its ConfigMap.
pub const RECORD_KEY: &str = "revoked";

/// A ConfigMap holds at most 1 MiB; the record refuses to grow past this (about 10,000 entries).
pub const MAX_RECORD_BYTES: usize = 900 * 1024;

/// Errors reading or writing the record.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("reading or writing the revocation record {namespace}/{name} failed: {reason}")]
    Api {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("the revocation record {namespace}/{name} cannot be read: {source}")]
    Unreadable {
        namespace: String,
        name: String,
        #[source]
        source: RecordError,
    },
    #[error(
        "the revocation record would grow to {bytes} bytes, past the {MAX_RECORD_BYTES}-byte limit of a ConfigMap"
    )]
    Full { bytes: usize },
    #[error(
        "the revocation record {namespace}/{name} was changed by someone else {attempts} times in a row"
    )]
    Contended {
        namespace: String,
        name: String,
        attempts: u32,
    },
}

/// Where the record lives.
#[derive(Clone)]
pub struct RecordStore {
    api: Api<ConfigMap>,
    namespace: String,
    name: String,
}

/// The record as read, with the ConfigMap version it was read at (None: no ConfigMap yet).
pub struct Loaded {
    pub record: RevocationRecord,
    pub resource_version: Option<String>,
}

impl RecordStore {
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        RecordStore {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    fn api_error(&self, source: kube::Error) -> PersistError {
        // The apiserver's own message, not the whole Status structure.
        let reason = match &source {
            kube::Error::Api(s) => format!("{} (HTTP {})", s.message, s.code),
            other => other.to_string(),
        };
        PersistError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            reason,
        }
    }

    /// Reads the record (empty when the ConfigMap does not exist yet).
    pub async fn load(&self) -> Result<Loaded, PersistError> {
        let Some(cm) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(Loaded {
                record: RevocationRecord::default(),
                resource_version: None,
            });
        };
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(RECORD_KEY))
            .cloned()
            .unwrap_or_default();
        let record =
            RevocationRecord::from_text(&text).map_err(|source| PersistError::Unreadable {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })?;
        Ok(Loaded {
            record,
            resource_version: cm.metadata.resource_version,
        })
    }

    /// Writes `record` over the version `resource_version` (creating the ConfigMap when None).
    /// Returns the new version, or `Ok(None)` when someone else changed it first (a conflict: read
    /// again, merge, write again).
    pub async fn save(
        &self,
        record: &RevocationRecord,
        resource_version: Option<&str>,
    ) -> Result<Option<String>, PersistError> {
        let text = record.to_text();
        if text.len() > MAX_RECORD_BYTES {
            return Err(PersistError::Full { bytes: text.len() });
        }
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    labels::MANAGED_BY.to_string(),
                    labels::MANAGER.to_string(),
                )])),
                resource_version: resource_version.map(str::to_string),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(RECORD_KEY.to_string(), text)])),
            ..Default::default()
        };
        let pp = PostParams {
            field_manager: Some(labels::FIELD_MANAGER.into()),
            ..Default::default()
        };
        let written = match resource_version {
            None => self.api.create(&pp, &cm).await,
            Some(_) => self.api.replace(&self.name, &pp, &cm).await,
        };
        match written {
            Ok(cm) => Ok(Some(cm.metadata.resource_version.unwrap_or_default())),
            // 409: changed since read (or created by someone else); 404: deleted since read.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(None),
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// The error for a record that kept changing under us.
    pub fn contended(&self, attempts: u32) -> PersistError {
        PersistError::Contended {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            attempts,
        }
    }
}
