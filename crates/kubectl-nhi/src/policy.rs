//! `kubectl nhi policy [identity]`: the tenant policy of a namespace (which IdentityPolicies apply,
//! and what they allow together), and what it refuses of one identity and of the namespace's
//! Entitlements: why something is not Ready with reason PolicyDenied.

use clap::Args;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::ListParams;
use nhi_api::{Entitlement, IdentityPolicy, MachineIdentity};
use nhi_core::policy::entitlement::check_entitlement;
use nhi_core::policy::identity::check_identity;
use nhi_core::policy::{EffectivePolicy, effective_policy};

use crate::cluster::{GlobalArgs, connect};
use crate::error::{PluginError, Target, from_kube};
use crate::output::fields;

/// `kubectl nhi policy [identity] [--cluster-domain D]`.
#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// A MachineIdentity whose spec to check against the policy.
    pub name: Option<String>,
    /// The cluster's DNS domain (own service names end in `.svc.<domain>`), as the operator's
    /// `--cluster-domain`.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
}

/// Runs `policy`.
pub async fn run(global: &GlobalArgs, args: &PolicyArgs) -> Result<String, PluginError> {
    let cluster = connect(global).await?;
    let ns = cluster.namespace.clone();
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    let target = Target::Object {
        kind: "namespace",
        namespace: "",
        name: &ns,
    };
    let namespace = namespaces
        .get(&ns)
        .await
        .map_err(|e| from_kube(e, target))?;
    let policies: Api<IdentityPolicy> = Api::all(cluster.client.clone());
    let policies = policies
        .list(&ListParams::default())
        .await
        .map_err(|e| from_kube(e, Target::Other))?
        .items;
    let labels = namespace.metadata.labels.clone().unwrap_or_default();
    let policy = effective_policy(&ns, &labels, &policies, &args.cluster_domain);
    let mut out = describe(&policy);
    if let Some(name) = &args.name {
        let api: Api<MachineIdentity> = Api::namespaced(cluster.client.clone(), &ns);
        let target = Target::Identity {
            namespace: &ns,
            name,
        };
        let mi = api.get(name).await.map_err(|e| from_kube(e, target))?;
        out.push_str(&identity_verdict(name, &mi, &policy));
    }
    let entitlements: Api<Entitlement> = Api::namespaced(cluster.client.clone(), &ns);
    let entitlements = entitlements
        .list(&ListParams::default())
        .await
        .map_err(|e| from_kube(e, Target::Other))?
        .items;
    out.push_str(&entitlement_verdicts(&entitlements, &policy));
    Ok(out)
}

