//! The parent's side of a delegation as its MachineIdentity says it: the limits
//! `spec.delegation` sets, where the identity stands, and whether a certificate of the chain
//! that asks is revoked.

use time::{Duration, OffsetDateTime};

use super::decide::{DelegationPolicy, ParentCertificate, Standing};
use crate::duration::parse_go_duration;
use crate::lifecycle::review::{ReviewState, parse_review_date, review_state};
use crate::policy::delegation::DelegationBound;
use nhi_api::{DelegationSpec, MachineIdentity};
use nhi_identity::delegation::MAX_CHAIN;
use nhi_identity::timestamp::rfc3339;

/// A child's longest life when `maxChildTTL` is not set.
pub const DEFAULT_MAX_CHILD_TTL: Duration = Duration::minutes(5);
/// The depth when `maxDepth` is not set: the identity's own certificate delegates, children not.
pub const DEFAULT_MAX_DEPTH: usize = 1;
/// Children per minute when `maxPerMinute` is not set.
pub const DEFAULT_PER_MINUTE: u32 = 60;

/// What an identity's `spec.delegation` allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelegationLimits {
    pub policy: DelegationPolicy,
    /// Children per minute, for the identity and its descendants together.
    pub per_minute: u32,
}

/// The limits of `spec` (defaults for what it leaves out). A value the schema should have
/// refused is an error naming it, never a wider limit.
pub fn limits(spec: &DelegationSpec) -> Result<DelegationLimits, String> {
    let max_child_ttl = match &spec.max_child_ttl {
        None => DEFAULT_MAX_CHILD_TTL,
        Some(text) => parse_go_duration(text)
            .ok()
            .filter(|d| *d >= Duration::seconds(10) && *d <= Duration::hours(1))
            .ok_or_else(|| {
                format!("spec.delegation.maxChildTTL {text:?} is not between 10s and 1h")
            })?,
    };
    let max_depth = match spec.max_depth {
        None => DEFAULT_MAX_DEPTH,
        Some(d) => usize::try_from(d)
            .ok()
            .filter(|d| (1..=MAX_CHAIN).contains(d))
            .ok_or_else(|| {
                format!("spec.delegation.maxDepth {d} is not between 1 and {MAX_CHAIN}")
            })?,
    };
    let per_minute = match spec.max_per_minute {
        None => DEFAULT_PER_MINUTE,
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=6000).contains(n))
            .ok_or_else(|| format!("spec.delegation.maxPerMinute {n} is not between 1 and 6000"))?,
    };
    Ok(DelegationLimits {
        policy: DelegationPolicy {
            max_child_ttl,
            max_depth,
            delegable: spec.grants.as_ref().map(|g| g.iter().cloned().collect()),
            max_depth_by: None,
        },
        per_minute,
    })
}

/// `limits` narrowed to what the namespace's IdentityPolicies allow: each limit at most its
/// bound (the policy that sets a tighter depth is named in refusals). A `Denied` bound leaves
/// them as they are: the denial is the parent's, and refuses everything.
pub fn within(mut limits: DelegationLimits, bound: &DelegationBound) -> DelegationLimits {
    let DelegationBound::Allowed {
        max_child_ttl,
        max_depth,
        max_per_minute,
    } = bound
    else {
        return limits;
    };
    if let Some(b) = max_child_ttl {
        limits.policy.max_child_ttl = limits.policy.max_child_ttl.min(b.value);
    }
    if let Some(b) = max_depth
        && b.value < limits.policy.max_depth
    {
        limits.policy.max_depth = b.value;
        limits.policy.max_depth_by = Some(b.policy.clone());
    }
    if let Some(b) = max_per_minute {
        limits.per_minute = limits.per_minute.min(b.value);
    }
    limits
}

/// Where `mi` stands for delegation at `now` (its review lapses `review_warning` after the
/// warning starts, as for issuance).
pub fn standing(mi: &MachineIdentity, review_warning: Duration, now: OffsetDateTime) -> Standing {
    if mi.metadata.deletion_timestamp.is_some() {
        return Standing::Deleting;
    }
    let review_by = mi.spec.review_by.as_deref();
    match review_state(review_by.and_then(parse_review_date), review_warning, now) {
        ReviewState::Overdue { lapsed_at } => Standing::Suspended(format!(
            "its review (reviewBy {}) lapsed at {}",
            review_by.unwrap_or_default(),
            rfc3339(lapsed_at)
        )),
        _ => Standing::Current,
    }
}

