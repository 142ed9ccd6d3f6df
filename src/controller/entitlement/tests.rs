//! Table-driven tests of the Entitlement plan: every plan and RBAC decision, every status
//! transition's Event, every requeue.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::ObjectMeta;
use time::{Duration, OffsetDateTime};

use super::facts::{ExistingRbac, Facts, Identity};
use super::plan::*;
use super::status::{RbacOutcome, SubjectCertificate};
use crate::controller::status_memory::fingerprint;
use nhi_api::{Condition, Entitlement, EntitlementStatus};
use nhi_core::entitle::rbac::ENTITLEMENT_LABEL;
use nhi_core::labels::{MANAGED_BY, MANAGER};
use nhi_identity::timestamp::rfc3339;

fn entitlement(spec: serde_json::Value) -> Entitlement {
    let mut base = serde_json::json!({
        "subjects": {"names": ["api"]}, "grants": ["payments.process"], "justification": "T-1"
    });
    if let (Some(b), Some(extra)) = (base.as_object_mut(), spec.as_object()) {
        b.extend(extra.clone());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "nhi.dev/v1alpha1", "kind": "Entitlement",
        "metadata": {"name": "pay", "namespace": "ns", "uid": "ent-uid", "generation": 1},
        "spec": base,
    }))
    .unwrap()
}

fn rules() -> serde_json::Value {
    serde_json::json!({"kubernetes": {"rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
    ]}})
}

/// An identity `name` whose certificate carries `grants`, with Kubernetes access or not.
fn identity(name: &str, grants: &[&str], kubernetes_access: bool) -> Identity {
    Identity {
        uid: format!("{name}-uid"),
        labels: Default::default(),
        certificate: SubjectCertificate {
            identity: name.into(),
            kubernetes_access,
            kube_users: match kubernetes_access {
                true => vec![format!("nhi:ns:{name}:00000000000000a1")],
                false => vec![],
            },
            grants: grants.iter().map(|g| g.to_string()).collect(),
            serial_number: Some(format!("{name}-serial")),
            thumbprint_sha256: Some(format!("{name}-thumb")),
            not_after: Some("2030-01-01T00:00:00Z".into()),
        },
    }
}

fn facts(ent: Entitlement, identities: Vec<Identity>) -> Facts {
    Facts {
        now: OffsetDateTime::now_utc(),
        entitlement: Arc::new(ent),
        namespace: "ns".into(),
        identities_synced: true,
        policy: crate::controller::identity::plan::tests::open_policy("ns"),
        identities,
        kubernetes_access: true,
        rbac: Some(ExistingRbac::default()),
        status_just_written: None,
    }
}

fn bound() -> Facts {
    facts(
        entitlement(serde_json::json!({})),
        vec![identity("api", &["payments.process"], false)],
    )
}

fn binding(plan: &Plan) -> &Binding {
    match plan {
        Plan::Bind(b) => b,
        other => panic!("not binding: {other:?}"),
    }
}

fn concluded(f: &Facts) -> Conclusion {
    let plan = plan(f);
    conclude(f, binding(&plan), None)
}

fn events(c: &Conclusion) -> Vec<(bool, &str)> {
    c.events
        .iter()
        .map(|e| (e.warning, e.reason.as_str()))
        .collect()
}

fn ready(c: &Conclusion) -> &Condition {
    let status = c.status.as_ref().expect("a status is written");
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
}

fn meta(labelled: bool) -> ObjectMeta {
    ObjectMeta {
        name: Some("nhi-ent-pay".into()),
        uid: Some("rbac-uid".into()),
        labels: labelled.then(|| {
            [
                (MANAGED_BY.to_string(), MANAGER.to_string()),
                (ENTITLEMENT_LABEL.to_string(), "pay".to_string()),
            ]
            .into()
        }),
        ..Default::default()
    }
}

#[test]
fn deleted_or_before_the_identity_cache_nothing_is_bound() {
    let mut f = bound();
    f.identities_synced = false;
    assert_eq!(
        plan(&f),
        Plan::WaitForIdentities(std::time::Duration::from_secs(1))
    );
    let mut ent = entitlement(serde_json::json!({}));
    ent.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    assert_eq!(plan(&facts(ent, vec![])), Plan::AwaitChange);
}

