//! The `IdentityPolicy` custom resource: what the namespaces it selects may claim.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::entitlement::KubernetesRule;
use super::machine_identity::KeyAlgorithm;

/// The namespace label that takes a namespace out of the chart's default policy (whose
/// selector is "namespaces without this label"): platform admins set it on namespaces governed
/// by policies of their own.
pub const CUSTOM_POLICY_LABEL: &str = "nhi.dev/identity-policy";

/// The label prefix an Entitlement's `subjects.selector` must use: only users who may create
/// Entitlements in the namespace may set such labels on a MachineIdentity (the admission policy
/// checks), so a tenant cannot put their identity under someone else's Entitlement.
pub const SUBJECT_LABEL_PREFIX: &str = "subject.nhi.dev/";

/// What the identities and Entitlements of some namespaces may claim, written by platform
/// admins (tenants cannot). Every policy whose `namespaceSelector` selects a namespace applies
/// there, and several combine by intersection: the most restrictive wins. A namespace no policy
/// selects gets what an empty policy allows: its own service names, no grants, no Kubernetes
/// access. Enforced at admission (the ValidatingAdmissionPolicy `nhi-identity-policy`) and at
/// issuance (condition Ready=False, reason PolicyDenied).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nhi.dev",
    version = "v1alpha1",
    kind = "IdentityPolicy",
    plural = "identitypolicies",
    shortname = "ipol",
    category = "nhi",
    status = "IdentityPolicyStatus",
    printcolumn = r#"{"name":"Namespaces","type":"integer","jsonPath":".status.selectedNamespaces"}"#,
    printcolumn = r#"{"name":"Grants","type":"string","jsonPath":".spec.grants.allowed"}"#,
    printcolumn = r#"{"name":"Max-TTL","type":"string","jsonPath":".spec.maxTTL"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IdentityPolicySpec {
    /// The namespaces this policy applies to (`{}` selects every namespace).
    #[schemars(schema_with = "namespace_selector_schema")]
    pub namespace_selector: LabelSelector,

    /// DNS names identities may put in their certificates besides the namespace's own service
    /// names (`<service>.<namespace>.svc` and `<service>.<namespace>.svc.<cluster domain>`, always
    /// allowed). Absent: only those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_names: Option<ClaimRule>,

    /// Grants Entitlements may give. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grants: Option<ClaimRule>,

    /// The longest certificate lifetime identities may ask for, as a Go duration (for example
    /// `4h`). An identity without `spec.certificate.ttl` gets the operator's default, shortened
    /// to this. Absent: the operator's bound.
    #[serde(default, rename = "maxTTL", skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"),
        length(max = 32)
    )]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5m') && duration(self) <= duration('24h')").message("maxTTL must be between 5m and 24h"))]
    pub max_ttl: Option<String>,

    /// The key algorithms identities may use. Absent or empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub key_algorithms: Vec<KeyAlgorithm>,

    /// Whether identities may have Kubernetes API access (`spec.kubernetesAccess`). Default
    /// false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_access: Option<bool>,

    /// The Kubernetes rules Entitlements may ask for (`spec.kubernetes.rules`): each requested
    /// rule must be covered by one of these (`*` matches any group, resource or verb here). Some
    /// permissions no policy can allow (Secrets, exec, attach, port-forward, ephemeral
    /// containers, ServiceAccounts, nodes, namespaces, RBAC, the operator's own API, the verbs
    /// escalate, bind, impersonate, use). The admission policy also refuses a rule the
    /// Entitlement's author does not hold. Absent or empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub kubernetes_rules: Vec<KubernetesRule>,

    /// Attribute keys identities may not set (reserved for the platform): exact keys, or
    /// prefixes ending in `*` (for example `compliance.*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "reserved_attributes_schema")]
    pub reserved_attributes: Vec<String>,

    /// Whether identities may delegate to task identities (`spec.delegation`), and the widest
    /// limits they may set. Absent: no delegation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = crate::machine_identity::not_nullable)]
    pub delegation: Option<DelegationBounds>,
}

/// The widest delegation limits identities may set. An identity that sets a wider one is
/// refused at admission; one that leaves a limit out gets its default, narrowed to the bound.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelegationBounds {
    /// The longest a child certificate may live, as a Go duration (10s to 1h). Absent: 1h.
    #[serde(
        default,
        rename = "maxChildTTL",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "crate::machine_identity::child_ttl_schema")]
    pub max_child_ttl: Option<String>,

    /// How many delegations deep a chain may go (1 to 8). Absent: 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 8), transform = crate::machine_identity::not_nullable)]
    pub max_depth: Option<i32>,

    /// How many children an identity and its descendants may be given per minute (1 to 6000).
    /// Absent: 6000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 6000), transform = crate::machine_identity::not_nullable)]
    pub max_per_minute: Option<i32>,
}

/// Names that may be claimed: patterns, and whether the selected namespaces claim them alone.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRule {
    /// Patterns of what may be claimed. For grants: a grant (`payments.process`), a prefix ending
    /// in `.*` (`payments.*`, any grant under it), or `*` (any grant). For DNS names: a name, or
    /// `*.<domain>` (any name under the domain, wildcard names included). Empty: nothing.
    #[serde(default)]
    #[schemars(schema_with = "patterns_schema")]
    pub allowed: Vec<String>,

    /// Whether the selected namespaces claim these patterns alone: in a namespace this policy
    /// does not select, nothing matching them may be claimed (a namespace's own service names
    /// excepted). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclusive: bool,
}

/// The observed state of an IdentityPolicy, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityPolicyStatus {
    /// Current conditions: `Ready` (the policy is understood and in force).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec the status was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many namespaces the policy selects.
    #[serde(default)]
    pub selected_namespaces: i64,
}

fn namespace_selector_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = LabelSelector::json_schema(generator);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "description".into(),
            "The namespaces this policy applies to (`{}` selects every namespace).".into(),
        );
        obj.insert(
            "x-kubernetes-validations".into(),
            serde_json::json!([{
                "rule": "!has(self.matchExpressions) || self.matchExpressions.all(e, (e.operator in ['In', 'NotIn'] && has(e.values) && size(e.values) > 0) || (e.operator in ['Exists', 'DoesNotExist'] && (!has(e.values) || size(e.values) == 0)))",
                "message": "matchExpressions: operator must be In or NotIn (with values) or Exists or DoesNotExist (without)"
            }]),
        );
    }
    schema
}

fn patterns_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "Patterns of what may be claimed.",
        "maxItems": 256,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 253,
            "pattern": r"^(\*|(\*\.)?[a-z0-9]([-a-z0-9_]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9_]*[a-z0-9])?)*(\.\*)?)$"
        }
    })
}

fn reserved_attributes_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "description": "Attribute keys identities may not set: exact keys, or prefixes ending in `*`.",
        "maxItems": 64,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "pattern": r"^[a-z0-9][-a-z0-9_.]*\*?$"
        }
    })
}
