//! What an Entitlement may give under its namespace's policy: its grants (allowed, and not
//! reserved by another namespace's policy), its Kubernetes rules (on the allowlist, above the
//! fixed floor), and subjects selected only by protected labels.

use super::Refusal;
use super::effective::EffectivePolicy;
use super::pattern::grant_matches;
use super::rules::rule_covered;
use crate::entitle::rbac::not_grantable;
use nhi_api::{EntitlementSpec, SUBJECT_LABEL_PREFIX};

/// Where refusals of permissions no policy can allow come from.
pub const FLOOR: &str = "the operator's fixed floor (no policy can allow it)";
/// Where refusals of unprotected subject labels come from.
pub const SUBJECT_LABEL_RULE: &str = "the subject label rule";

/// What `policy` refuses of Entitlement `spec` (nothing: it may be bound as written).
pub fn check_entitlement(spec: &EntitlementSpec, policy: &EffectivePolicy) -> Vec<Refusal> {
    let mut refusals = vec![];
    for (i, grant) in spec.grants.iter().enumerate() {
        refusals.extend(grant_refusal(&format!("spec.grants[{i}]"), grant, policy));
    }
    for (i, rule) in spec.kubernetes.iter().flat_map(|k| &k.rules).enumerate() {
        let field = format!("spec.kubernetes.rules[{i}]");
        if let Some(why) = not_grantable(i, rule) {
            let what = why
                .split_once(": ")
                .map_or(why.clone(), |(_, w)| w.to_string());
            refusals.push(Refusal {
                field,
                policy: FLOOR.into(),
                what,
            });
            continue;
        }
        let refusing = policy
            .applied
            .iter()
            .find(|p| !rule_covered(rule, &p.spec.kubernetes_rules));
        if let Some(p) = refusing {
            refusals.push(Refusal {
                field,
                policy: p.source.clone(),
                what: format!(
                    "{} on {} ({}) is not on the allowlist (kubernetesRules)",
                    rule.verbs.join(","),
                    rule.resources.join(","),
                    api_groups(&rule.api_groups)
                ),
            });
        }
    }
    refusals.extend(unprotected_subject_labels(spec));
    refusals
}

/// Why `grant` may not be given in the policy's namespace, if it may not.
pub fn grant_refusal(field: &str, grant: &str, policy: &EffectivePolicy) -> Option<Refusal> {
    let refusing = policy.applied.iter().find(|p| {
        let patterns = p.spec.grants.as_ref().map(|r| r.allowed.as_slice());
        !patterns
            .unwrap_or_default()
            .iter()
            .any(|pat| grant_matches(pat, grant))
    });
    if let Some(p) = refusing {
        return Some(Refusal {
            field: field.into(),
            policy: p.source.clone(),
            what: format!("{grant:?} is not allowed"),
        });
    }
    policy
        .reserved_grants
        .iter()
        .find(|r| r.patterns.iter().any(|pat| grant_matches(pat, grant)))
        .map(|r| Refusal {
            field: field.into(),
            policy: r.source.clone(),
            what: format!("{grant:?} is reserved for other namespaces"),
        })
}

/// Selector keys outside [`SUBJECT_LABEL_PREFIX`]: any author of a MachineIdentity could set
/// those and be selected.
fn unprotected_subject_labels(spec: &EntitlementSpec) -> Vec<Refusal> {
    let Some(selector) = &spec.subjects.selector else {
        return vec![];
    };
    let keys = selector
        .match_labels
        .iter()
        .flat_map(|m| m.keys().map(|k| ("matchLabels", k)))
        .chain(
            selector
                .match_expressions
                .iter()
                .flatten()
                .map(|e| ("matchExpressions", &e.key)),
        );
    let negative = selector
        .match_expressions
        .iter()
        .flatten()
        .filter(|e| matches!(e.operator.as_str(), "NotIn" | "DoesNotExist"))
        .map(|e| Refusal {
            field: "spec.subjects.selector.matchExpressions".into(),
            policy: SUBJECT_LABEL_RULE.into(),
            what: format!(
                "{} on {:?} selects identities by a label they lack, which anyone can arrange: \
                 only In and Exists may select subjects",
                e.operator, e.key
            ),
        });
    keys.filter(|(_, k)| !k.starts_with(SUBJECT_LABEL_PREFIX))
        .map(|(part, key)| Refusal {
            field: format!("spec.subjects.selector.{part}"),
            policy: SUBJECT_LABEL_RULE.into(),
            what: format!(
                "the label {key:?} is not protected: subjects are selected only by labels \
                 under {SUBJECT_LABEL_PREFIX}, which only users who may create Entitlements can set"
            ),
        })
        .chain(negative)
        .collect()
}

