//! The identity as a pod certificate carries it: the same SPIFFE ID, names, usages, grants and
//! attributes the identity's Secret certificate would, under its namespace's policy, and where
//! it stands (deleted, suspended, refused).

use time::{Duration, OffsetDateTime};

use super::decide::Standing;
use crate::entitle::resolve::{EntitlementFacts, effective_grants};
use crate::issue::inputs::{IssuancePolicy, ResolvedIdentity, claims_extension, resolve_identity};
use crate::lifecycle::review::{ReviewState, parse_review_date, review_state};
use crate::policy::EffectivePolicy;
use crate::policy::POLICY_DENIED;
use crate::policy::identity::{as_allowed, check_identity};
use nhi_api::MachineIdentity;
use nhi_identity::timestamp::rfc3339;

/// How long a grant must still last to be carried by a pod certificate: Kubernetes' hour, the
/// backdating of notBefore, and a minute of margin.
pub const GRANT_FLOOR: Duration = Duration::minutes(62);

/// What a pod certificate of `mi` is made from, at `now`.
pub struct IdentityInputs<'a> {
    pub identity: &'a MachineIdentity,
    pub policy: &'a EffectivePolicy,
    pub issuance: &'a IssuancePolicy,
    /// The Entitlements of the identity's namespace.
    pub entitlements: &'a [EntitlementFacts],
    /// The operator's review warning (the window before a lapse).
    pub review_warning: Duration,
    pub now: OffsetDateTime,
}

/// The identity resolved for a pod certificate, or where it stands when it cannot be issued.
pub fn resolve_for_pod(inputs: &IdentityInputs<'_>) -> Result<ResolvedIdentity, Standing> {
    let mi = inputs.identity;
    if mi.metadata.deletion_timestamp.is_some() {
        return Err(Standing {
            deleting: true,
            ..Standing::default()
        });
    }
    let review_by = mi.spec.review_by.as_deref();
    let state = review_state(
        review_by.and_then(parse_review_date),
        inputs.review_warning,
        inputs.now,
    );
    if let ReviewState::Overdue { lapsed_at } = state {
        return Err(Standing {
            suspended: Some(format!(
                "its review (reviewBy {}) lapsed at {}; an owner moves reviewBy forward to resume \
                 it",
                review_by.unwrap_or_default(),
                rfc3339(lapsed_at)
            )),
            ..Standing::default()
        });
    }
    let allowance = check_identity(&mi.spec, inputs.policy);
    if !allowance.issuable {
        return Err(refused(
            POLICY_DENIED,
            allowance.denial().unwrap_or_default(),
        ));
    }
    let allowed = as_allowed(mi, &allowance, inputs.issuance.default_ttl);
    let name = mi.metadata.name.clone().unwrap_or_default();
    let uid = mi.metadata.uid.clone().unwrap_or_default();
    let labels = mi.metadata.labels.clone().unwrap_or_default();
    // A pod certificate lasts at least an hour (Kubernetes' floor), and a certificate never
    // outlives a grant it carries: grants ending sooner are left out of it.
    let lasting: Vec<EntitlementFacts> = inputs
        .entitlements
        .iter()
        .filter(|e| {
            e.expires_at
                .is_none_or(|end| end >= inputs.now + GRANT_FLOOR)
        })
        .cloned()
        .collect();
    let grants = effective_grants(&name, &uid, &labels, &lasting, inputs.now);
    claims_extension(&allowed, &grants)
        .and_then(|ext| resolve_identity(&allowed, inputs.issuance, ext, grants.not_after_cap))
        .map_err(|e| refused(e.reason(), e.to_string()))
}

fn refused(reason: &'static str, message: String) -> Standing {
    Standing {
        refused: Some((reason, message)),
        ..Standing::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::effective::effective_policy;
    use std::collections::BTreeMap;

    fn identity(extra: serde_json::Value) -> MachineIdentity {
        let mut spec = serde_json::json!({"owner": {"team": "t"}, "secretName": "s",
            "podCertificates": {"serviceAccountName": "web"}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let mut mi: MachineIdentity = serde_json::from_value(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1"}, "spec": spec
        }))
        .unwrap();
        mi.status = None;
        mi
    }

    fn issuance() -> IssuancePolicy {
        IssuancePolicy {
            trust_domain: "cluster.local".into(),
            default_ttl: Duration::hours(1),
            min_ttl: Duration::minutes(5),
            max_ttl: Duration::hours(24),
            renewal_fraction: 2.0 / 3.0,
        }
    }

    fn resolve(mi: &MachineIdentity, now: OffsetDateTime) -> Result<ResolvedIdentity, Standing> {
        let labels = BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            "shop".to_string(),
        )]);
        let policy = effective_policy("shop", &labels, &[], "cluster.local");
        resolve_for_pod(&IdentityInputs {
            identity: mi,
            policy: &policy,
            issuance: &issuance(),
            entitlements: &[],
            review_warning: Duration::days(14),
            now,
        })
    }

    #[test]
    fn grants_ending_within_the_hour_are_left_out() {
        use crate::entitle::resolve::EntitlementFacts;
        let now = OffsetDateTime::now_utc();
        let grant = |name: &str, g: &str, ends: Option<OffsetDateTime>| EntitlementFacts {
            name: name.into(),
            names: ["web".to_string()].into(),
            pins: BTreeMap::new(),
            selector: None,
            grants: [g.to_string()].into(),
            not_before: None,
            expires_at: ends,
            expiry_lead: Duration::ZERO,
        };
        let entitlements = vec![
            grant("lasting", "orders.read", None),
            grant(
                "ending",
                "payments.refund",
                Some(now + Duration::minutes(30)),
            ),
            grant("later", "orders.write", Some(now + Duration::hours(3))),
        ];
        let labels = BTreeMap::from([(
            "kubernetes.io/metadata.name".to_string(),
            "shop".to_string(),
        )]);
        let policy = effective_policy("shop", &labels, &[], "cluster.local");
        let mi = identity(serde_json::json!({}));
        let r = resolve_for_pod(&IdentityInputs {
            identity: &mi,
            policy: &policy,
            issuance: &issuance(),
            entitlements: &entitlements,
            review_warning: Duration::days(14),
            now,
        })
        .unwrap();
        let claims = nhi_identity::extension::decode(&r.request.extensions[0].1).unwrap();
        assert_eq!(
            claims.grants,
            ["orders.read", "orders.write"].map(String::from).into()
        );
        assert_eq!(r.request.not_after_cap, Some(now + Duration::hours(3)));
    }

    #[test]
    fn a_current_identity_resolves_to_its_spiffe_id() {
        let r = resolve(&identity(serde_json::json!({})), OffsetDateTime::now_utc()).unwrap();
        assert_eq!(r.request.spiffe_id, "spiffe://cluster.local/ns/shop/mi/web");
        assert_eq!(r.request.ttl, Duration::hours(1));
    }

    #[test]
    fn a_lapsed_review_suspends_and_a_foreign_dns_name_is_left_out() {
        let lapsed = identity(serde_json::json!({"reviewBy": "2026-01-31"}));
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let standing = resolve(&lapsed, now).err().unwrap();
        let why = standing.suspended.unwrap();
        assert!(why.contains("reviewBy 2026-01-31"), "{why}");
        // As for its Secret: a name the policy does not allow is left out.
        let names =
            serde_json::json!({"certificate": {"dnsNames": ["api.bank.svc", "web.shop.svc"]}});
        let r = resolve(&identity(names), OffsetDateTime::now_utc()).unwrap();
        assert_eq!(r.request.dns_names, vec!["web.shop.svc".to_string()]);
    }
}
