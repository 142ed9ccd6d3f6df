//! Tests of the CA rotation plan: every next step, every problem, adoption and reporting once.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use time::{Duration, OffsetDateTime};

use super::facts::{Distribution, Facts};
use super::plan::*;
use crate::ca::rotation::{RotationPolicy, Trigger};
use crate::ca::rotation_state::keys;
use crate::ca::store::CaLocation;
use crate::ca::{CaMaterial, CertificateAuthority};
use crate::revoke::trust::TrustDocuments;
use nhi_core::labels::{
    CA_ROTATION_DISTRIBUTED_AT, CA_ROTATION_PHASE, CA_ROTATION_RETIRE_AFTER,
    CA_ROTATION_STARTED_AT, CA_ROTATION_SWITCHED_AT, MANAGED_BY, MANAGER, ROTATE_CA,
};
use nhi_core::revocation::crl_size::CRL_BUDGET;
use nhi_identity::timestamp::rfc3339;

fn policy() -> RotationPolicy {
    RotationPolicy {
        renew_before: Duration::days(30),
        propagation: Duration::minutes(2),
        spread: Duration::minutes(10),
        max_ttl: Duration::hours(24),
    }
}

fn location() -> CaLocation {
    CaLocation {
        namespace: "nhi-system".into(),
        secret_name: "nhi-ca".into(),
        bootstrap_lifetime: Duration::days(365),
        common_name: "test root".into(),
    }
}

fn material(now: OffsetDateTime) -> CaMaterial {
    CertificateAuthority::generate_root("test root", Duration::days(365), now).unwrap()
}

