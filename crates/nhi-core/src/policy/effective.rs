//! Which IdentityPolicies apply to a namespace, and which patterns other namespaces' policies
//! claim alone: the policy a namespace's identities and Entitlements are checked against.

use std::collections::BTreeMap;

use crate::entitle::selector::{selector_matches, selector_problem};
use nhi_api::{ClaimRule, IdentityPolicy, IdentityPolicySpec};

/// How the built-in default is named in messages: what applies where no IdentityPolicy does.
pub const BUILT_IN_DEFAULT: &str = "the built-in default (no IdentityPolicy selects the namespace)";

/// One policy that applies to the namespace.
#[derive(Clone, Debug, PartialEq)]
pub struct AppliedPolicy {
    /// `IdentityPolicy <name>`, or [`BUILT_IN_DEFAULT`].
    pub source: String,
    pub spec: IdentityPolicySpec,
}

/// Patterns a policy that does not select the namespace claims for its own namespaces alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    /// `IdentityPolicy <name>`.
    pub source: String,
    pub patterns: Vec<String>,
}

/// The policy of one namespace: every policy that applies (all must allow: intersection), and
/// what other namespaces' policies reserve.
#[derive(Clone, Debug, PartialEq)]
pub struct EffectivePolicy {
    pub namespace: String,
    /// The cluster's DNS domain (own service names end in `.svc.<cluster_domain>`).
    pub cluster_domain: String,
    /// The policies that apply, sorted by name; the built-in default (an empty policy) when no
    /// IdentityPolicy selects the namespace. Never empty.
    pub applied: Vec<AppliedPolicy>,
    /// DNS name patterns other namespaces' policies claim alone.
    pub reserved_dns_names: Vec<Reservation>,
    /// Grant patterns other namespaces' policies claim alone.
    pub reserved_grants: Vec<Reservation>,
}

/// Whether `policy` selects the namespace with `labels`. A selector that cannot be evaluated
/// selects every namespace: a broken policy restricts more, never less.
pub fn selects(policy: &IdentityPolicySpec, labels: &BTreeMap<String, String>) -> bool {
    selector_problem(&policy.namespace_selector).is_some()
        || selector_matches(&policy.namespace_selector, labels).unwrap_or(true)
}

/// The policy of namespace `namespace` with `labels`, among `policies` (all IdentityPolicies).
pub fn effective_policy<'a>(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    policies: impl IntoIterator<Item = &'a IdentityPolicy>,
    cluster_domain: &str,
) -> EffectivePolicy {
    let mut sorted: Vec<&IdentityPolicy> = policies.into_iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let source = |p: &IdentityPolicy| {
        format!(
            "IdentityPolicy {}",
            p.metadata.name.as_deref().unwrap_or_default()
        )
    };
    let mut applied = vec![];
    let mut reserved_dns_names = vec![];
    let mut reserved_grants = vec![];
    for p in sorted {
        // A policy whose selector cannot be read applies everywhere, and what it claims
        // exclusively is claimed everywhere too: nothing of it is given anywhere.
        let broken = selector_problem(&p.spec.namespace_selector).is_some();
        if selects(&p.spec, labels) {
            applied.push(AppliedPolicy {
                source: source(p),
                spec: p.spec.clone(),
            });
            if !broken {
                continue;
            }
        }
        let exclusive = |rule: &Option<ClaimRule>| {
            rule.as_ref()
                .filter(|r| r.exclusive && !r.allowed.is_empty())
                .map(|r| Reservation {
                    source: source(p),
                    patterns: r.allowed.clone(),
                })
        };
        reserved_dns_names.extend(exclusive(&p.spec.dns_names));
        reserved_grants.extend(exclusive(&p.spec.grants));
    }
    if applied.is_empty() {
        applied.push(AppliedPolicy {
            source: BUILT_IN_DEFAULT.to_string(),
            spec: built_in_default(),
        });
    }
    EffectivePolicy {
        namespace: namespace.to_string(),
        cluster_domain: cluster_domain.to_string(),
        applied,
        reserved_dns_names,
        reserved_grants,
    }
}