fn api_groups(groups: &[String]) -> String {
    groups
        .iter()
        .map(|g| match g.as_str() {
            "" => "core".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::effective::tests::{grants, labels_of, ns_named, policy};
    use crate::policy::effective::{built_in_default, effective_policy};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use nhi_api::{IdentityPolicySpec, KubernetesPermissions, KubernetesRule, Subjects};

    fn ent(grants: &[&str]) -> EntitlementSpec {
        EntitlementSpec {
            subjects: Subjects {
                names: vec!["api".into()],
                selector: None,
            },
            grants: grants.iter().map(|s| s.to_string()).collect(),
            kubernetes: None,
            not_before: None,
            expires_at: None,
            justification: "j".into(),
        }
    }

    fn rule(resources: &[&str], verbs: &[&str]) -> KubernetesRule {
        KubernetesRule {
            api_groups: vec!["".into()],
            resources: resources.iter().map(|s| s.to_string()).collect(),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            resource_names: vec![],
        }
    }

    fn payments_and_open() -> Vec<nhi_api::IdentityPolicy> {
        vec![
            policy(
                "payments",
                ns_named("payments"),
                IdentityPolicySpec {
                    grants: grants(&["payments.*"], true),
                    ..built_in_default()
                },
            ),
            policy(
                "open",
                LabelSelector::default(),
                IdentityPolicySpec {
                    grants: grants(&["*"], false),
                    kubernetes_rules: vec![rule(&["configmaps"], &["get", "list"])],
                    ..built_in_default()
                },
            ),
        ]
    }

    #[test]
    fn a_grant_reserved_for_payments_is_refused_in_shop_and_allowed_in_payments() {
        let policies = payments_and_open();
        let shop = effective_policy("shop", &labels_of("shop"), &policies, "cluster.local");
        let refusals = check_entitlement(&ent(&["orders.read", "payments.process"]), &shop);
        assert_eq!(refusals.len(), 1);
        assert_eq!(
            refusals[0].to_string(),
            "spec.grants[1]: refused by IdentityPolicy payments: \"payments.process\" is reserved for other namespaces"
        );
        let pay = effective_policy("payments", &labels_of("payments"), &policies, "c");
        assert_eq!(check_entitlement(&ent(&["payments.process"]), &pay), vec![]);
        // Intersection: payments' policy allows only payments.* there.
        let refusals = check_entitlement(&ent(&["orders.read"]), &pay);
        assert_eq!(refusals[0].policy, "IdentityPolicy payments");
    }

    #[test]
    fn no_policy_allows_no_grant() {
        let eff = effective_policy("x", &labels_of("x"), &[], "cluster.local");
        let refusals = check_entitlement(&ent(&["x.read"]), &eff);
        assert!(refusals[0].to_string().contains("built-in default"));
    }

    #[test]
    fn kubernetes_rules_need_the_allowlist_and_stay_above_the_floor() {
        let policies = payments_and_open();
        let shop = effective_policy("shop", &labels_of("shop"), &policies, "cluster.local");
        let mut e = ent(&["shop.read"]);
        e.kubernetes = Some(KubernetesPermissions {
            rules: vec![
                rule(&["configmaps"], &["get"]),
                rule(&["pods"], &["create"]),
                rule(&["secrets"], &["get"]),
                rule(&["pods/ephemeralcontainers"], &["patch"]),
            ],
        });
        let refusals = check_entitlement(&e, &shop);
        let fields: Vec<_> = refusals
            .iter()
            .map(|r| (r.field.as_str(), r.policy.as_str()))
            .collect();
        assert_eq!(
            fields,
            [
                ("spec.kubernetes.rules[1]", "IdentityPolicy open"),
                ("spec.kubernetes.rules[2]", FLOOR),
                ("spec.kubernetes.rules[3]", FLOOR),
            ]
        );
        assert!(
            refusals[0].what.contains("create on pods (core)"),
            "{}",
            refusals[0]
        );
    }

    #[test]
    fn subjects_are_selected_only_by_protected_labels() {
        let policies = payments_and_open();
        let shop = effective_policy("shop", &labels_of("shop"), &policies, "cluster.local");
        let mut e = ent(&["shop.read"]);
        e.subjects.selector = Some(LabelSelector {
            match_labels: Some([("tier".to_string(), "frontend".to_string())].into()),
            match_expressions: None,
        });
        let refusals = check_entitlement(&e, &shop);
        assert_eq!(refusals.len(), 1);
        assert!(
            refusals[0]
                .to_string()
                .contains("\"tier\" is not protected")
        );
        e.subjects.selector = Some(LabelSelector {
            match_labels: Some(
                [("subject.nhi.dev/tier".to_string(), "frontend".to_string())].into(),
            ),
            match_expressions: None,
        });
        assert_eq!(check_entitlement(&e, &shop), vec![]);
        // Selecting by the absence of a protected label: anyone can lack it.
        e.subjects.selector = Some(LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                    key: "subject.nhi.dev/tier".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        });
        let refusals = check_entitlement(&e, &shop);
        assert_eq!(refusals.len(), 1);
        assert!(refusals[0].what.contains("DoesNotExist"), "{}", refusals[0]);
    }
}