/// The CA Secret holding `ca`, made by the operator when `managed`, with `annotations`.
fn ca_secret(ca: &CaMaterial, managed: bool, annotations: &[(&str, String)]) -> Secret {
    let data = [
        (keys::TLS_CRT, ca.cert_chain_pem.clone()),
        (keys::TLS_KEY, ca.key_pem.clone()),
        (keys::CA_CRT, ca.cert_chain_pem.clone()),
    ];
    Secret {
        metadata: ObjectMeta {
            name: Some("nhi-ca".into()),
            namespace: Some("nhi-system".into()),
            resource_version: Some("3".into()),
            labels: managed.then(|| [(MANAGED_BY.to_string(), MANAGER.to_string())].into()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn facts_with(annotations: &[(&str, String)], managed: bool) -> Facts {
    let now = OffsetDateTime::now_utc();
    let m = material(now);
    let signing = Arc::new(CertificateAuthority::from_material(&m, now).unwrap());
    Facts {
        now,
        location: location(),
        secret: Some(ca_secret(&m, managed, annotations)),
        signing,
        held: None,
        distribution: None,
        last_reported: None,
        record_crl_bytes: Some(0),
    }
}

fn idle() -> Facts {
    facts_with(&[], true)
}

fn publishing(started_ago: Duration, distributed_ago: Option<Duration>) -> Facts {
    let now = OffsetDateTime::now_utc();
    let mut annotations = vec![
        (CA_ROTATION_PHASE, "Publishing".to_string()),
        (CA_ROTATION_STARTED_AT, rfc3339(now - started_ago)),
    ];
    if let Some(ago) = distributed_ago {
        annotations.push((CA_ROTATION_DISTRIBUTED_AT, rfc3339(now - ago)));
    }
    facts_with(&annotations, true)
}

/// The distribution of the signing CA's bundle: complete, or with one identity Secret behind.
fn distribution(facts: &Facts, complete: bool) -> Distribution {
    let ca = facts.ca();
    let crls = "-----BEGIN X509 CRL-----\n".repeat(ca.crl_signers().len());
    Distribution {
        secrets_synced: true,
        secrets_behind: usize::from(!complete),
        secrets: 3,
        published: Some(Arc::new(TrustDocuments {
            ca_pem: ca.trust_bundle_pem().to_string(),
            crl_pem: crls.clone(),
            crl_number: 1,
        })),
        maps: vec![(Some(ca.trust_bundle_pem().to_string()), Some(crls))],
    }
}

fn reasons(plan: &Plan) -> Vec<&str> {
    plan.reports.iter().map(|p| p.reason).collect()
}

fn rate() -> f64 {
    10.0
}

#[test]
fn each_step_of_a_rotation_is_planned() {
    // (case, facts, the Event of the write, or the wait)
    let mut distributed = publishing(Duration::minutes(1), None);
    distributed.distribution = Some(distribution(&distributed, true));
    let mut behind = publishing(Duration::minutes(1), None);
    behind.distribution = Some(distribution(&behind, false));
    let cases: Vec<(&str, Facts, Result<&str, StdDuration>)> = vec![
        ("distributed", distributed, Ok("CARotationDistributed")),
        ("still distributing", behind, Err(StdDuration::from_secs(2))),
        (
            "propagating",
            publishing(Duration::minutes(2), Some(Duration::minutes(1))),
            Err(StdDuration::from_secs(60)),
        ),
    ];
    for (name, facts, expected) in cases {
        let plan = plan(&facts, &policy(), rate());
        match (&plan.next, expected) {
            (Next::Write(w), Ok(reason)) => assert_eq!(w.reason, reason, "{name}"),
            // Annotations keep whole seconds.
            (Next::Wait(d), Err(wait)) => {
                assert!(
                    *d <= wait && *d + StdDuration::from_secs(1) >= wait,
                    "{name}: {d:?}"
                )
            }
            (other, _) => panic!("{name}: {other:?}"),
        }
        assert_eq!(plan.gauges.map(|g| g.1), Some(1), "{name}: publishing");
        assert!(plan.reports.is_empty(), "{name}");
    }
}

#[test]
fn a_requested_rotation_starts_only_for_a_root_the_operator_made() {
    let requested = [(ROTATE_CA, "r1".to_string())];
    let facts = facts_with(&requested, true);
    let plan = plan(&facts, &policy(), rate());
    let Next::GenerateNext(trigger) = &plan.next else {
        panic!("{:?}", plan.next)
    };
    assert_eq!(trigger, &Trigger::Requested("r1".into()));
    let next = material(facts.now);
    let write = start(&facts, trigger, &next).unwrap();
    assert_eq!(write.reason, "CARotationStarted");
    assert!(
        write.note.contains("requested (nhi.dev/rotate-ca=r1)"),
        "{}",
        write.note
    );
    // The patch carries the next CA's key: never shown.
    assert!(!format!("{write:?}").contains("PRIVATE KEY"));
    // A CA someone provided: said, not rotated.
    let plan = plan_of(&facts_with(&requested, false));
    assert_eq!(reasons(&plan), vec!["CARotationUnsupported"]);
    assert!(matches!(plan.next, Next::Wait(d) if d == StdDuration::from_secs(600)));
    // Nothing asked, far from expiry: wait.
    assert!(matches!(plan_of(&idle()).next, Next::Wait(_)));
}

fn plan_of(facts: &Facts) -> Plan {
    plan(facts, &policy(), rate())
}

#[test]
fn switch_and_drop_need_what_the_secret_must_hold() {
    let now = OffsetDateTime::now_utc();
    // Propagated, but the Secret has no next CA: the look fails.
    let plan = plan_of(&publishing(
        Duration::minutes(10),
        Some(Duration::minutes(5)),
    ));
    assert!(
        matches!(&plan.next, Next::Fail(e) if e.contains("next.crt")),
        "{:?}",
        plan.next
    );
    // With it: the switch.
    let mut f = publishing(Duration::minutes(10), Some(Duration::minutes(5)));
    let next = material(now);
    let data = f.secret.as_mut().unwrap().data.as_mut().unwrap();
    data.insert(
        keys::NEXT_CRT.into(),
        ByteString(next.cert_chain_pem.into_bytes()),
    );
    data.insert(keys::NEXT_KEY.into(), ByteString(next.key_pem.into_bytes()));
    // A record that two CRLs could not list: the switch waits, and says why, once; a record not
    // loaded yet: it waits, saying nothing.
    for (record, said) in [
        (None, vec![]),
        (
            Some(CRL_BUDGET / 2 + 1),
            vec!["CARotationAwaitingRevocationRoom"],
        ),
    ] {
        f.record_crl_bytes = record;
        let waiting = plan_of(&f);
        assert!(
            matches!(waiting.next, Next::Wait(d) if d == StdDuration::from_secs(30)),
            "{:?}",
            waiting.next
        );
        assert_eq!(reasons(&waiting), said);
    }
    f.record_crl_bytes = Some(CRL_BUDGET / 2);
    let Next::Write(w) = plan_of(&f).next else {
        panic!("a write")
    };
    assert_eq!(w.reason, "CARotationSwitched");
    assert!(w.note.contains("at most 10/s"), "{}", w.note);
    // Re-issuing past the retirement: completed; before it, the re-issues are paced.
    let reissuing = |retire_in: Duration| {
        facts_with(
            &[
                (CA_ROTATION_PHASE, "Reissuing".to_string()),
                (CA_ROTATION_SWITCHED_AT, rfc3339(now - Duration::hours(1))),
                (CA_ROTATION_RETIRE_AFTER, rfc3339(now + retire_in)),
            ],
            true,
        )
    };
    let done = plan_of(&reissuing(Duration::minutes(-1)));
    assert!(matches!(&done.next, Next::Write(w) if w.reason == "CARotationCompleted"));
    let going = plan_of(&reissuing(Duration::hours(1)));
    assert!(matches!(going.next, Next::Wait(_)));
    // No retiring CA loaded: nothing to pace.
    assert_eq!(going.switched_at, Some(None));
}

#[test]
fn problems_are_reported_once() {
    let mut gone = idle();
    gone.secret = None;
    let plan = plan_of(&gone);
    assert_eq!(reasons(&plan), vec!["CASecretMissing"]);
    assert!(!plan.reports[0].on_secret);
    assert!(plan.reports[0].note.contains("nhi-system/nhi-ca"));
    assert!(matches!(plan.next, Next::Wait(d) if d == StdDuration::from_secs(30)));
    gone.last_reported = Some(plan.reports[0].key());
    assert!(plan_of(&gone).reports.is_empty(), "said once");
    // A rotation record that cannot be read.
    let bad = facts_with(&[(CA_ROTATION_PHASE, "Halfway".to_string())], true);
    let plan = plan_of(&bad);
    assert_eq!(reasons(&plan), vec!["CARotationInvalid"]);
    assert!(plan.gauges.is_none() && plan.switched_at.is_none());
    // Distribution stalled long after the start.
    let mut stalled = publishing(Duration::hours(1), None);
    stalled.distribution = Some(distribution(&stalled, false));
    let plan = plan_of(&stalled);
    assert_eq!(reasons(&plan), vec!["CARotationStalled"]);
    assert!(plan.reports[0].note.contains("1 of 3 identity Secrets"));
}

#[test]
fn the_ca_the_secret_holds_is_adopted_when_it_differs() {
    let mut f = idle();
    let now = f.now;
    let other = Arc::new(CertificateAuthority::from_material(&material(now), now).unwrap());
    f.held = Some(Ok(other.clone()));
    let plan = plan_of(&f);
    assert!(plan.adopt.as_ref().is_some_and(|ca| ca.same_as(&other)));
    f.held = Some(Ok(f.signing.clone()));
    assert!(plan_of(&f).adopt.is_none());
    f.held = Some(Err("tls.key does not match".into()));
    let plan = plan_of(&f);
    assert!(plan.adopt.is_none());
    assert_eq!(reasons(&plan), vec!["CAInvalid"]);
}
