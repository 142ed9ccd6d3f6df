//! The `MachineIdentity` custom resource: one non-human identity and its certificate.

use std::borrow::Cow;

use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use super::attributes::Attributes;
use super::condition::Condition;

/// A non-human identity (a service, a CI job, an automation client, an AI agent). The operator
/// issues it a short-lived X.509 certificate with a SPIFFE ID, writes it to a Secret and rotates it
/// continuously.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nhi.dev",
    version = "v1alpha1",
    kind = "MachineIdentity",
    plural = "machineidentities",
    shortname = "mi",
    category = "nhi",
    namespaced,
    status = "MachineIdentityStatus",
    validation = Rule::new("size(self.metadata.name) <= 63").message("metadata.name must be at most 63 characters (it is used as a label value)"),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","format":"date-time","jsonPath":".status.notAfter"}"#,
    printcolumn = r#"{"name":"Owner","type":"string","jsonPath":".spec.owner.team"}"#,
    printcolumn = r#"{"name":"Review-By","type":"string","jsonPath":".spec.reviewBy"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct MachineIdentitySpec {
    /// Who is accountable for this identity. Required: every identity has an owner.
    pub owner: Owner,

    /// The object this identity serves (for example a Deployment or ServiceAccount) in the same
    /// namespace. When it no longer exists past a grace period, the identity lapses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<Box<WorkloadRef>>,

    /// The date (YYYY-MM-DD) by which a person must re-attest that this identity is still needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "date_schema")]
    pub review_by: Option<String>,

    /// What happens when `reviewBy` has passed: `Suspend` (revoke and stop renewing until the review
    /// date moves forward) or `Delete` (revoke and delete the identity). Default `Suspend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_review_lapse: Option<ReviewLapseAction>,

    /// How the identity's certificate is made.
    #[serde(default)]
    pub certificate: CertificateSpec,

    /// The Secret the certificate, key and trust bundle are written to (the dynamic identity
    /// file). Must be a valid Secret name; cannot be changed once set.
    #[schemars(schema_with = "dns_label_name_schema")]
    pub secret_name: String,

    /// Small key/value context (for example project, security level) embedded in the certificate.
    /// At most 16 entries; keys are lowercase words, values at most 128 characters.
    #[serde(default, skip_serializing_if = "Attributes::is_empty")]
    #[schemars(schema_with = "attributes_schema")]
    pub attributes: Attributes,

    /// Kubernetes API access (opt-in): the operator obtains a short-lived client certificate for
    /// the user `nhi:<namespace>:<name>:<issuance>` from the cluster's `kubernetes.io/kube-apiserver-client`
    /// signer and writes a `kubeconfig` into the identity Secret. What the user may do comes from
    /// Entitlements with `spec.kubernetes` rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_access: Option<KubernetesAccess>,

    /// Pod certificates (opt-in): pods of this namespace running as the named ServiceAccount get
    /// this identity's certificate through a `podCertificate` projected volume for the signer
    /// `nhi.dev/identity`. The kubelet generates the key on the node; it never leaves it. One
    /// ServiceAccount is covered by at most one identity (a second makes every request denied,
    /// reason AmbiguousIdentity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_certificates: Option<Box<PodCertificates>>,

    /// Delegated task identities (opt-in): a holder of this identity's certificate may ask the
    /// operator's delegation endpoint for short-lived child certificates, one per task
    /// (`<spiffe id>/task/<task id>`), each holding a subset of the identity's current grants and
    /// ending no later than the certificate that asked. Absent: no delegation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = not_nullable)]
    pub delegation: Option<Box<DelegationSpec>>,
}

/// What a holder of the identity may delegate to the tasks it starts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DelegationSpec {
    /// The longest a child certificate lives, as a Go duration (10s to 1h). Default 5m. A child
    /// never outlives the certificate that asked for it either.
    #[serde(
        default,
        rename = "maxChildTTL",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "child_ttl_schema")]
    pub max_child_ttl: Option<String>,

    /// How many delegations deep a chain may go: 1 lets the identity's own certificate delegate
    /// and no child delegate further (1 to 8). Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8), transform = not_nullable)]
    pub max_depth: Option<i32>,

    /// How many children the identity and all its descendants may be given per minute, together
    /// (1 to 6000). Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 6000), transform = not_nullable)]
    pub max_per_minute: Option<i32>,

    /// The grants a child may be given: a subset of the identity's. Absent: any grant the
    /// identity holds. A grant listed here that the identity does not hold is never delegated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::entitlement::grants_list_schema")]
    pub grants: Option<Vec<String>>,
}

