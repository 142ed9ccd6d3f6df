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

/// Annotation on a MachineIdentity asking for its certificates to be revoked now (set by
/// `kubectl nhi revoke`); any new value is a new request, answered in `status.lastRevocation`.
pub const REVOKE_REQUESTED: &str = "nhi.dev/revoke-requested";
/// Annotation on a MachineIdentity: who last re-attested it (`kubectl nhi review`).
pub const REVIEWED_BY: &str = "nhi.dev/reviewed-by";
/// Annotation on a MachineIdentity: when it was last re-attested (RFC 3339).
pub const REVIEWED_AT: &str = "nhi.dev/reviewed-at";
/// The finalizer that revokes an identity's certificates before it goes.
pub const REVOKE_FINALIZER: &str = "nhi.dev/revoke-certificates";
/// The ConfigMap in every namespace with identities: `ca.crt` and `crl.pem`.
pub const TRUST_CONFIGMAP: &str = "nhi-trust";
/// Label on the trust ConfigMaps the operator publishes.
pub const TRUST: &str = "nhi.dev/trust";

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
