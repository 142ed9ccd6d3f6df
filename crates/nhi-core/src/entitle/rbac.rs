//! The Role and RoleBinding that materialise an Entitlement's `spec.kubernetes` rules, as pure
//! functions of the Entitlement and its subjects.

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_core::Resource;
use sha2::{Digest, Sha256};

use crate::labels;
use nhi_api::Entitlement;

/// The label naming the Entitlement a Role or RoleBinding belongs to.
pub const ENTITLEMENT_LABEL: &str = "nhi.dev/entitlement";

/// What the Entitlement's RBAC objects should be.
#[derive(Clone, Debug, PartialEq)]
pub enum RbacPlan {
    /// Nothing to grant (no rules, or the Entitlement is not active): none may exist.
    Remove,
    /// The rules ask for something no Entitlement may grant; why.
    Refuse(String),
    /// The Role, and the RoleBinding when some subject has Kubernetes access.
    Apply {
        role: Box<Role>,
        binding: Option<Box<RoleBinding>>,
    },
}

/// API groups none of whose resources an Entitlement may grant: the operator's own (identities,
/// CSRs, leases), and those that administer access itself.
const UNGRANTABLE_GROUPS: &[&str] = &[
    "nhi.dev",
    "rbac.authorization.k8s.io",
    "certificates.k8s.io",
    "coordination.k8s.io",
    "authentication.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
];
/// Core resources an Entitlement may not grant: credentials (Secrets hold every identity's key
/// and ServiceAccount tokens; the operator itself may read them), ways into running pods, and
/// the namespace itself (its Pod Security labels).
const UNGRANTABLE_CORE: &[&str] = &[
    "secrets",
    "serviceaccounts",
    "pods/exec",
    "pods/attach",
    "pods/portforward",
    "pods/proxy",
    "pods/ephemeralcontainers",
    "services/proxy",
    "nodes",
    "nodes/proxy",
    "namespaces",
];
/// Verbs an Entitlement may not grant.
const UNGRANTABLE_VERBS: &[&str] = &[
    "escalate",
    "bind",
    "impersonate",
    "approve",
    "sign",
    "use",
    "*",
];

/// Why rule `index` cannot be granted through an Entitlement, if it cannot: the fixed floor no
/// IdentityPolicy can lift. The operator holds permissions of its own (Secrets, RBAC, CSRs) that
/// Kubernetes' escalation check would let it pass on; these are refused here, whatever the
/// operator holds. What else may be granted is the policy's allowlist.
pub fn not_grantable(index: usize, rule: &nhi_api::KubernetesRule) -> Option<String> {
    let refuse = |what: String| {
        Some(format!(
            "spec.kubernetes.rules[{index}]: {what} cannot be granted through an Entitlement"
        ))
    };
    if rule.api_groups.iter().any(|g| g == "*")
        || rule
            .resources
            .iter()
            .any(|r| r == "*" || r.starts_with("*/"))
    {
        return refuse("a wildcard API group or resource".into());
    }
    if let Some(v) = rule
        .verbs
        .iter()
        .find(|v| UNGRANTABLE_VERBS.contains(&v.as_str()))
    {
        return refuse(format!("the verb {v:?}"));
    }
    if let Some(g) = rule
        .api_groups
        .iter()
        .find(|g| UNGRANTABLE_GROUPS.contains(&g.as_str()))
    {
        return refuse(format!("the API group {g:?}"));
    }
    if rule.api_groups.iter().any(|g| g.is_empty()) {
        let base = |r: &str| r.split('/').next().unwrap_or(r).to_string();
        if let Some(r) = rule.resources.iter().find(|r| {
            UNGRANTABLE_CORE.contains(&r.as_str())
                || ["secrets", "serviceaccounts", "nodes", "namespaces"].contains(&base(r).as_str())
                || r.ends_with("/*")
        }) {
            return refuse(format!("the core resource {r:?}"));
        }
    }
    None
}

