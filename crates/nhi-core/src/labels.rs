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

/// Annotation on the CA Secret asking for a CA rotation; any new value is a new request.
pub const ROTATE_CA: &str = "nhi.dev/rotate-ca";
/// Annotation on the CA Secret: the last `nhi.dev/rotate-ca` value a rotation answered.
pub const CA_ROTATION_ANSWERED: &str = "nhi.dev/ca-rotation-answered";
/// Annotation on the CA Secret: the rotation's phase (`Publishing`, `Reissuing`); absent when idle.
pub const CA_ROTATION_PHASE: &str = "nhi.dev/ca-rotation-phase";
/// Annotation on the CA Secret: when the rotation under way started.
pub const CA_ROTATION_STARTED_AT: &str = "nhi.dev/ca-rotation-started-at";
/// Annotation on the CA Secret: when every bundle was first seen carrying both roots.
pub const CA_ROTATION_DISTRIBUTED_AT: &str = "nhi.dev/ca-rotation-distributed-at";
/// Annotation on the CA Secret: when the new CA started signing.
pub const CA_ROTATION_SWITCHED_AT: &str = "nhi.dev/ca-rotation-switched-at";
/// Annotation on the CA Secret: when the retiring root leaves the bundles.
pub const CA_ROTATION_RETIRE_AFTER: &str = "nhi.dev/ca-rotation-retire-after";
/// Annotation on the CA Secret: when the last rotation completed.
pub const CA_ROTATION_COMPLETED_AT: &str = "nhi.dev/ca-rotation-completed-at";
/// Annotation on identity Secrets: fingerprint of the trust bundle in their `ca.crt`.
pub const TRUST_BUNDLE: &str = "nhi.dev/trust-bundle";