#[test]
fn each_phase_and_binding_state_is_said_and_looked_at_again_when_due() {
    let now = OffsetDateTime::now_utc();
    let later = rfc3339(now + Duration::hours(1));
    let earlier = rfc3339(now - Duration::hours(1));
    // (case, spec, identities, Ready reason, Event, requeue within)
    type Case = (
        &'static str,
        serde_json::Value,
        Vec<Identity>,
        &'static str,
        Option<(bool, &'static str)>,
    );
    let cases: [Case; 6] = [
        (
            "bound",
            serde_json::json!({}),
            vec![identity("api", &["payments.process"], false)],
            "Bound",
            Some((false, "Bound")),
        ),
        (
            "waiting for a certificate",
            serde_json::json!({}),
            vec![identity("api", &[], false)],
            "Binding",
            None,
        ),
        (
            "no subject",
            serde_json::json!({}),
            vec![],
            "NoSubjects",
            Some((true, "NoSubjects")),
        ),
        (
            "scheduled",
            serde_json::json!({"notBefore": later}),
            vec![],
            "NotYetActive",
            Some((false, "Scheduled")),
        ),
        (
            "expired",
            serde_json::json!({"expiresAt": earlier}),
            vec![],
            "Expired",
            Some((false, "Expired")),
        ),
        (
            "unusable",
            serde_json::json!({"expiresAt": "not a time"}),
            vec![],
            "InvalidSpec",
            Some((true, "InvalidSpec")),
        ),
    ];
    for (name, spec, identities, reason, event) in cases {
        let c = concluded(&facts(entitlement(spec), identities));
        assert_eq!(ready(&c).reason, reason, "{name}");
        assert_eq!(events(&c), event.into_iter().collect::<Vec<_>>(), "{name}");
    }
}

#[test]
fn the_requeue_follows_what_is_pending() {
    let now = OffsetDateTime::now_utc();
    // Subjects being re-issued: soon; after a minute of it, less often.
    let mut f = facts(
        entitlement(serde_json::json!({})),
        vec![identity("api", &[], false)],
    );
    assert_eq!(
        concluded(&f).requeue,
        Requeue::After(std::time::Duration::from_secs(2))
    );
    let mut waiting = Condition::new("Ready", false, "Binding", "waiting");
    waiting.last_transition_time = rfc3339(now - Duration::minutes(2)).into();
    let mut ent = (*f.entitlement).clone();
    ent.status = Some(EntitlementStatus {
        conditions: vec![waiting],
        ..Default::default()
    });
    f.entitlement = Arc::new(ent);
    assert_eq!(
        concluded(&f).requeue,
        Requeue::After(std::time::Duration::from_secs(30))
    );
    // Scheduled: when it starts (and half a second).
    let start = now + Duration::minutes(10);
    let f = facts(
        entitlement(serde_json::json!({"notBefore": rfc3339(start)})),
        vec![],
    );
    let Requeue::After(wait) = concluded(&f).requeue else {
        panic!("no requeue")
    };
    assert!((599.0..=601.0).contains(&wait.as_secs_f64()), "{wait:?}");
    // Bound for good: only a change.
    assert_eq!(concluded(&bound()).requeue, Requeue::AwaitChange);
}

#[test]
fn a_status_already_shown_or_just_written_is_not_written_again() {
    let mut f = bound();
    let c = concluded(&f);
    let status = c.status.clone().unwrap();
    f.status_just_written = Some(fingerprint(&super::status::comparable_entitlement_status(
        &status,
    )));
    let again = concluded(&f);
    assert!(again.status.is_none() && again.events.is_empty());
    let mut ent = (*f.entitlement).clone();
    ent.status = Some(*status);
    f.entitlement = Arc::new(ent);
    f.status_just_written = None;
    assert!(concluded(&f).status.is_none());
}

fn rbac_of(f: &Facts) -> Option<RbacDecision> {
    binding(&plan(f)).rbac.clone()
}

#[test]
fn kubernetes_rules_become_a_role_bound_to_the_subjects_with_access() {
    // (case, identities, existing, expected decision shape)
    let with_access = vec![identity("api", &["payments.process"], true)];
    let f = facts(entitlement(rules()), with_access.clone());
    let Some(RbacDecision::Write(w)) = rbac_of(&f) else {
        panic!("writes expected")
    };
    assert!(w.role.is_some() && w.binding.is_some());
    assert_eq!(
        w.outcome,
        RbacOutcome::Applied {
            role: "nhi-ent-pay".into(),
            role_binding: Some("nhi-ent-pay".into()),
            users: vec!["nhi:ns:api:00000000000000a1".into()],
        }
    );
    // The binding names each subject's current user, as its status shows it: a new issuance
    // (after a revocation, say) replaces the user, and one without a credential yet binds none.
    let mut reissued = identity("api", &["payments.process"], true);
    reissued.certificate.kube_users = vec!["nhi:ns:api:00000000000000b2".into()];
    let Some(RbacDecision::Write(w)) = rbac_of(&facts(entitlement(rules()), vec![reissued])) else {
        panic!("writes expected")
    };
    assert!(
        matches!(&w.outcome, RbacOutcome::Applied { users, .. } if users == &vec!["nhi:ns:api:00000000000000b2".to_string()])
    );
    let mut pending = identity("api", &["payments.process"], true);
    pending.certificate.kube_users = vec![];
    let decision = rbac_of(&facts(entitlement(rules()), vec![pending]));
    assert!(
        !format!("{decision:?}").contains("nhi:ns:api"),
        "{decision:?}"
    );
    // No subject with access: the Role alone, and our RoleBinding goes.
    let mut f = facts(
        entitlement(rules()),
        vec![identity("api", &["payments.process"], false)],
    );
    f.rbac = Some(ExistingRbac {
        role: None,
        binding: Some(RoleBinding {
            metadata: meta(true),
            ..Default::default()
        }),
    });
    let Some(RbacDecision::Write(w)) = rbac_of(&f) else {
        panic!("writes expected")
    };
    assert!(w.binding.is_none());
    assert_eq!(w.binding_to_delete, Some(Some("rbac-uid".into())));
    assert!(matches!(
        w.outcome,
        RbacOutcome::Applied {
            role_binding: None,
            ..
        }
    ));
    // A same-named Role that is not ours: refused, nothing written.
    let mut f = facts(entitlement(rules()), with_access);
    f.rbac = Some(ExistingRbac {
        role: Some(Role {
            metadata: meta(false),
            ..Default::default()
        }),
        binding: None,
    });
    let Some(RbacDecision::Known(RbacOutcome::Refused { message })) = rbac_of(&f) else {
        panic!("refusal expected")
    };
    assert!(
        message.contains("is not managed by this Entitlement"),
        "{message}"
    );
}

#[test]
fn rbac_goes_when_inactive_and_is_refused_when_disabled_or_ungrantable() {
    let earlier = rfc3339(OffsetDateTime::now_utc() - Duration::hours(1));
    let mut spec = rules();
    spec["expiresAt"] = serde_json::json!(earlier);
    let mut f = facts(entitlement(spec), vec![]);
    f.rbac = Some(ExistingRbac {
        role: Some(Role {
            metadata: meta(true),
            ..Default::default()
        }),
        binding: None,
    });
    let Some(RbacDecision::Write(w)) = rbac_of(&f) else {
        panic!("writes expected")
    };
    assert_eq!(w.outcome, RbacOutcome::Removed);
    assert_eq!(w.role_to_delete, Some(Some("rbac-uid".into())));
    assert!(w.role.is_none() && w.binding.is_none());
    // Kubernetes access disabled: refused without a look.
    let mut f = facts(entitlement(rules()), vec![]);
    f.kubernetes_access = false;
    assert!(matches!(
        rbac_of(&f),
        Some(RbacDecision::Known(RbacOutcome::Refused { .. }))
    ));
    // Rules no Entitlement may grant (the floor under every policy): refused by policy, so
    // nothing is bound and no Role written.
    let spec = serde_json::json!({"kubernetes": {"rules": [
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["create"]}
    ]}});
    let f = facts(entitlement(spec), vec![]);
    let Plan::Bind(binding) = plan(&f) else {
        panic!("a binding expected")
    };
    assert!(
        matches!(&binding.assessment, super::status::Assessment::Invalid { reason, message }
            if reason == "PolicyDenied" && message.contains("the API group \"rbac.authorization.k8s.io\"")),
        "{:?}",
        binding.assessment
    );
    let Some(RbacDecision::Write(w)) = binding.rbac else {
        panic!("writes expected")
    };
    assert_eq!(w.outcome, RbacOutcome::Removed);
    assert!(w.role.is_none());
    // Never had rules: nothing.
    assert_eq!(rbac_of(&bound()), None);
}

