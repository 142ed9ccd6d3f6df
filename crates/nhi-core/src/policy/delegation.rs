//! What a namespace's IdentityPolicies allow of delegation: whether its identities may delegate
//! at all, the narrowest of the policies' bounds, and what of an identity's `spec.delegation`
//! they refuse.

use time::Duration;

use super::Refusal;
use super::effective::EffectivePolicy;
use crate::duration::parse_go_duration;
use nhi_api::DelegationSpec;

/// One bound and the policy that sets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bound<T> {
    pub value: T,
    /// `IdentityPolicy <name>`.
    pub policy: String,
}

/// What the policies of a namespace allow of delegation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DelegationBound {
    /// A policy that applies does not allow it (its name, and why).
    Denied { policy: String, why: String },
    /// Every policy that applies allows it; the narrowest bound each sets (None: none sets it).
    Allowed {
        max_child_ttl: Option<Bound<Duration>>,
        max_depth: Option<Bound<usize>>,
        max_per_minute: Option<Bound<u32>>,
    },
}

impl DelegationBound {
    /// The refusal's text when delegation is denied.
    pub fn denial(&self) -> Option<String> {
        match self {
            DelegationBound::Denied { policy, why } => Some(format!("refused by {policy}: {why}")),
            DelegationBound::Allowed { .. } => None,
        }
    }
}

/// Keeps the narrower of `current` and `value` (from `policy`).
fn narrow<T: Ord + Copy>(current: &mut Option<Bound<T>>, value: T, policy: &str) {
    if current.as_ref().is_none_or(|b| value < b.value) {
        *current = Some(Bound {
            value,
            policy: policy.to_string(),
        });
    }
}

/// Why a bound the schema should have refused denies delegation.
fn out_of_range(field: &str, value: Option<i32>) -> String {
    format!(
        "the policy's delegation.{field} {} is out of range",
        value.unwrap_or_default()
    )
}

/// The delegation bound of `policy`: denied when any policy that applies has no `delegation`
/// (or one with a bound that cannot be read or is out of range), else the narrowest of their bounds.
pub fn delegation_bound(policy: &EffectivePolicy) -> DelegationBound {
    let (mut max_child_ttl, mut max_depth, mut max_per_minute) = (None, None, None);
    for p in &policy.applied {
        let denied = |why: String| DelegationBound::Denied {
            policy: p.source.clone(),
            why,
        };
        let Some(bounds) = &p.spec.delegation else {
            return denied("delegation is not allowed (the policy has no delegation)".into());
        };
        if let Some(text) = &bounds.max_child_ttl {
            match parse_go_duration(text) {
                Ok(d) => narrow(&mut max_child_ttl, d, &p.source),
                Err(e) => {
                    return denied(format!(
                        "the policy's delegation.maxChildTTL {text:?} cannot be read ({e})"
                    ));
                }
            }
        }
        match bounds
            .max_depth
            .map(|d| usize::try_from(d).ok().filter(|d| *d >= 1))
        {
            None => {}
            Some(Some(d)) => narrow(&mut max_depth, d, &p.source),
            Some(None) => return denied(out_of_range("maxDepth", bounds.max_depth)),
        }
        match bounds
            .max_per_minute
            .map(|n| u32::try_from(n).ok().filter(|n| *n >= 1))
        {
            None => {}
            Some(Some(n)) => narrow(&mut max_per_minute, n, &p.source),
            Some(None) => return denied(out_of_range("maxPerMinute", bounds.max_per_minute)),
        }
    }
    DelegationBound::Allowed {
        max_child_ttl,
        max_depth,
        max_per_minute,
    }
}