/// What the policies that apply allow together.
pub fn describe(policy: &EffectivePolicy) -> String {
    let each = |f: &dyn Fn(&nhi_api::IdentityPolicySpec) -> String| -> String {
        policy
            .applied
            .iter()
            .map(|p| format!("{}: {}", short(&p.source), f(&p.spec)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let list = |items: Vec<String>, empty: &str| match items.is_empty() {
        true => empty.to_string(),
        false => items.join(", "),
    };
    let reserved = |r: &[nhi_core::policy::effective::Reservation]| {
        let items: Vec<String> = r
            .iter()
            .map(|r| format!("{} ({})", r.patterns.join(", "), short(&r.source)))
            .collect();
        list(items, "none")
    };
    let ns = &policy.namespace;
    let own = format!(
        "<service>.{ns}.svc, <service>.{ns}.svc.{}",
        policy.cluster_domain
    );
    let pairs = [
        ("Namespace", ns.clone()),
        (
            "Policies",
            list(policy.sources().iter().map(|s| s.to_string()).collect(), ""),
        ),
        ("Own service names", own),
        (
            "More DNS names",
            each(&|s| {
                let p = s.dns_names.as_ref().map(|d| d.allowed.clone());
                list(p.unwrap_or_default(), "none")
            }),
        ),
        (
            "DNS names reserved elsewhere",
            reserved(&policy.reserved_dns_names),
        ),
        (
            "Grants",
            each(&|s| {
                let p = s.grants.as_ref().map(|g| g.allowed.clone());
                list(p.unwrap_or_default(), "none")
            }),
        ),
        (
            "Grants reserved elsewhere",
            reserved(&policy.reserved_grants),
        ),
        (
            "Max TTL",
            each(&|s| s.max_ttl.clone().unwrap_or_else(|| "the operator's".into())),
        ),
        (
            "Key algorithms",
            each(&|s| {
                let names = s.key_algorithms.iter().map(|k| {
                    serde_json::to_value(k)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                });
                list(names.collect(), "any")
            }),
        ),
        (
            "Kubernetes access",
            each(&|s| match s.kubernetes_access {
                Some(true) => "allowed".into(),
                _ => "not allowed".into(),
            }),
        ),
        (
            "Kubernetes rules",
            each(&|s| {
                let rules = s.kubernetes_rules.iter().map(|r| {
                    format!(
                        "{} on {} ({})",
                        r.verbs.join(","),
                        r.resources.join(","),
                        r.api_groups.join(",")
                    )
                });
                list(rules.collect(), "none")
            }),
        ),
        (
            "Reserved attributes",
            each(&|s| list(s.reserved_attributes.clone(), "none")),
        ),
        (
            "Delegation",
            each(&|s| match &s.delegation {
                None => "not allowed".into(),
                Some(d) => format!(
                    "child TTL up to {}, depth up to {}, up to {} children per minute",
                    d.max_child_ttl.as_deref().unwrap_or("1h"),
                    d.max_depth.unwrap_or(8),
                    d.max_per_minute.unwrap_or(6000)
                ),
            }),
        ),
    ];
    fields(&pairs)
}

/// What the policy refuses of identity `name`, or that it allows it as written.
pub fn identity_verdict(name: &str, mi: &MachineIdentity, policy: &EffectivePolicy) -> String {
    let allowance = check_identity(&mi.spec, policy);
    match allowance.refusals.is_empty() {
        true => format!("\nmachineidentity {name}: allowed as written\n"),
        false => {
            let lines: Vec<String> = allowance
                .refusals
                .iter()
                .map(|r| format!("  - {r}"))
                .collect();
            let issued = match allowance.issuable {
                true => "issued without what is refused",
                false => "nothing is issued",
            };
            format!(
                "\nmachineidentity {name}: {issued} (Ready=False, PolicyDenied)\n{}\n",
                lines.join("\n")
            )
        }
    }
}

/// The namespace's Entitlements the policy refuses, with why.
pub fn entitlement_verdicts(entitlements: &[Entitlement], policy: &EffectivePolicy) -> String {
    let mut out = String::new();
    for ent in entitlements {
        let refusals = check_entitlement(&ent.spec, policy);
        if refusals.is_empty() {
            continue;
        }
        let name = ent.metadata.name.as_deref().unwrap_or_default();
        out.push_str(&format!("\nentitlement {name}: refused, binds nothing\n"));
        for r in refusals {
            out.push_str(&format!("  - {r}\n"));
        }
    }
    out
}

/// `IdentityPolicy x` as `x`; other sources as they are.
fn short(source: &str) -> &str {
    source.strip_prefix("IdentityPolicy ").unwrap_or(source)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nhi_api::{ClaimRule, IdentityPolicySpec};
    use nhi_core::policy::effective::built_in_default;

    fn policy(name: &str, spec: IdentityPolicySpec) -> IdentityPolicy {
        let mut p = IdentityPolicy::new(name, spec);
        p.metadata.name = Some(name.into());
        p
    }

    fn payments_and_default() -> Vec<IdentityPolicy> {
        let mut pay = built_in_default();
        pay.namespace_selector.match_labels = Some(
            [(
                "kubernetes.io/metadata.name".to_string(),
                "payments".to_string(),
            )]
            .into(),
        );
        pay.grants = Some(ClaimRule {
            allowed: vec!["payments.*".into()],
            exclusive: true,
        });
        let mut open = built_in_default();
        open.grants = Some(ClaimRule {
            allowed: vec!["*".into()],
            exclusive: false,
        });
        vec![policy("payments", pay), policy("nhi-default", open)]
    }

    fn shop() -> EffectivePolicy {
        let labels = [(
            "kubernetes.io/metadata.name".to_string(),
            "shop".to_string(),
        )]
        .into();
        effective_policy("shop", &labels, &payments_and_default(), "cluster.local")
    }

    #[test]
    fn describes_what_applies_and_what_other_namespaces_reserve() {
        let text = describe(&shop());
        assert!(text.contains("IdentityPolicy nhi-default"), "{text}");
        assert!(text.contains("<service>.shop.svc.cluster.local"), "{text}");
        assert!(text.contains("payments.* (payments)"), "{text}");
        assert!(text.contains("nhi-default: not allowed"), "{text}");
    }

    #[test]
    fn says_what_is_refused_and_why() {
        let mi: MachineIdentity = serde_json::from_value(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {"owner": {"team": "t"}, "secretName": "s",
                     "certificate": {"dnsNames": ["api.shop.svc", "api.payments.svc"]}}
        }))
        .unwrap();
        let text = identity_verdict("api", &mi, &shop());
        assert!(text.contains("issued without what is refused"), "{text}");
        assert!(
            text.contains("\"api.payments.svc\" is not allowed"),
            "{text}"
        );
        let ent: Entitlement = serde_json::from_value(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": "steal", "namespace": "shop"},
            "spec": {"subjects": {"names": ["api"]}, "grants": ["payments.process"], "justification": "j"}
        }))
        .unwrap();
        let text = entitlement_verdicts(&[ent], &shop());
        assert!(text.contains("entitlement steal: refused"), "{text}");
        assert!(
            text.contains("refused by IdentityPolicy payments: \"payments.process\" is reserved"),
            "{text}"
        );
    }
}