#[test]
fn kubernetes_permissions_granted_and_removed_are_said() {
    let f = facts(
        entitlement(rules()),
        vec![identity("api", &["payments.process"], true)],
    );
    let plan = plan(&f);
    let Some(RbacDecision::Write(w)) = binding(&plan).rbac.clone() else {
        panic!("writes expected")
    };
    let c = conclude(&f, binding(&plan), Some(&w.outcome));
    assert_eq!(
        events(&c),
        vec![(false, "Bound"), (false, "KubernetesAccessGranted")]
    );
    // The apiserver refused the Role: not Ready, said once as such.
    let refused = RbacOutcome::Refused {
        message: "forbidden: attempting to grant RBAC permissions not currently held".into(),
    };
    let c2 = conclude(&f, binding(&plan), Some(&refused));
    assert_eq!(ready(&c2).reason, "RoleRefused");
    assert_eq!(events(&c2), vec![(true, "RoleRefused")]);
    // Granted before, removed now.
    let mut later = facts((*f.entitlement).clone(), f.identities.clone());
    let mut ent = (*later.entitlement).clone();
    ent.status = c.status.map(|s| *s);
    later.entitlement = Arc::new(ent);
    let c3 = conclude(&later, binding(&plan), Some(&RbacOutcome::Removed));
    assert_eq!(events(&c3), vec![(false, "KubernetesAccessRemoved")]);
}

