//! Reads and writes the revocation record: a ConfigMap in the operator's namespace, updated with
//! optimistic concurrency so two writers never lose each other's entries. The record's text is
//! stored gzipped (random serials compress to about half, repeated names and times to little),
//! so the ConfigMap holds about three times what the plain text could.

use std::collections::BTreeMap;
use std::io::Read;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use nhi_core::labels;
use nhi_core::revocation::{RecordError, RevocationRecord};

/// Key of the gzipped record in its ConfigMap's `binaryData`.
pub const RECORD_KEY: &str = "revoked.gz";

/// Key of the record as plain text in `data`, as versions before the gzipped form wrote it (read,
/// never written).
pub const PLAIN_RECORD_KEY: &str = "revoked";

/// A ConfigMap holds at most 1 MiB; the record refuses to grow past this, gzipped.
pub const MAX_RECORD_BYTES: usize = 900 * 1024;

/// The most a gzipped record may expand to when read (far above what a full record holds).
const MAX_RECORD_TEXT_BYTES: u64 = 64 * 1024 * 1024;

/// The record's text, gzipped as it is written (the plain text is never held whole).
pub fn compress(record: &RevocationRecord) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, gz);
    // Writing into a Vec cannot fail.
    let _ = record.write_text(&mut out);
    match out.into_inner() {
        Ok(gz) => gz.finish().unwrap_or_default(),
        Err(_) => vec![],
    }
}

/// The text of a gzipped record, or why it cannot be read.
pub fn decompress(bytes: &[u8]) -> Result<String, String> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .take(MAX_RECORD_TEXT_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| format!("not a gzipped text record: {e}"))?;
    Ok(text)
}

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
    #[error("the revocation record {namespace}/{name} cannot be read: {what}")]
    Undecodable {
        namespace: String,
        name: String,
        what: String,
    },
    #[error(
        "the revocation record would grow to {bytes} bytes gzipped, past the {MAX_RECORD_BYTES} bytes it may take in a ConfigMap"
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
        let gzipped = cm.binary_data.as_ref().and_then(|d| d.get(RECORD_KEY));
        let text = match gzipped {
            Some(bytes) => decompress(&bytes.0).map_err(|what| PersistError::Undecodable {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                what,
            })?,
            None => cm
                .data
                .as_ref()
                .and_then(|d| d.get(PLAIN_RECORD_KEY))
                .cloned()
                .unwrap_or_default(),
        };
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
        let gzipped = compress(record);
        if gzipped.len() > MAX_RECORD_BYTES {
            return Err(PersistError::Full {
                bytes: gzipped.len(),
            });
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
            binary_data: Some(BTreeMap::from([(
                RECORD_KEY.to_string(),
                k8s_openapi::ByteString(gzipped),
            )])),
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

#[cfg(test)]
mod tests {
    use super::*;
    use nhi_core::revocation::crl_size::CRL_BUDGET;
    use nhi_core::revocation::{Reason, Revocation};
    use nhi_core::serial::random_serial;
    use time::{Duration, OffsetDateTime};

    #[test]
    fn a_record_as_full_as_the_crl_allows_fits_its_configmap_gzipped() {
        let now = OffsetDateTime::now_utc();
        let mut record = RevocationRecord::default();
        let n = 21_000;
        let revocations: Vec<Revocation> = (0..n)
            .map(|i| Revocation {
                serial_hex: hex::encode(random_serial().as_ref()),
                not_after: now + Duration::seconds(3600 + i as i64 % 600),
                reason: Reason::CessationOfOperation,
                identity: format!("bench-{:02}/identity-{i:05}", i % 16),
            })
            .collect();
        record.add(&revocations, now);
        assert!(record.crl_bytes() <= CRL_BUDGET, "{}", record.crl_bytes());
        let text = record.to_text();
        let gzipped = compress(&record);
        assert!(
            text.len() > MAX_RECORD_BYTES,
            "the plain text fits: the test proves nothing"
        );
        assert!(
            gzipped.len() < MAX_RECORD_BYTES,
            "{n} entries take {} bytes gzipped",
            gzipped.len()
        );
        assert_eq!(decompress(&gzipped).unwrap(), text);
    }

    #[test]
    fn a_record_that_is_not_gzip_is_an_error_not_an_empty_record() {
        assert!(decompress(b"crlNumber 3\n").is_err());
        let empty = RevocationRecord::default();
        assert_eq!(decompress(&compress(&empty)).unwrap(), "crlNumber 0\n");
    }
}
