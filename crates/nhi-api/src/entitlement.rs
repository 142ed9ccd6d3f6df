//! The `Entitlement` custom resource: grants mapped onto identities, carried in their certificates.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// The pattern every grant name matches: lowercase words joined by dots, e.g. `payments.process`.
pub const GRANT_PATTERN: &str = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$";
pub use nhi_identity::grant::{GRANT_MAX_LENGTH, GRANTS_MAX_ITEMS};

/// What some identities may do. The operator embeds the grants in the certificates of the
/// identities it selects, so a service can authorize a request from the client certificate alone.
/// Time-bound (just-in-time) access uses `notBefore` and `expiresAt`: a certificate never outlives
/// a grant it carries.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nhi.dev",
    version = "v1alpha1",
    kind = "Entitlement",
    plural = "entitlements",
    shortname = "ent",
    category = "nhi",
    namespaced,
    status = "EntitlementStatus",
    validation = Rule::new("size(self.spec.grants) > 0 || has(self.spec.kubernetes)").message("spec.grants needs at least one grant (unless spec.kubernetes gives Kubernetes permissions)").field_path(".spec.grants"),
    validation = Rule::new("!has(self.spec.notBefore) || !has(self.spec.expiresAt) || timestamp(self.spec.expiresAt) > timestamp(self.spec.notBefore)").message("spec.expiresAt must be after spec.notBefore").field_path(".spec.expiresAt"),
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Grants","type":"string","jsonPath":".spec.grants"}"#,
    printcolumn = r#"{"name":"Bound","type":"integer","jsonPath":".status.boundCount"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","format":"date-time","jsonPath":".spec.expiresAt"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementSpec {
    /// The MachineIdentities of this namespace the grants apply to: by name, by label selector,
    /// or both (an identity matching either is selected).
    pub subjects: Subjects,

    /// Entitlement names embedded in each subject's certificate: lowercase words joined by dots,
    /// for example `payments.process` or `patients.read`. At most 64; at least one unless
    /// `kubernetes` is given.
    #[serde(default)]
    #[schemars(schema_with = "grants_schema")]
    pub grants: Vec<String>,

    /// Kubernetes API permissions for the subjects, in this namespace: the operator materialises
    /// them as a Role and a RoleBinding to the current users (`nhi:<namespace>:<identity>:<issuance>`,
    /// as each identity's status shows) of the subjects with `kubernetesAccess` enabled, and removes both when the rules, the Entitlement or its
    /// time window go. The operator can only grant permissions it holds itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesPermissions>,

    /// When the grants start to apply (RFC 3339). Until then they are in no certificate; the
    /// operator re-issues the subjects at that moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub not_before: Option<String>,

    /// When the grants stop applying (RFC 3339). A certificate carrying them expires no later;
    /// the operator re-issues the subjects without them at that moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "timestamp_schema")]
    pub expires_at: Option<String>,

    /// Why this access exists (a ticket, a change request, a sentence). Shown in status and
    /// Events.
    #[schemars(length(min = 1, max = 1024))]
    pub justification: String,
}

/// Kubernetes RBAC rules granted to an Entitlement's subjects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesPermissions {
    /// The rules of the Role (namespaced resources only). At least one, at most 32.
    #[schemars(length(min = 1, max = 32))]
    pub rules: Vec<KubernetesRule>,
}

/// One RBAC rule: verbs on resources of API groups, optionally limited to named objects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesRule {
    /// API groups (`""` is the core group).
    #[schemars(length(min = 1, max = 16))]
    pub api_groups: Vec<String>,
    /// Resources, for example `configmaps` or `deployments/scale`.
    #[schemars(length(min = 1, max = 32))]
    pub resources: Vec<String>,
    /// Names of objects the rule is limited to (all when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub resource_names: Vec<String>,
    /// Verbs, for example `get`, `list`, `watch`.
    #[schemars(length(min = 1, max = 16))]
    pub verbs: Vec<String>,
}