/// Whether a Role or RoleBinding is this operator's, for the Entitlement `entitlement` (and, when
/// `uid` is given, owned by exactly that Entitlement object).
pub fn is_ours(meta: &ObjectMeta, entitlement: &str, uid: Option<&str>) -> bool {
    let labels = meta.labels.clone().unwrap_or_default();
    let labelled = labels.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER)
        && labels.get(ENTITLEMENT_LABEL).map(String::as_str) == Some(entitlement);
    let owned = uid.is_none_or(|uid| meta.owner_references.iter().flatten().any(|o| o.uid == uid));
    labelled && owned
}

/// The name of an Entitlement's Role and RoleBinding: `nhi-ent-<entitlement>`, shortened with a
/// hash when that would exceed the 253-character limit.
pub fn rbac_name(entitlement: &str) -> String {
    let name = format!("nhi-ent-{entitlement}");
    if name.len() <= 253 {
        return name;
    }
    let digest = hex::encode(&Sha256::digest(entitlement.as_bytes())[..8]);
    format!("{}-{digest}", &name[..236].trim_end_matches(['-', '.']))
}

/// Plans the RBAC objects of `ent`: `active` says whether its grants apply now, `users` are the
/// Kubernetes users of the selected identities that have Kubernetes access.
pub fn plan_rbac(ent: &Entitlement, active: bool, mut users: Vec<String>) -> RbacPlan {
    let Some(kubernetes) = ent.spec.kubernetes.as_ref().filter(|k| !k.rules.is_empty()) else {
        return RbacPlan::Remove;
    };
    if !active {
        return RbacPlan::Remove;
    }
    if let Some(why) = kubernetes
        .rules
        .iter()
        .enumerate()
        .find_map(|(i, r)| not_grantable(i, r))
    {
        return RbacPlan::Refuse(why);
    }
    let name = rbac_name(&ent.metadata.name.clone().unwrap_or_default());
    let metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: ent.metadata.namespace.clone(),
        labels: Some(BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
            (
                ENTITLEMENT_LABEL.to_string(),
                ent.metadata.name.clone().unwrap_or_default(),
            ),
        ])),
        owner_references: ent.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    };
    let rules = kubernetes
        .rules
        .iter()
        .map(|r| PolicyRule {
            api_groups: Some(r.api_groups.clone()),
            resources: Some(r.resources.clone()),
            resource_names: (!r.resource_names.is_empty()).then(|| r.resource_names.clone()),
            verbs: r.verbs.clone(),
            non_resource_urls: None,
        })
        .collect();
    let role = Role {
        metadata: metadata.clone(),
        rules: Some(rules),
    };
    users.sort();
    users.dedup();
    let binding = (!users.is_empty()).then(|| {
        Box::new(RoleBinding {
            metadata,
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "Role".into(),
                name,
            },
            subjects: Some(
                users
                    .into_iter()
                    .map(|user| Subject {
                        api_group: Some("rbac.authorization.k8s.io".into()),
                        kind: "User".into(),
                        name: user,
                        namespace: None,
                    })
                    .collect(),
            ),
        })
    });
    RbacPlan::Apply {
        role: Box::new(role),
        binding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(kubernetes: serde_json::Value) -> Entitlement {
        let mut e: Entitlement = serde_json::from_value(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": "tf-read", "namespace": "infra", "uid": "u-1"},
            "spec": {"subjects": {"names": ["tf"]}, "grants": [], "justification": "j",
                     "kubernetes": kubernetes}
        }))
        .unwrap();
        if e.spec
            .kubernetes
            .as_ref()
            .is_some_and(|k| k.rules.is_empty())
        {
            e.spec.kubernetes = None;
        }
        e
    }

    fn rules() -> serde_json::Value {
        serde_json::json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})
    }

    #[test]
    fn binds_the_users_of_subjects_with_access_to_a_role_owned_by_the_entitlement() {
        let plan = plan_rbac(
            &ent(rules()),
            true,
            vec!["nhi:infra:tf".into(), "nhi:infra:tf".into()],
        );
        let RbacPlan::Apply { role, binding } = plan else {
            panic!("{plan:?}");
        };
        assert_eq!(role.metadata.name.as_deref(), Some("nhi-ent-tf-read"));
        assert_eq!(role.metadata.namespace.as_deref(), Some("infra"));
        let owner = &role.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Entitlement", Some(true))
        );
        let rule = &role.rules.as_ref().unwrap()[0];
        assert_eq!(rule.verbs, vec!["get", "list"]);
        assert_eq!(rule.resource_names, None);
        let binding = binding.unwrap();
        assert_eq!(binding.role_ref.name, "nhi-ent-tf-read");
        let subjects = binding.subjects.unwrap();
        assert_eq!(subjects.len(), 1, "deduplicated");
        assert_eq!(
            (subjects[0].kind.as_str(), subjects[0].name.as_str()),
            ("User", "nhi:infra:tf")
        );
    }

    #[test]
    fn nothing_without_rules_outside_the_window_and_no_binding_without_users() {
        assert_eq!(
            plan_rbac(
                &ent(serde_json::json!({"rules": []})),
                true,
                vec!["u".into()]
            ),
            RbacPlan::Remove
        );
        assert_eq!(
            plan_rbac(&ent(rules()), false, vec!["u".into()]),
            RbacPlan::Remove
        );
        assert!(matches!(
            plan_rbac(&ent(rules()), true, vec![]),
            RbacPlan::Apply { binding: None, .. }
        ));
    }

    #[test]
    fn the_operators_own_powers_cannot_be_granted() {
        let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| nhi_api::KubernetesRule {
            api_groups: groups.iter().map(|s| s.to_string()).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            resource_names: vec![],
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
        };
        for (r, what) in [
            (rule(&[""], &["secrets"], &["get"]), "secrets"),
            (
                rule(&[""], &["serviceaccounts/token"], &["create"]),
                "serviceaccounts/token",
            ),
            (rule(&[""], &["pods/exec"], &["create"]), "pods/exec"),
            (
                rule(
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings"],
                    &["create"],
                ),
                "rbac",
            ),
            (
                rule(&["nhi.dev"], &["machineidentities"], &["create"]),
                "nhi.dev",
            ),
            (
                rule(
                    &["certificates.k8s.io"],
                    &["certificatesigningrequests"],
                    &["create"],
                ),
                "certificates",
            ),
            (rule(&["*"], &["configmaps"], &["get"]), "wildcard"),
            (rule(&[""], &["*"], &["get"]), "wildcard"),
            (rule(&[""], &["configmaps"], &["*"]), "\"*\""),
            (rule(&[""], &["configmaps"], &["escalate"]), "escalate"),
        ] {
            let why = not_grantable(0, &r).unwrap_or_else(|| panic!("{what} was grantable"));
            assert!(why.contains(what), "{why}");
        }
        assert_eq!(
            not_grantable(0, &rule(&[""], &["configmaps"], &["get", "list"])),
            None
        );
        assert_eq!(
            not_grantable(0, &rule(&["apps"], &["deployments/scale"], &["patch"])),
            None
        );
        let denied = ent(
            serde_json::json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
        );
        assert!(matches!(
            plan_rbac(&denied, true, vec!["u".into()]),
            RbacPlan::Refuse(_)
        ));
    }

    #[test]
    fn only_objects_labelled_for_the_entitlement_are_ours() {
        let RbacPlan::Apply { role, .. } = plan_rbac(&ent(rules()), true, vec![]) else {
            panic!()
        };
        assert!(is_ours(&role.metadata, "tf-read", Some("u-1")));
        assert!(
            !is_ours(&role.metadata, "tf-read", Some("u-2")),
            "another Entitlement of that name"
        );
        assert!(!is_ours(&role.metadata, "other", None));
        assert!(
            !is_ours(&ObjectMeta::default(), "tf-read", None),
            "someone else's Role"
        );
    }

    #[test]
    fn names_stay_within_limits() {
        assert_eq!(rbac_name("a"), "nhi-ent-a");
        let long = rbac_name(&"x".repeat(253));
        assert!(long.len() <= 253);
        assert_ne!(long, rbac_name(&format!("{}y", "x".repeat(252))));
    }
}
