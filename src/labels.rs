//! Labels and annotations the operator puts on the objects it owns.

use std::collections::BTreeMap;

/// `app.kubernetes.io/managed-by` value on every object the operator writes.
pub const MANAGER: &str = "nhi-operator";
/// The field manager for every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "nhi-operator";
/// Standard label naming the tool that manages an object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label on identity Secrets naming their MachineIdentity.
pub const IDENTITY: &str = "nhi.dev/identity";
/// Label on the CA Secret.
pub const CA: &str = "nhi.dev/ca";
/// Annotation on identity Secrets: hash of the inputs the certificate was built from.
pub const CERT_INPUTS: &str = "nhi.dev/certificate-inputs";
/// Annotation on identity Secrets: serial of the certificate inside (hexadecimal).
pub const SERIAL: &str = "nhi.dev/serial";
/// Annotation on an identity Secret: when the client certificate in its kubeconfig expires.
pub const KUBE_CLIENT_NOT_AFTER: &str = "nhi.dev/kube-client-not-after";

/// The label selector matching every identity Secret the operator owns.
pub fn identity_secret_selector() -> String {
    format!("{MANAGED_BY}={MANAGER},{IDENTITY}")
}

/// Labels for an identity Secret.
pub fn identity_secret_labels(identity: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (IDENTITY.to_string(), identity.to_string()),
    ])
}

/// Labels for the CA Secret.
pub fn ca_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_string(), MANAGER.to_string()),
        (CA.to_string(), "true".to_string()),
    ])
}
