//! The trust documents the operator publishes: the CA bundle and the CRL, as the `nhi-trust`
//! ConfigMap in every namespace with identities and over HTTP (pure).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;

use nhi_core::labels;

/// Key of the CA bundle in the trust ConfigMap.
pub const CA_KEY: &str = "ca.crt";
/// Key of the CRL in the trust ConfigMap.
pub const CRL_KEY: &str = "crl.pem";

/// What relying parties need to verify identities offline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustDocuments {
    /// PEM of the CA certificates to trust.
    pub ca_pem: String,
    /// PEM of the CRL the CA signed last.
    pub crl_pem: String,
    /// That CRL's number.
    pub crl_number: u64,
}

impl TrustDocuments {
    /// A fingerprint of the content, to skip writes that would change nothing.
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.ca_pem.hash(&mut h);
        self.crl_pem.hash(&mut h);
        h.finish()
    }
}

/// Labels of the trust ConfigMaps.
pub fn trust_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (labels::TRUST.to_string(), "true".to_string()),
    ])
}

/// The label selector of the trust ConfigMaps.
pub fn trust_selector() -> String {
    format!(
        "{}={},{}",
        labels::MANAGED_BY,
        labels::MANAGER,
        labels::TRUST
    )
}

/// The field selector of the trust ConfigMaps: list and watch name them, so RBAC can limit the
/// operator to ConfigMaps of that name.
pub fn trust_field_selector() -> String {
    format!("metadata.name={}", labels::TRUST_CONFIGMAP)
}

/// The trust ConfigMap for `namespace`.
pub fn trust_configmap(namespace: &str, docs: &TrustDocuments) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(labels::TRUST_CONFIGMAP.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(trust_labels()),
            annotations: Some(BTreeMap::from([(
                "nhi.dev/crl-number".to_string(),
                docs.crl_number.to_string(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (CA_KEY.to_string(), docs.ca_pem.clone()),
            (CRL_KEY.to_string(), docs.crl_pem.clone()),
        ])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configmap_carries_both_documents_and_our_labels() {
        let docs = TrustDocuments {
            ca_pem: "CA".into(),
            crl_pem: "CRL".into(),
            crl_number: 7,
        };
        let cm = trust_configmap("team-a", &docs);
        assert_eq!(cm.metadata.name.as_deref(), Some("nhi-trust"));
        assert_eq!(cm.metadata.namespace.as_deref(), Some("team-a"));
        let data = cm.data.unwrap();
        assert_eq!(data["ca.crt"], "CA");
        assert_eq!(data["crl.pem"], "CRL");
        assert_eq!(cm.metadata.labels.unwrap()["nhi.dev/trust"], "true");
        let other = TrustDocuments {
            crl_pem: "CRL2".into(),
            ..docs.clone()
        };
        assert_ne!(docs.fingerprint(), other.fingerprint());
    }
}
