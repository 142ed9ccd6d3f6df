//! What a MachineIdentity may claim under its namespace's policy: the DNS names, attributes,
//! lifetime and Kubernetes access its certificate may carry, the delegation it may allow, and
//! what is refused.

use time::Duration;

use super::delegation::{delegation_bound, delegation_refusals};
use super::effective::EffectivePolicy;
use super::pattern::{attribute_reserved, dns_matches, dns_overlaps, own_service_name};
use super::{Refusal, refusal_message};
use crate::duration::parse_go_duration;
use nhi_api::{Attributes, DnsName, KubernetesAccess, MachineIdentity, MachineIdentitySpec};

/// What an identity's certificate may carry under its policy.
#[derive(Clone, Debug, PartialEq)]
pub struct IdentityAllowance {
    /// The spec's DNS names the policy allows, in the spec's order.
    pub dns_names: Vec<String>,
    /// The spec's attributes less the reserved ones.
    pub attributes: Attributes,
    /// The longest lifetime allowed and the policy that sets it (None: the operator's bound).
    pub max_ttl: Option<(Duration, String)>,
    /// Whether the identity may have Kubernetes access.
    pub kubernetes_access: bool,
    /// Whether anything may be issued at all (the key algorithm is allowed, the policy is
    /// readable).
    pub issuable: bool,
    /// What the policy refuses.
    pub refusals: Vec<Refusal>,
}

impl IdentityAllowance {
    /// The refusals as one message, when there are any.
    pub fn denial(&self) -> Option<String> {
        (!self.refusals.is_empty()).then(|| refusal_message(&self.refusals))
    }
}

/// Checks identity `spec` against `policy`.
pub fn check_identity(spec: &MachineIdentitySpec, policy: &EffectivePolicy) -> IdentityAllowance {
    let mut refusals = vec![];
    let dns_names = allowed_dns_names(spec, policy, &mut refusals);
    let attributes = allowed_attributes(spec, policy, &mut refusals);
    let (max_ttl, readable) = max_ttl(policy, &mut refusals);
    if let (Some((max, source)), Some(asked)) = (&max_ttl, spec.certificate.ttl.as_deref())
        && parse_go_duration(asked).is_ok_and(|ttl| ttl > *max)
    {
        refusals.push(Refusal {
            field: "spec.certificate.ttl".into(),
            policy: source.clone(),
            what: format!(
                "{asked} is longer than the maximum {}s (certificates are issued for the maximum)",
                max.whole_seconds()
            ),
        });
    }
    let key_allowed = key_algorithm_allowed(spec, policy, &mut refusals);
    let wants_access = spec.kubernetes_access.as_ref().is_some_and(|k| k.enabled);
    let kubernetes_access = wants_access && kubernetes_access_allowed(policy, &mut refusals);
    if let Some(delegation) = &spec.delegation {
        refusals.extend(delegation_refusals(delegation, &delegation_bound(policy)));
    }
    IdentityAllowance {
        dns_names,
        attributes,
        max_ttl,
        kubernetes_access,
        issuable: key_allowed && readable,
        refusals,
    }
}

fn allowed_dns_names(
    spec: &MachineIdentitySpec,
    policy: &EffectivePolicy,
    refusals: &mut Vec<Refusal>,
) -> Vec<String> {
    let mut kept = vec![];
    for (i, DnsName(name)) in spec.certificate.dns_names.iter().enumerate() {
        let field = format!("spec.certificate.dnsNames[{i}]");
        if own_service_name(name, &policy.namespace, &policy.cluster_domain) {
            kept.push(name.clone());
            continue;
        }
        let not_allowed = policy.applied.iter().find(|p| {
            let patterns = p.spec.dns_names.as_ref().map(|r| r.allowed.as_slice());
            !patterns
                .unwrap_or_default()
                .iter()
                .any(|pat| dns_matches(pat, name))
        });
        if let Some(p) = not_allowed {
            refusals.push(Refusal {
                field,
                policy: p.source.clone(),
                what: format!(
                    "{name:?} is not allowed (only the namespace's own service names, \
                     <service>.{ns}.svc, and the policy's dnsNames are)",
                    ns = policy.namespace
                ),
            });
            continue;
        }
        if let Some(r) = policy
            .reserved_dns_names
            .iter()
            .find(|r| r.patterns.iter().any(|pat| dns_overlaps(pat, name)))
        {
            refusals.push(Refusal {
                field,
                policy: r.source.clone(),
                what: format!("{name:?} is reserved for other namespaces"),
            });
            continue;
        }
        kept.push(name.clone());
    }
    kept
}