/// Leaves `nullable` out of an optional field's schema: the apiserver then drops an explicit
/// `null` before admission, so a policy's CEL never sees one (`has()` is true of a null).
pub(crate) fn not_nullable(schema: &mut Schema) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    obj.remove("nullable");
    // Until the generator's transforms make them `nullable`, an optional field's schema is
    // `type: [<its type>, "null"]`, or `anyOf: [<its schema>, {type: "null"}]`: keep the type.
    if let Some(types) = obj.get_mut("type").and_then(|t| t.as_array_mut()) {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            obj.insert("type".into(), only);
        }
    }
    let option = match obj
        .get("anyOf")
        .and_then(|a| a.as_array())
        .map(Vec::as_slice)
    {
        Some([first, null])
            if null.get("type") == Some(&serde_json::json!("null"))
                || null.get("enum") == Some(&serde_json::json!([null])) =>
        {
            first.as_object().cloned()
        }
        _ => None,
    };
    if let Some(mut first) = option {
        obj.remove("anyOf");
        first.remove("nullable");
        obj.append(&mut first);
    }
}

/// A child's lifetime (an identity's limit, or a policy's bound): a Go duration, 10s to 1h.
pub(crate) fn child_ttl_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "maxLength": 32,
        "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$",
        "x-kubernetes-validations": [{
            "rule": "duration(self) >= duration('10s') && duration(self) <= duration('1h')",
            "message": "maxChildTTL must be between 10s and 1h"
        }]
    })
}

/// Which pods get the identity's certificate from the pod-certificate signer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCertificates {
    /// The ServiceAccount (in the identity's namespace) whose pods are covered.
    #[schemars(schema_with = "service_account_name_schema")]
    pub service_account_name: String,
}

/// Kubernetes API access for an identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesAccess {
    /// Whether to issue a Kubernetes client certificate and write a `kubeconfig`.
    #[serde(default)]
    pub enabled: bool,
}

/// The accountable owner of an identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// The team accountable for the identity.
    #[schemars(length(min = 1, max = 128))]
    pub team: String,
    /// How to reach the owner (an e-mail address, a chat channel, an on-call handle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub contact: Option<String>,
}

/// A reference to an object in the identity's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// API version of the object, for example `apps/v1`.
    #[schemars(length(min = 1, max = 253))]
    pub api_version: String,
    /// Kind of the object, for example `Deployment`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// How long the object may be missing before the identity lapses (revoked and deleted), as a
    /// Go duration (for example `10m`). Default: the operator's setting (5m). At most 720h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"),
        length(max = 32)
    )]
    #[x_kube(validation = Rule::new("duration(self) <= duration('720h')").message("gracePeriod must be at most 720h"))]
    pub grace_period: Option<String>,
}

/// What to do when an identity's review date has passed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ReviewLapseAction {
    /// Revoke the certificate, remove the key from the Secret and stop renewing.
    #[default]
    Suspend,
    /// Revoke the certificate and delete the identity.
    Delete,
}

/// How the identity's certificate is made.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CertificateSpec {
    /// Lifetime of each certificate, as a Go duration (for example `1h`, `30m`). Between 10s and
    /// 24h here; the operator narrows it to its own bounds (--min-ttl, --max-ttl: 5m and 24h by
    /// default), refusing others with Ready=False, reason TTLOutOfBounds. Default: the operator's
    /// setting (1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"),
        length(max = 32)
    )]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('24h')").message("ttl must be between 10s and 24h"))]
    pub ttl: Option<String>,

    /// Percentage of the lifetime after which the certificate is renewed (10 to 90). Default: the
    /// operator's setting (about 67, two thirds), with a small per-identity jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 90))]
    pub renewal_percent: Option<i32>,

    /// Key algorithm of the identity's key pair. A new key is generated at every rotation.
    #[serde(default)]
    pub key_algorithm: KeyAlgorithm,

    /// DNS names to include as subject alternative names (for serving TLS). At most 32.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub dns_names: Vec<DnsName>,

    /// What the certificate may be used for: `client`, `server`, or both (the default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub usages: Vec<Usage>,
}