/// What `bound` refuses of `spec` (the identity's `spec.delegation`): everything when
/// delegation is denied, else each limit set wider than its bound (it is narrowed to the bound).
/// A limit left out is never refused: its default is narrowed.
pub fn delegation_refusals(spec: &DelegationSpec, bound: &DelegationBound) -> Vec<Refusal> {
    let (max_child_ttl, max_depth, max_per_minute) = match bound {
        DelegationBound::Denied { policy, why } => {
            return vec![Refusal {
                field: "spec.delegation".into(),
                policy: policy.clone(),
                what: format!("{why}; nothing is delegated"),
            }];
        }
        DelegationBound::Allowed {
            max_child_ttl,
            max_depth,
            max_per_minute,
        } => (max_child_ttl, max_depth, max_per_minute),
    };
    let mut refusals = vec![];
    let mut wider = |field: &str, asked: String, bound: &str, policy: &str| {
        refusals.push(Refusal {
            field: format!("spec.delegation.{field}"),
            policy: policy.to_string(),
            what: format!("{asked} is more than the maximum {bound} (the maximum applies)"),
        })
    };
    if let (Some(text), Some(b)) = (&spec.max_child_ttl, max_child_ttl)
        && parse_go_duration(text).is_ok_and(|d| d > b.value)
    {
        let max = format!("{}s", b.value.whole_seconds());
        wider("maxChildTTL", text.clone(), &max, &b.policy);
    }
    if let (Some(d), Some(b)) = (spec.max_depth, max_depth)
        && usize::try_from(d).is_ok_and(|d| d > b.value)
    {
        wider("maxDepth", d.to_string(), &b.value.to_string(), &b.policy);
    }
    if let (Some(n), Some(b)) = (spec.max_per_minute, max_per_minute)
        && u32::try_from(n).is_ok_and(|n| n > b.value)
    {
        wider(
            "maxPerMinute",
            n.to_string(),
            &b.value.to_string(),
            &b.policy,
        );
    }
    refusals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::effective::effective_policy;
    use crate::policy::effective::tests::{labels_of, policy};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
    use nhi_api::{DelegationBounds, IdentityPolicySpec};

    fn spec_with(delegation: Option<DelegationBounds>) -> IdentityPolicySpec {
        IdentityPolicySpec {
            delegation,
            ..crate::policy::effective::built_in_default()
        }
    }

    fn bounds(ttl: Option<&str>, depth: Option<i32>, per_minute: Option<i32>) -> DelegationBounds {
        DelegationBounds {
            max_child_ttl: ttl.map(str::to_string),
            max_depth: depth,
            max_per_minute: per_minute,
        }
    }

    fn bound_of(specs: Vec<(&str, IdentityPolicySpec)>) -> DelegationBound {
        let policies: Vec<_> = specs
            .into_iter()
            .map(|(name, spec)| policy(name, LabelSelector::default(), spec))
            .collect();
        delegation_bound(&effective_policy(
            "agents",
            &labels_of("agents"),
            &policies,
            "cluster.local",
        ))
    }

    #[test]
    fn no_policy_and_a_policy_without_delegation_deny_it() {
        let denied = bound_of(vec![]);
        assert!(
            matches!(&denied, DelegationBound::Denied { policy, .. } if policy.contains("built-in default")),
            "{denied:?}"
        );
        let mixed = bound_of(vec![
            ("a-allows", spec_with(Some(DelegationBounds::default()))),
            ("b-silent", spec_with(None)),
        ]);
        assert_eq!(
            mixed.denial().unwrap(),
            "refused by IdentityPolicy b-silent: delegation is not allowed (the policy has no delegation)"
        );
    }

    #[test]
    fn several_policies_give_the_narrowest_of_each_bound_and_name_who_sets_it() {
        let b = bound_of(vec![
            ("a", spec_with(Some(bounds(Some("10m"), Some(4), None)))),
            (
                "b",
                spec_with(Some(bounds(Some("30m"), Some(2), Some(100)))),
            ),
        ]);
        let DelegationBound::Allowed {
            max_child_ttl,
            max_depth,
            max_per_minute,
        } = b
        else {
            panic!("{b:?}")
        };
        assert_eq!(max_child_ttl.unwrap().value, Duration::minutes(10));
        let depth = max_depth.unwrap();
        assert_eq!(
            (depth.value, depth.policy.as_str()),
            (2, "IdentityPolicy b")
        );
        assert_eq!(max_per_minute.unwrap().value, 100);
    }

    #[test]
    fn an_unreadable_bound_denies_rather_than_widens() {
        let b = bound_of(vec![(
            "a",
            spec_with(Some(bounds(Some("99999999999999999999h"), None, None))),
        )]);
        assert!(b.denial().unwrap().contains("cannot be read"), "{b:?}");
        for (depth, per_minute) in [(Some(0), None), (None, Some(0)), (Some(-3), None)] {
            let b = bound_of(vec![(
                "a",
                spec_with(Some(bounds(None, depth, per_minute))),
            )]);
            assert!(b.denial().unwrap().contains("out of range"), "{b:?}");
        }
    }

    #[test]
    fn a_limit_set_wider_is_refused_and_a_limit_left_out_is_not() {
        let b = bound_of(vec![(
            "a",
            spec_with(Some(bounds(Some("2m"), Some(1), Some(10)))),
        )]);
        let asked = DelegationSpec {
            max_child_ttl: Some("5m".into()),
            max_depth: Some(3),
            max_per_minute: Some(10),
            grants: None,
        };
        let fields: Vec<String> = delegation_refusals(&asked, &b)
            .into_iter()
            .map(|r| format!("{}: {}", r.field, r.what))
            .collect();
        assert_eq!(
            fields,
            [
                "spec.delegation.maxChildTTL: 5m is more than the maximum 120s (the maximum applies)",
                "spec.delegation.maxDepth: 3 is more than the maximum 1 (the maximum applies)",
            ]
        );
        assert!(delegation_refusals(&DelegationSpec::default(), &b).is_empty());
        let denied = bound_of(vec![("a", spec_with(None))]);
        let refused = delegation_refusals(&DelegationSpec::default(), &denied);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].field, "spec.delegation");
    }
}