fn allowed_attributes(
    spec: &MachineIdentitySpec,
    policy: &EffectivePolicy,
    refusals: &mut Vec<Refusal>,
) -> Attributes {
    let mut kept = Attributes::new();
    for (key, value) in &spec.attributes {
        let reserving = policy.applied.iter().find(|p| {
            p.spec
                .reserved_attributes
                .iter()
                .any(|pat| attribute_reserved(pat, key))
        });
        match reserving {
            Some(p) => refusals.push(Refusal {
                field: format!("spec.attributes.{key}"),
                policy: p.source.clone(),
                what: "the key is reserved for the platform".into(),
            }),
            None => {
                kept.insert(key.clone(), value.clone());
            }
        }
    }
    kept
}

/// The shortest `maxTTL` of the policies that apply, and whether every one could be read (one
/// that cannot is a refusal: nothing is issued rather than too long).
fn max_ttl(
    policy: &EffectivePolicy,
    refusals: &mut Vec<Refusal>,
) -> (Option<(Duration, String)>, bool) {
    let mut shortest: Option<(Duration, String)> = None;
    let mut readable = true;
    for p in &policy.applied {
        let Some(text) = p.spec.max_ttl.as_deref() else {
            continue;
        };
        match parse_go_duration(text) {
            Ok(d) if shortest.as_ref().is_none_or(|(s, _)| d < *s) => {
                shortest = Some((d, p.source.clone()))
            }
            Ok(_) => {}
            Err(e) => {
                readable = false;
                refusals.push(Refusal {
                    field: "spec.certificate.ttl".into(),
                    policy: p.source.clone(),
                    what: format!("the policy's maxTTL {text:?} cannot be read ({e})"),
                });
            }
        }
    }
    (shortest, readable)
}

fn key_algorithm_allowed(
    spec: &MachineIdentitySpec,
    policy: &EffectivePolicy,
    refusals: &mut Vec<Refusal>,
) -> bool {
    let algorithm = spec.certificate.key_algorithm;
    let refusing = policy
        .applied
        .iter()
        .find(|p| !p.spec.key_algorithms.is_empty() && !p.spec.key_algorithms.contains(&algorithm));
    if let Some(p) = refusing {
        let name = serde_json::to_value(algorithm)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        refusals.push(Refusal {
            field: "spec.certificate.keyAlgorithm".into(),
            policy: p.source.clone(),
            what: format!("{name} is not allowed (nothing is issued)"),
        });
    }
    refusing.is_none()
}

/// Whether every policy that applies allows Kubernetes API access.
pub fn kubernetes_access_allowed_by(policy: &EffectivePolicy) -> bool {
    policy
        .applied
        .iter()
        .all(|p| p.spec.kubernetes_access == Some(true))
}

fn kubernetes_access_allowed(policy: &EffectivePolicy, refusals: &mut Vec<Refusal>) -> bool {
    let refusing = policy
        .applied
        .iter()
        .find(|p| p.spec.kubernetes_access != Some(true));
    if let Some(p) = refusing {
        refusals.push(Refusal {
            field: "spec.kubernetesAccess.enabled".into(),
            policy: p.source.clone(),
            what: "Kubernetes API access is not allowed".into(),
        });
    }
    refusing.is_none()
}