/// Key algorithm of an identity's key pair.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
pub enum KeyAlgorithm {
    /// ECDSA on curve P-256 with SHA-256 (default).
    #[default]
    #[serde(rename = "ECDSA-P256")]
    EcdsaP256,
    /// ECDSA on curve P-384 with SHA-384.
    #[serde(rename = "ECDSA-P384")]
    EcdsaP384,
    /// Ed25519.
    #[serde(rename = "Ed25519")]
    Ed25519,
    /// RSA, 2048-bit modulus.
    #[serde(rename = "RSA-2048")]
    Rsa2048,
    /// RSA, 3072-bit modulus.
    #[serde(rename = "RSA-3072")]
    Rsa3072,
}

/// A certificate usage.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Usage {
    /// TLS client authentication (mTLS client).
    Client,
    /// TLS server authentication.
    Server,
}

/// A DNS name for a subject alternative name; a leading `*.` wildcard is allowed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct DnsName(pub String);

impl JsonSchema for DnsName {
    fn schema_name() -> Cow<'static, str> {
        "DnsName".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A DNS name, lowercase, optionally starting with '*.'.",
            "maxLength": 253,
            "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$"
        })
    }
}

/// The observed state of a MachineIdentity, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineIdentityStatus {
    /// Current conditions: `Ready`, `Issuing` and friends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The identity's SPIFFE ID, the certificate's URI SAN.
    #[serde(default, rename = "spiffeID", skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
    /// Serial number of the current certificate (hexadecimal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    /// SHA-256 of the current certificate's DER encoding (hexadecimal).
    #[serde(
        default,
        rename = "thumbprintSHA256",
        skip_serializing_if = "Option::is_none"
    )]
    pub thumbprint_sha256: Option<String>,
    /// Start of the current certificate's validity (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<SmolStr>,
    /// End of the current certificate's validity (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<SmolStr>,
    /// When the operator will renew the certificate (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_time: Option<SmolStr>,
    /// The identity's effective grants: what its current certificate carries, from every active
    /// Entitlement that selects it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entitlements: Vec<String>,
    /// The Kubernetes client credential in the Secret's `kubeconfig`, when access is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_access: Option<Box<KubernetesAccessStatus>>,
    /// Certificates issued to this identity before the current one that have not expired yet:
    /// they are revoked with it when the identity is retired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub previous_certificates: Vec<CertificateRecord>,
    /// The last revocation of this identity's certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revocation: Option<Box<RevocationStatus>>,
    /// The last `kubectl nhi revoke` request refused (over a revocation quota), until a later
    /// one is accepted. The certificates it named stay valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_revocation: Option<Box<RefusedRevocation>>,
    /// Pod certificates issued for this identity (signer `nhi.dev/identity`) that have not
    /// expired: written by the signer, read to revoke them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_certificates: Option<Box<PodCertificatesStatus>>,
    /// Children delegated by this identity and its descendants: counts and the most recent,
    /// written by the delegation endpoint in batches (the audit log has every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegation: Option<Box<DelegationStatus>>,
}

/// The delegations of an identity, as far as the status keeps them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelegationStatus {
    /// Children signed, in all.
    #[serde(default)]
    pub delegated: i64,
    /// Requests refused, in all.
    #[serde(default)]
    pub refused: i64,
    /// When the last child was signed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delegated_at: Option<String>,
    /// The most recent children, newest first (at most 16).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub recent: Vec<DelegationRecord>,
}