/// The empty policy: own service names, no grants, no Kubernetes access or rules, any key
/// algorithm, the operator's TTL bounds, no reserved attributes, no delegation.
pub fn built_in_default() -> IdentityPolicySpec {
    IdentityPolicySpec {
        namespace_selector: Default::default(),
        dns_names: None,
        grants: None,
        max_ttl: None,
        key_algorithms: vec![],
        kubernetes_access: None,
        kubernetes_rules: vec![],
        reserved_attributes: vec![],
        delegation: None,
    }
}

impl EffectivePolicy {
    /// Whether no IdentityPolicy applies (the built-in default does).
    pub fn is_built_in_default(&self) -> bool {
        self.applied.len() == 1 && self.applied[0].source == BUILT_IN_DEFAULT
    }

    /// The names of the policies that apply, for display.
    pub fn sources(&self) -> Vec<&str> {
        self.applied.iter().map(|p| p.source.as_str()).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    pub fn policy(name: &str, selector: LabelSelector, spec: IdentityPolicySpec) -> IdentityPolicy {
        let mut p = IdentityPolicy::new(
            name,
            IdentityPolicySpec {
                namespace_selector: selector,
                ..spec
            },
        );
        p.metadata.name = Some(name.into());
        p
    }

    pub fn ns_named(ns: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some([("kubernetes.io/metadata.name".into(), ns.into())].into()),
            match_expressions: None,
        }
    }

    pub fn labels_of(ns: &str) -> BTreeMap<String, String> {
        [("kubernetes.io/metadata.name".to_string(), ns.to_string())].into()
    }

    pub fn grants(allowed: &[&str], exclusive: bool) -> Option<ClaimRule> {
        Some(ClaimRule {
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
            exclusive,
        })
    }

    #[test]
    fn no_policy_is_the_built_in_default() {
        let eff = effective_policy("shop", &labels_of("shop"), &[], "cluster.local");
        assert!(eff.is_built_in_default());
        assert_eq!(eff.applied[0].spec, built_in_default());
    }

    #[test]
    fn selected_policies_apply_and_others_reserve_what_they_claim_alone() {
        let payments = policy(
            "payments",
            ns_named("payments"),
            IdentityPolicySpec {
                grants: grants(&["payments.*"], true),
                ..built_in_default()
            },
        );
        let open = policy(
            "open",
            LabelSelector::default(),
            IdentityPolicySpec {
                grants: grants(&["*"], false),
                ..built_in_default()
            },
        );
        let policies = [payments, open];
        let shop = effective_policy("shop", &labels_of("shop"), &policies, "cluster.local");
        assert_eq!(shop.sources(), vec!["IdentityPolicy open"]);
        assert_eq!(
            shop.reserved_grants,
            vec![Reservation {
                source: "IdentityPolicy payments".into(),
                patterns: vec!["payments.*".into()]
            }]
        );
        let pay = effective_policy("payments", &labels_of("payments"), &policies, "c");
        assert_eq!(
            pay.sources(),
            vec!["IdentityPolicy open", "IdentityPolicy payments"]
        );
        assert!(pay.reserved_grants.is_empty());
    }

    #[test]
    fn a_selector_that_cannot_be_evaluated_selects_every_namespace() {
        let broken = policy(
            "broken",
            LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "a".into(),
                    operator: "Sometimes".into(),
                    values: None,
                }]),
            },
            built_in_default(),
        );
        let eff = effective_policy("x", &labels_of("x"), &[broken], "cluster.local");
        assert_eq!(eff.sources(), vec!["IdentityPolicy broken"]);
    }

    #[test]
    fn a_broken_selector_keeps_what_its_policy_claims_exclusively_claimed() {
        // A typo in the payments policy's selector must not hand payments.* to every namespace.
        let mut selector = ns_named("payments");
        selector.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "team".into(),
            operator: "in".into(),
            values: Some(vec!["pay".into()]),
        }]);
        let payments = policy(
            "payments",
            selector,
            IdentityPolicySpec {
                grants: grants(&["payments.*"], true),
                ..built_in_default()
            },
        );
        let open = policy(
            "open",
            LabelSelector::default(),
            IdentityPolicySpec {
                grants: grants(&["*"], false),
                ..built_in_default()
            },
        );
        let shop = effective_policy("shop", &labels_of("shop"), &[payments, open], "c");
        assert_eq!(
            shop.sources(),
            vec!["IdentityPolicy open", "IdentityPolicy payments"]
        );
        assert_eq!(shop.reserved_grants[0].patterns, vec!["payments.*"]);
    }
}