/// The first serial of the asking certificate's chain (its ancestors, then itself) that
/// `is_revoked` says is revoked.
pub fn revoked_in_chain(
    certificate: &ParentCertificate,
    is_revoked: impl Fn(&str) -> bool,
) -> Option<String> {
    let ancestors = certificate
        .delegation
        .iter()
        .flat_map(|d| d.ancestors.iter().map(|a| a.serial_hex.as_str()));
    ancestors
        .chain(std::iter::once(certificate.serial_hex.as_str()))
        .find(|serial| is_revoked(serial))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nhi_identity::delegation::{Ancestor, Delegation};

    fn mi(extra: serde_json::Value) -> MachineIdentity {
        let mut spec = serde_json::json!({"owner": {"team": "t"}, "secretName": "s"});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
            "metadata": {"name": "agent", "namespace": "support"}, "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn an_empty_delegation_takes_the_defaults_and_each_field_narrows_them() {
        let d = limits(&DelegationSpec::default()).unwrap();
        assert_eq!(d.policy.max_child_ttl, DEFAULT_MAX_CHILD_TTL);
        assert_eq!(d.policy.max_depth, 1);
        assert_eq!(d.policy.delegable, None);
        assert_eq!(d.per_minute, 60);
        let d = limits(&DelegationSpec {
            max_child_ttl: Some("90s".into()),
            max_depth: Some(3),
            max_per_minute: Some(5),
            grants: Some(vec!["payments.refund".into()]),
        })
        .unwrap();
        assert_eq!(d.policy.max_child_ttl, Duration::seconds(90));
        assert_eq!(d.policy.max_depth, 3);
        assert_eq!(
            d.policy.delegable,
            Some(["payments.refund".to_string()].into())
        );
        assert_eq!(d.per_minute, 5);
        assert_eq!(
            limits(&DelegationSpec {
                grants: Some(vec![]),
                ..Default::default()
            })
            .unwrap()
            .policy
            .delegable,
            Some(Default::default()),
            "an empty list delegates nothing, not everything"
        );
    }

    #[test]
    fn a_value_past_the_schema_is_an_error_never_a_wider_limit() {
        for spec in [
            DelegationSpec {
                max_child_ttl: Some("2h".into()),
                ..Default::default()
            },
            DelegationSpec {
                max_child_ttl: Some("soon".into()),
                ..Default::default()
            },
            DelegationSpec {
                max_depth: Some(9),
                ..Default::default()
            },
            DelegationSpec {
                max_depth: Some(0),
                ..Default::default()
            },
            DelegationSpec {
                max_per_minute: Some(-1),
                ..Default::default()
            },
        ] {
            let e = limits(&spec).unwrap_err();
            assert!(e.starts_with("spec.delegation."), "{e}");
        }
    }

    #[test]
    fn the_namespace_bound_narrows_each_limit_and_never_widens_one() {
        use crate::policy::delegation::Bound;
        let asked = limits(&DelegationSpec {
            max_child_ttl: Some("20m".into()),
            max_depth: Some(3),
            max_per_minute: Some(5),
            grants: None,
        })
        .unwrap();
        let bound = |ttl: i64, depth: usize, per_minute: u32| DelegationBound::Allowed {
            max_child_ttl: Some(Bound {
                value: Duration::minutes(ttl),
                policy: "IdentityPolicy p".into(),
            }),
            max_depth: Some(Bound {
                value: depth,
                policy: "IdentityPolicy p".into(),
            }),
            max_per_minute: Some(Bound {
                value: per_minute,
                policy: "IdentityPolicy p".into(),
            }),
        };
        let narrowed = within(asked.clone(), &bound(10, 2, 100));
        assert_eq!(narrowed.policy.max_child_ttl, Duration::minutes(10));
        assert_eq!(narrowed.policy.max_depth, 2);
        assert_eq!(
            narrowed.policy.max_depth_by.as_deref(),
            Some("IdentityPolicy p")
        );
        assert_eq!(narrowed.per_minute, 5, "the identity's own, tighter");
        let wide = within(asked.clone(), &bound(60, 8, 6000));
        assert_eq!(wide, asked, "a wider bound changes nothing");
        let unbounded = DelegationBound::Allowed {
            max_child_ttl: None,
            max_depth: None,
            max_per_minute: None,
        };
        assert_eq!(within(asked.clone(), &unbounded), asked);
    }

    #[test]
    fn a_lapsed_review_suspends_and_a_deletion_ends_delegation() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let week = Duration::days(7);
        assert_eq!(
            standing(&mi(serde_json::json!({})), week, now),
            Standing::Current
        );
        let lapsed = mi(serde_json::json!({"reviewBy": "2026-01-31"}));
        match standing(&lapsed, week, now) {
            Standing::Suspended(why) => assert!(why.contains("reviewBy 2026-01-31"), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut deleting = mi(serde_json::json!({}));
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert_eq!(standing(&deleting, week, now), Standing::Deleting);
    }

    #[test]
    fn any_revoked_serial_of_the_chain_is_found() {
        let ancestor = |s: &str| Ancestor {
            serial_hex: s.into(),
            spiffe_id: "spiffe://cluster.local/ns/support/mi/agent".into(),
            attributes: Default::default(),
        };
        let cert = ParentCertificate {
            serial_hex: "0c".into(),
            spiffe_id: "spiffe://cluster.local/ns/support/mi/agent/task/a/task/b".into(),
            not_after: OffsetDateTime::UNIX_EPOCH,
            grants: Default::default(),
            attributes: Default::default(),
            delegation: Some(Delegation {
                ancestors: vec![ancestor("0a"), ancestor("0b")],
                task_id: "b".into(),
                purpose: String::new(),
                input_digest: None,
            }),
        };
        assert_eq!(revoked_in_chain(&cert, |_| false), None);
        assert_eq!(
            revoked_in_chain(&cert, |s| s == "0a").as_deref(),
            Some("0a")
        );
        assert_eq!(
            revoked_in_chain(&cert, |s| s == "0c").as_deref(),
            Some("0c")
        );
    }
}