#[test]
fn named_subjects_are_pinned_and_the_pins_outlive_a_refusal() {
    // Bound: the named subject is pinned to its uid, for the spec's generation.
    let f = facts(
        entitlement(serde_json::json!({})),
        vec![identity("api", &["payments.process"], false)],
    );
    let Plan::Bind(binding) = plan(&f) else {
        panic!("a binding expected")
    };
    let pinned = vec![nhi_api::PinnedSubject {
        name: "api".into(),
        uid: "api-uid".into(),
    }];
    assert_eq!(binding.pins.subjects, pinned);
    assert_eq!(binding.pins.generation, f.entitlement.metadata.generation);
    // Re-created under the name: not a subject, and said.
    let mut ent = entitlement(serde_json::json!({}));
    ent.status = Some(nhi_api::EntitlementStatus {
        pinned_subjects: pinned.clone(),
        pinned_generation: ent.metadata.generation,
        ..Default::default()
    });
    let mut recreated = identity("api", &[], false);
    recreated.uid = "new-uid".into();
    let f = facts(ent.clone(), vec![recreated]);
    let Plan::Bind(binding) = plan(&f) else {
        panic!("a binding expected")
    };
    assert_eq!(binding.pins.replaced, vec!["api".to_string()]);
    assert!(
        matches!(&binding.assessment, super::status::Assessment::Usable { subjects, .. } if subjects.is_empty())
    );
    // Refused by the policy (no grant allowed where no policy applies): the pins are kept.
    let mut f = facts(ent, vec![identity("api", &[], false)]);
    f.policy = nhi_core::policy::effective_policy("ns", &Default::default(), &[], "c");
    let Plan::Bind(binding) = plan(&f) else {
        panic!("a binding expected")
    };
    assert!(
        matches!(&binding.assessment, super::status::Assessment::Invalid { reason, .. } if reason == "PolicyDenied")
    );
    assert_eq!(binding.pins.subjects, pinned);
}
