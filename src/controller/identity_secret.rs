//! The identity Secret (the dynamic identity file): who owns it, what it holds, how it is built.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::ObjectMeta;

use super::kube_access::KubeCredential;
use crate::ca::CertificateAuthority;
use nhi_api::MachineIdentity;
use nhi_core::issue::assess::ExistingMaterial;
use nhi_core::issue::leaf::IssuedCertificate;
use nhi_core::labels;

/// Keys of the identity Secret.
pub mod keys {
    /// Leaf certificate followed by the CA chain.
    pub const TLS_CRT: &str = "tls.crt";
    /// PKCS#8 private key.
    pub const TLS_KEY: &str = "tls.key";
    /// Trust bundle.
    pub const CA_CRT: &str = "ca.crt";
    /// Key then chain in one file, for an atomic read.
    pub const IDENTITY_PEM: &str = "identity.pem";
    /// A kubeconfig with the identity's Kubernetes client certificate (with
    /// `kubernetesAccess` only).
    pub const KUBECONFIG: &str = "kubeconfig";
}

/// Whose Secret a Secret of the identity's `secretName` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// No such Secret.
    Absent,
    /// Ours: labelled as managed by the operator and controlled by this identity.
    Ours,
    /// Someone else's: never touched.
    Foreign,
}

/// Decides whether the Secret with metadata `meta` belongs to `mi`.
pub fn ownership(meta: Option<&ObjectMeta>, mi: &MachineIdentity) -> Ownership {
    let Some(meta) = meta else {
        return Ownership::Absent;
    };
    let managed = meta
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::MANAGED_BY))
        .is_some_and(|v| v == labels::MANAGER);
    if managed && controlled_by(meta, mi) {
        Ownership::Ours
    } else {
        Ownership::Foreign
    }
}

/// Whether `mi` is the controller among the owners in `meta`.
pub fn controlled_by(meta: &ObjectMeta, mi: &MachineIdentity) -> bool {
    meta.owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| r.controller == Some(true) && Some(&r.uid) == mi.metadata.uid.as_ref())
    })
}

/// The certificate material a Secret holds, for assessment.
pub fn existing_material(secret: &Secret) -> ExistingMaterial<'_> {
    let data = secret.data.as_ref();
    ExistingMaterial {
        tls_crt: data
            .and_then(|d| d.get(keys::TLS_CRT))
            .map(|b| b.0.as_slice()),
        tls_key: data
            .and_then(|d| d.get(keys::TLS_KEY))
            .map(|b| b.0.as_slice()),
        has_kubeconfig: data.is_some_and(|d| d.contains_key(keys::KUBECONFIG)),
        kube_client_not_after: secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::KUBE_CLIENT_NOT_AFTER))
            .map(String::as_str),
        inputs_hash: secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::CERT_INPUTS))
            .map(String::as_str),
    }
}

/// Builds the identity Secret for a freshly issued certificate.
pub fn build_identity_secret(
    mi: &MachineIdentity,
    issued: &IssuedCertificate,
    ca: &CertificateAuthority,
    inputs_hash: &str,
    kube_credential: Option<&KubeCredential>,
) -> Secret {
    let name = mi.metadata.name.clone().unwrap_or_default();
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        data.insert(k.to_string(), ByteString(v.into_bytes()));
    };
    put(keys::TLS_CRT, issued.chain_pem.clone());
    put(keys::TLS_KEY, issued.key_pem.clone());
    put(keys::CA_CRT, ca.trust_bundle_pem().to_string());
    put(
        keys::IDENTITY_PEM,
        format!("{}{}", issued.key_pem, issued.chain_pem),
    );
    let mut annotations = BTreeMap::from([
        (labels::CERT_INPUTS.to_string(), inputs_hash.to_string()),
        (labels::SERIAL.to_string(), issued.info.serial_hex.clone()),
        (
            labels::TRUST_BUNDLE.to_string(),
            ca.bundle_fingerprint().to_string(),
        ),
    ]);
    if let Some(credential) = kube_credential {
        put(keys::KUBECONFIG, credential.kubeconfig.clone());
        annotations.insert(
            labels::KUBE_CLIENT_NOT_AFTER.to_string(),
            credential.status.client_certificate_not_after.clone(),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(mi.spec.secret_name.clone()),
            namespace: mi.metadata.namespace.clone(),
            labels: Some(labels::identity_secret_labels(&name)),
            annotations: Some(annotations),
            owner_references: mi.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Default::default()
    }
}

/// A merge patch replacing the trust bundle (`ca.crt`) of an identity Secret at
/// `resource_version` with `ca`'s, and its fingerprint annotation; the certificate and key are
/// untouched.
pub fn trust_bundle_patch(resource_version: &str, ca: &CertificateAuthority) -> serde_json::Value {
    crate::ca::rotation_state::patch(
        resource_version,
        &[(keys::CA_CRT, Some(ca.trust_bundle_pem()))],
        &[(
            labels::TRUST_BUNDLE,
            Some(ca.bundle_fingerprint().to_string()),
        )],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use nhi_api::{MachineIdentitySpec, Owner};

    fn mi() -> MachineIdentity {
        let mut mi = MachineIdentity::new(
            "api",
            MachineIdentitySpec {
                owner: Owner {
                    team: "t".into(),
                    contact: None,
                },
                workload_ref: None,
                review_by: None,
                on_review_lapse: None,
                certificate: Default::default(),
                secret_name: "api-id".into(),
                attributes: Default::default(),
                kubernetes_access: None,
                pod_certificates: None,
                delegation: None,
            },
        );
        mi.metadata.namespace = Some("ns".into());
        mi.metadata.uid = Some("uid-1".into());
        mi
    }

    fn meta(labelled: bool, owner_uid: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some("api-id".into()),
            labels: labelled.then(|| labels::identity_secret_labels("api")),
            owner_references: owner_uid.map(|uid| {
                vec![OwnerReference {
                    uid: uid.into(),
                    controller: Some(true),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_a_labelled_secret_controlled_by_this_identity_is_ours() {
        let mi = mi();
        assert_eq!(ownership(None, &mi), Ownership::Absent);
        assert_eq!(
            ownership(Some(&meta(true, Some("uid-1"))), &mi),
            Ownership::Ours
        );
        assert_eq!(
            ownership(Some(&meta(false, Some("uid-1"))), &mi),
            Ownership::Foreign
        );
        assert_eq!(
            ownership(Some(&meta(true, Some("uid-2"))), &mi),
            Ownership::Foreign
        );
        assert_eq!(ownership(Some(&meta(false, None)), &mi), Ownership::Foreign);
    }
}