/// Which identities an Entitlement selects.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.names) && size(self.names) > 0) || has(self.selector)").message("subjects needs names, a selector, or both"))]
pub struct Subjects {
    /// Names of MachineIdentities in this namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "names_schema")]
    pub names: Vec<String>,

    /// A label selector over the MachineIdentities of this namespace. It must not be empty: an
    /// empty selector would select every identity, the opposite of least privilege.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "selector_schema")]
    pub selector: Option<LabelSelector>,
}

/// One identity an Entitlement is bound to: the certificate that carries its grants.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Binding {
    /// The MachineIdentity's name.
    pub identity: String,
    /// Serial number of the certificate carrying the grants (hexadecimal).
    pub serial_number: String,
    /// SHA-256 of that certificate's DER encoding (hexadecimal).
    #[serde(rename = "thumbprintSHA256")]
    pub thumbprint_sha256: String,
    /// When that certificate expires (RFC 3339).
    pub not_after: String,
}

/// The observed state of an Entitlement, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementStatus {
    /// Current conditions: `Ready`, `Expired`, `NoSubjects`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The justification the current grants were given for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// How many identities hold a certificate carrying the grants.
    #[serde(default)]
    pub bound_count: i64,
    /// The entitlement-to-thumbprint map: each bound identity and the certificate carrying the
    /// grants, sorted by identity (at most 256 entries; `boundCount` counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<Binding>,
    /// The Role and RoleBinding materialising `spec.kubernetes`, when they exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesRbacStatus>,
    /// The MachineIdentity each subject named in `spec.subjects.names` was first bound to (its
    /// uid), for the spec generation `pinnedGeneration`. An identity deleted and re-created under
    /// the same name is not bound until the Entitlement's spec changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pinned_subjects: Vec<PinnedSubject>,
    /// The spec generation the pins were made for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_generation: Option<i64>,
}

/// A named subject and the uid of the MachineIdentity it was bound to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PinnedSubject {
    /// The MachineIdentity's name.
    pub name: String,
    /// Its uid when it was bound.
    pub uid: String,
}

/// The RBAC objects of an Entitlement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesRbacStatus {
    /// The Role's name.
    pub role: String,
    /// The RoleBinding's name (absent while no subject has Kubernetes access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_binding: Option<String>,
    /// The users bound (`nhi:<namespace>:<identity>:<issuance>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

/// The most bindings listed in status (the object must stay well under etcd's size limit).
pub const MAX_LISTED_BINDINGS: usize = 256;

fn grants_schema(_: &mut SchemaGenerator) -> Schema {
    grant_names(
        "Entitlement names embedded in each subject's certificate: lowercase words joined by dots, for example `payments.process`. At most 64; at least one unless `kubernetes` is given.",
    )
}

/// A list of grant names (the delegable subset of an identity's grants).
pub(crate) fn grants_list_schema(_: &mut SchemaGenerator) -> Schema {
    grant_names(
        "Grant names: lowercase words joined by dots, for example `payments.refund`. At most 64.",
    )
}

/// A set of at most 64 grant names, described as `description`.
fn grant_names(description: &str) -> Schema {
    json_schema!({
        "type": "array",
        "description": description,
        "maxItems": GRANTS_MAX_ITEMS,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "maxLength": GRANT_MAX_LENGTH,
            "pattern": GRANT_PATTERN,
            "description": "A grant name: lowercase words (a-z, 0-9, '-', '_', starting with a letter) joined by dots."
        }
    })
}

fn names_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "Names of MachineIdentities in this namespace.",
        "maxItems": 256,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "maxLength": 63,
            "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
        }
    })
}

fn selector_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = LabelSelector::json_schema(generator);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "x-kubernetes-validations".into(),
            serde_json::json!([{
                "rule": "(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)",
                "message": "selector must not be empty: an empty selector would select every identity in the namespace"
            }]),
        );
    }
    schema
}

fn timestamp_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "date-time",
        "description": "An RFC 3339 timestamp, for example 2026-01-31T18:00:00Z."
    })
}
