//! The signer's plan over plain facts.

use std::collections::BTreeMap;
use std::sync::Arc;

use time::{Duration, OffsetDateTime};

use super::facts::Facts;
use super::plan::{Plan, plan};
use nhi_api::MachineIdentity;
use nhi_core::issue::inputs::IssuancePolicy;
use nhi_core::podcert::decide::{
    AMBIGUOUS_IDENTITY, Claimant, IDENTITY_SUSPENDED, NO_IDENTITY, POD_MISMATCH,
    UNRECOGNIZED_ANNOTATIONS, UNSUPPORTED_KEY_TYPE,
};
use nhi_core::podcert::key_type::KubeletKeyType;
use nhi_core::podcert::pod_check::PodCheck;
use nhi_core::policy::effective_policy;

fn issuance() -> IssuancePolicy {
    IssuancePolicy {
        trust_domain: "cluster.local".into(),
        default_ttl: Duration::hours(2),
        min_ttl: Duration::minutes(5),
        max_ttl: Duration::hours(24),
        renewal_fraction: 2.0 / 3.0,
    }
}

fn identity(name: &str, sa: &str) -> (Claimant, Arc<MachineIdentity>) {
    let mi: MachineIdentity = serde_json::from_value(serde_json::json!({
        "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}")},
        "spec": {"owner": {"team": "t"}, "secretName": format!("{name}-id"),
                 "podCertificates": {"serviceAccountName": sa}}
    }))
    .unwrap();
    let claimant = Claimant {
        name: name.into(),
        service_account: sa.into(),
    };
    (claimant, Arc::new(mi))
}

fn facts(claimants: Vec<(Claimant, Arc<MachineIdentity>)>, age: Duration) -> Facts {
    let labels = BTreeMap::from([(
        "kubernetes.io/metadata.name".to_string(),
        "shop".to_string(),
    )]);
    Facts {
        now: OffsetDateTime::now_utc(),
        age,
        namespace: "shop".into(),
        pod_uid: "pod-uid".into(),
        service_account: "web".into(),
        max_expiration: Duration::hours(24),
        key: Ok((KubeletKeyType::EcdsaP256, vec![1, 2, 3])),
        pod: PodCheck::Matches,
        claimants,
        policy: effective_policy("shop", &labels, &[], "cluster.local"),
        entitlements: vec![],
        ca_not_after: OffsetDateTime::now_utc() + Duration::days(365),
        user_annotations: vec![],
    }
}

fn denial_reason(p: Plan) -> &'static str {
    match p {
        Plan::Deny(d) => d.reason,
        other => panic!("not a denial: {other:?}"),
    }
}

#[test]
fn a_covered_pod_gets_its_identity_for_its_own_key() {
    let f = facts(
        vec![identity("web", "web"), identity("api", "api")],
        Duration::seconds(1),
    );
    let Plan::Issue(i) = plan(&f, &issuance(), Duration::days(14)) else {
        panic!("not issued")
    };
    assert_eq!(i.identity, "web");
    assert_eq!(i.request.spiffe_id, "spiffe://cluster.local/ns/shop/mi/web");
    assert_eq!(i.request.ttl, Duration::hours(2));
    assert_eq!(i.spki, vec![1, 2, 3]);
    assert_eq!(i.jitter_key, "shop/web/pod-uid");
}

#[test]
fn no_identity_waits_a_moment_then_denies_and_two_identities_deny() {
    let young = facts(vec![identity("api", "api")], Duration::seconds(3));
    assert!(matches!(
        plan(&young, &issuance(), Duration::days(14)),
        Plan::Wait(_)
    ));
    let old = facts(vec![identity("api", "api")], Duration::seconds(60));
    assert_eq!(
        denial_reason(plan(&old, &issuance(), Duration::days(14))),
        NO_IDENTITY
    );
    let two = facts(
        vec![identity("a", "web"), identity("b", "web")],
        Duration::seconds(1),
    );
    assert_eq!(
        denial_reason(plan(&two, &issuance(), Duration::days(14))),
        AMBIGUOUS_IDENTITY
    );
}

#[test]
fn a_pod_that_is_not_the_one_named_or_another_key_is_denied() {
    let mut f = facts(vec![identity("web", "web")], Duration::seconds(1));
    f.pod = PodCheck::Differs("pod web-0 does not exist".into());
    assert_eq!(
        denial_reason(plan(&f, &issuance(), Duration::days(14))),
        POD_MISMATCH
    );
    let mut f = facts(vec![identity("web", "web")], Duration::seconds(1));
    f.key = Ok((KubeletKeyType::Rsa4096, vec![]));
    assert_eq!(
        denial_reason(plan(&f, &issuance(), Duration::days(14))),
        UNSUPPORTED_KEY_TYPE
    );
}

#[test]
fn user_annotations_are_denied_as_unrecognised() {
    let mut f = facts(vec![identity("web", "web")], Duration::seconds(1));
    f.user_annotations = vec!["example.com/tier".into()];
    let reason = denial_reason(plan(&f, &issuance(), Duration::days(14)));
    assert_eq!(reason, UNRECOGNIZED_ANNOTATIONS);
}

#[test]
fn a_ca_near_its_end_shortens_the_certificate_or_waits_for_the_rotation() {
    let mut f = facts(vec![identity("web", "web")], Duration::seconds(1));
    f.ca_not_after = f.now + Duration::minutes(90);
    let Plan::Issue(i) = plan(&f, &issuance(), Duration::days(14)) else {
        panic!("not issued")
    };
    assert_eq!(i.request.ttl, Duration::minutes(90));
    f.ca_not_after = f.now + Duration::minutes(30);
    assert!(matches!(
        plan(&f, &issuance(), Duration::days(14)),
        Plan::Wait(_)
    ));
}

#[test]
fn a_suspended_identity_is_denied_before_its_key_is_looked_at() {
    let (claimant, mi) = identity("web", "web");
    let mut lapsed = (*mi).clone();
    lapsed.spec.review_by = Some("2026-01-01".into());
    let mut f = facts(vec![(claimant, Arc::new(lapsed))], Duration::seconds(1));
    f.now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
    f.ca_not_after = f.now + Duration::days(365);
    f.key = Ok((KubeletKeyType::Rsa4096, vec![]));
    assert_eq!(
        denial_reason(plan(&f, &issuance(), Duration::days(14))),
        IDENTITY_SUSPENDED
    );
}