/// The identity as its policy allows it: refused DNS names and reserved attributes left out,
/// the lifetime shortened to the maximum, Kubernetes access off when refused. What is issued
/// is resolved from this.
pub fn as_allowed(
    mi: &MachineIdentity,
    allowance: &IdentityAllowance,
    default_ttl: Duration,
) -> MachineIdentity {
    let mut allowed = mi.clone();
    let spec = &mut allowed.spec;
    spec.certificate.dns_names = allowance.dns_names.iter().cloned().map(DnsName).collect();
    spec.attributes = allowance.attributes.clone();
    if let Some((max, _)) = &allowance.max_ttl {
        let asked = match spec.certificate.ttl.as_deref() {
            Some(t) => parse_go_duration(t).ok(),
            None => Some(default_ttl),
        };
        if asked.is_some_and(|t| t > *max) {
            spec.certificate.ttl = Some(format!("{}s", max.whole_seconds()));
        }
    }
    if !allowance.kubernetes_access && spec.kubernetes_access.is_some() {
        spec.kubernetes_access = Some(KubernetesAccess { enabled: false });
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::effective::tests::{grants, labels_of, ns_named, policy};
    use crate::policy::effective::{built_in_default, effective_policy};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use nhi_api::{ClaimRule, IdentityPolicySpec, KeyAlgorithm, Owner};

    fn spec(dns: &[&str]) -> MachineIdentitySpec {
        let mut s: MachineIdentitySpec = serde_json::from_value(serde_json::json!({
            "owner": {"team": "t"}, "secretName": "s"
        }))
        .unwrap();
        s.owner = Owner {
            team: "t".into(),
            contact: None,
        };
        s.certificate.dns_names = dns.iter().map(|d| DnsName(d.to_string())).collect();
        s
    }

    fn default_in(ns: &str) -> EffectivePolicy {
        effective_policy(ns, &labels_of(ns), &[], "cluster.local")
    }

    #[test]
    fn without_a_policy_only_the_namespaces_own_service_names_are_allowed() {
        let s = spec(&[
            "api.evil.svc",
            "api.evil.svc.cluster.local",
            "payments-api.payments.svc",
            "*.payments.svc",
            "kubernetes.default.svc",
            "*.evil.svc",
        ]);
        let a = check_identity(&s, &default_in("evil"));
        assert_eq!(
            a.dns_names,
            vec!["api.evil.svc", "api.evil.svc.cluster.local"]
        );
        let fields: Vec<_> = a.refusals.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.certificate.dnsNames[2]",
                "spec.certificate.dnsNames[3]",
                "spec.certificate.dnsNames[4]",
                "spec.certificate.dnsNames[5]"
            ]
        );
        assert!(a.issuable);
        let message = a.denial().unwrap();
        assert!(
            message.contains("refused by the built-in default")
                && message.contains("\"payments-api.payments.svc\" is not allowed"),
            "{message}"
        );
        assert!(message.contains("built-in default"), "{message}");
        assert!(message.contains("and 1 more"), "{message}");
    }

    #[test]
    fn a_policy_widens_dns_names_and_another_namespace_may_be_kept_out() {
        let ingress = policy(
            "ingress",
            ns_named("edge"),
            IdentityPolicySpec {
                dns_names: Some(ClaimRule {
                    allowed: vec!["*.example.com".into()],
                    exclusive: true,
                }),
                ..built_in_default()
            },
        );
        let open = policy(
            "open",
            LabelSelector::default(),
            IdentityPolicySpec {
                dns_names: Some(ClaimRule {
                    allowed: vec!["*.example.com".into(), "*.other.org".into()],
                    exclusive: false,
                }),
                ..built_in_default()
            },
        );
        let policies = [ingress, open];
        let s = spec(&["shop.example.com", "x.other.org", "api.edge.svc"]);
        let edge = effective_policy("edge", &labels_of("edge"), &policies, "cluster.local");
        let a = check_identity(&s, &edge);
        // Intersection: ingress allows only *.example.com (and own names) in edge.
        assert_eq!(a.dns_names, vec!["shop.example.com", "api.edge.svc"]);
        assert_eq!(a.refusals[0].policy, "IdentityPolicy ingress");
        let s = spec(&["shop.example.com", "x.other.org", "api.shop.svc"]);
        let shop = effective_policy("shop", &labels_of("shop"), &policies, "cluster.local");
        let a = check_identity(&s, &shop);
        // shop may use *.other.org, but *.example.com is edge's alone.
        assert_eq!(a.dns_names, vec!["x.other.org", "api.shop.svc"]);
        assert!(
            a.refusals[0].to_string().contains("reserved"),
            "{:?}",
            a.refusals
        );
        assert_eq!(a.refusals[0].policy, "IdentityPolicy ingress");
    }

    #[test]
    fn a_wildcard_over_a_reserved_name_is_refused() {
        let edge = policy(
            "edge",
            ns_named("edge"),
            IdentityPolicySpec {
                dns_names: Some(ClaimRule {
                    allowed: vec!["api.example.com".into()],
                    exclusive: true,
                }),
                ..built_in_default()
            },
        );
        let open = policy(
            "open",
            LabelSelector::default(),
            IdentityPolicySpec {
                dns_names: Some(ClaimRule {
                    allowed: vec!["*.example.com".into()],
                    exclusive: false,
                }),
                ..built_in_default()
            },
        );
        let shop = effective_policy("shop", &labels_of("shop"), &[edge, open], "cluster.local");
        let a = check_identity(&spec(&["*.example.com", "web.example.com"]), &shop);
        assert_eq!(a.dns_names, vec!["web.example.com"]);
        assert!(
            a.refusals[0].to_string().contains("reserved"),
            "{:?}",
            a.refusals
        );
    }

    #[test]
    fn ttl_key_algorithm_access_and_reserved_attributes() {
        let strict = policy(
            "strict",
            LabelSelector::default(),
            IdentityPolicySpec {
                max_ttl: Some("2h".into()),
                key_algorithms: vec![KeyAlgorithm::EcdsaP256],
                reserved_attributes: vec!["security-level".into(), "compliance.*".into()],
                kubernetes_access: Some(false),
                grants: grants(&["*"], false),
                ..built_in_default()
            },
        );
        let looser = policy(
            "looser",
            LabelSelector::default(),
            IdentityPolicySpec {
                max_ttl: Some("1h".into()),
                kubernetes_access: Some(true),
                ..built_in_default()
            },
        );
        let eff = effective_policy("a", &labels_of("a"), &[strict, looser], "cluster.local");
        let mut s = spec(&[]);
        s.certificate.ttl = Some("90m".into());
        s.certificate.key_algorithm = KeyAlgorithm::Ed25519;
        s.kubernetes_access = Some(KubernetesAccess { enabled: true });
        s.attributes = [
            ("security-level".to_string(), "high".to_string()),
            ("compliance.pci".to_string(), "yes".to_string()),
            ("project".to_string(), "p".to_string()),
        ]
        .into();
        let a = check_identity(&s, &eff);
        assert_eq!(
            a.max_ttl,
            Some((Duration::hours(1), "IdentityPolicy looser".into()))
        );
        assert!(!a.issuable);
        assert!(!a.kubernetes_access);
        assert_eq!(a.attributes.keys().collect::<Vec<_>>(), vec!["project"]);
        let fields: Vec<_> = a.refusals.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.attributes.compliance.pci",
                "spec.attributes.security-level",
                "spec.certificate.ttl",
                "spec.certificate.keyAlgorithm",
                "spec.kubernetesAccess.enabled"
            ]
        );
        assert!(a.refusals[3].to_string().contains("Ed25519 is not allowed"));
        assert_eq!(a.refusals[4].policy, "IdentityPolicy strict");
    }

    #[test]
    fn the_allowed_identity_is_what_is_issued() {
        let capped = policy(
            "capped",
            LabelSelector::default(),
            IdentityPolicySpec {
                max_ttl: Some("30m".into()),
                ..built_in_default()
            },
        );
        let eff = effective_policy("pay", &labels_of("pay"), &[capped], "cluster.local");
        let mut mi = MachineIdentity::new("api", spec(&["api.pay.svc", "evil.example.com"]));
        mi.spec.kubernetes_access = Some(KubernetesAccess { enabled: true });
        let a = check_identity(&mi.spec, &eff);
        // No ttl asked: the operator's default (1h) is shortened silently.
        assert!(a.refusals.iter().all(|r| r.field != "spec.certificate.ttl"));
        let allowed = as_allowed(&mi, &a, Duration::hours(1));
        assert_eq!(allowed.spec.certificate.ttl.as_deref(), Some("1800s"));
        assert_eq!(
            allowed.spec.certificate.dns_names,
            vec![DnsName("api.pay.svc".into())]
        );
        assert!(!allowed.wants_kubernetes_access());
        // A default shorter than the maximum is left alone.
        let allowed = as_allowed(&mi, &a, Duration::minutes(20));
        assert_eq!(allowed.spec.certificate.ttl, None);
    }

    #[test]
    fn an_unreadable_max_ttl_issues_nothing() {
        let odd = policy(
            "odd",
            LabelSelector::default(),
            IdentityPolicySpec {
                max_ttl: Some("99999999999999999999h".into()),
                ..built_in_default()
            },
        );
        let eff = effective_policy("a", &labels_of("a"), &[odd], "cluster.local");
        let a = check_identity(&spec(&[]), &eff);
        assert!(!a.issuable);
        assert!(a.denial().unwrap().contains("cannot be read"));
    }
}