/// One child certificate delegated.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelegationRecord {
    /// The child's serial number (hexadecimal).
    pub serial_number: String,
    /// The child's SPIFFE ID.
    #[serde(rename = "spiffeID")]
    pub spiffe_id: String,
    /// The serial number of the certificate that asked (the identity's, or a task's).
    pub parent_serial_number: String,
    /// The task ID.
    #[serde(rename = "taskID")]
    pub task_id: String,
    /// The task's purpose.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub purpose: String,
    /// The grants the child holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<String>,
    /// When it was signed (RFC 3339).
    pub delegated_at: String,
    /// When it expires (RFC 3339).
    pub not_after: String,
}

/// The outstanding pod certificates of an identity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCertificatesStatus {
    /// How many have not expired.
    pub outstanding: i32,
    /// When the last was issued (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_issued_at: Option<String>,
    /// The pod the last was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_issued_pod: Option<String>,
    /// Each of them, as far as revoking it needs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2048))]
    pub certificates: Vec<PodCertificateRecord>,
}

/// A pod certificate, as far as revoking it needs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCertificateRecord {
    /// Serial number (hexadecimal).
    pub serial_number: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// The pod it was issued to.
    pub pod: String,
    /// The grants it carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<String>,
}

/// A revoke request the operator refused.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefusedRevocation {
    /// The value of the `nhi.dev/revoke-requested` annotation refused.
    pub request: String,
    /// Why (`RevocationQuotaExceeded`, `RevocationCapacityReached`).
    pub reason: String,
    /// What was exceeded, and when revocations are accepted again.
    pub message: String,
    /// When it was refused (RFC 3339).
    pub refused_at: String,
}

/// A certificate issued to an identity, as far as revoking it needs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRecord {
    /// Serial number (hexadecimal).
    pub serial_number: String,
    /// End of validity (RFC 3339).
    pub not_after: String,
}

/// A revocation of an identity's certificates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevocationStatus {
    /// Why (a stable CamelCase word: `RevokeRequested`, `ReviewOverdue`, `WorkloadLapsed`,
    /// `GrantRemoved`, `Deleted`).
    pub reason: String,
    /// When the revocation was recorded (RFC 3339).
    pub revoked_at: String,
    /// The serial numbers put on the CRL.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serial_numbers: Vec<String>,
    /// The value of the `nhi.dev/revoke-requested` annotation this revocation answered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
}

/// The Kubernetes client credential of an identity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesAccessStatus {
    /// The Kubernetes user the client certificate authenticates as
    /// (`nhi:<namespace>:<name>:<issuance>`: the last 16 hex digits of the identity certificate's
    /// serial it was issued with; each issuance has its own).
    pub user: String,
    /// When the client certificate expires (RFC 3339).
    pub client_certificate_not_after: String,
}

fn date_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "date",
        "description": "The date (YYYY-MM-DD) by which a person must re-attest that this identity is still needed."
    })
}

fn dns_label_name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "description": "The Secret the certificate, key and trust bundle are written to. Cannot be changed once set.",
        "minLength": 1,
        "maxLength": 253,
        "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "secretName is immutable"}]
    })
}

fn service_account_name_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "description": "The ServiceAccount (in the identity's namespace) whose pods are covered.",
        "minLength": 1,
        "maxLength": 253,
        "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    })
}

fn attributes_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "Small key/value context embedded in the certificate. At most 16 entries; keys are lowercase words (a-z, 0-9, '-', '_', '.'), values at most 128 characters.",
        "maxProperties": 16,
        "additionalProperties": {"type": "string", "maxLength": 128, "description": "An attribute value, at most 128 characters."},
        "x-kubernetes-validations": [{
            "rule": "self.all(k, size(k) <= 63 && k.matches('^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$'))",
            "message": "attribute keys must be lowercase words of at most 63 characters (a-z, 0-9, '-', '_', '.')"
        }]
    })
}

impl MachineIdentity {
    /// Whether the identity asks for Kubernetes API access.
    pub fn wants_kubernetes_access(&self) -> bool {
        self.spec
            .kubernetes_access
            .as_ref()
            .is_some_and(|k| k.enabled)
    }

    /// The usages the certificate carries: the spec's, or both client and server by default.
    pub fn usages(&self) -> Vec<Usage> {
        let mut u = self.spec.certificate.usages.clone();
        if u.is_empty() {
            u = vec![Usage::Client, Usage::Server];
        }
        u.sort();
        u.dedup();
        u
    }
}
