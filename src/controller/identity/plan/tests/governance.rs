//! Plan tests: a lapsed review, a missing workload, a deletion.

use super::*;

/// An identity whose review lapsed on `lapse`.
fn overdue(lapse: &str) -> Facts {
    let mut f = holding_current();
    let lapse = lapse.to_string();
    with_identity(&mut f, |mi| {
        mi.spec.review_by = Some("2020-01-01".into());
        mi.spec.on_review_lapse = serde_json::from_value(serde_json::json!(lapse)).unwrap();
        mi.status = Some(status_with("0a", mi_not_after(), &[]));
    });
    f
}

#[test]
fn a_lapsed_review_suspends_revokes_and_strips_the_key() {
    let f = overdue("Suspend");
    let steps = plan(&f, &settings()).steps;
    assert!(!has(&steps, |s| matches!(s, Step::Issue(_))));
    let revoked = revokes(&steps);
    assert!(
        reasons_revoked(revoked[0])
            .iter()
            .all(|(_, r)| *r == Reason::PrivilegeWithdrawn)
    );
    assert!(has(
        &steps,
        |s| matches!(s, Step::StripKeyMaterial { version } if version == "7")
    ));
    assert!(has(
        &steps,
        |s| matches!(s, Step::RememberRevocation(r) if r.reason == "ReviewOverdue")
    ));
    assert!(events(&steps).contains(&(true, "Suspended")));
    assert!(
        events(&steps).contains(&(true, "ReviewOverdue")),
        "the condition's transition"
    );
    assert_eq!(ready_reason(&steps), (false, "ReviewOverdue".into()));
    assert_eq!(finish(&steps), Requeue::AwaitChange);
    // Nothing left to strip: what is said depends on whether anything was newly revoked.
    let mut f = overdue("Suspend");
    f.secret.known = None;
    f.secret.read = SecretRead::Read(None);
    let steps = plan(&f, &settings()).steps;
    assert!(!has(&steps, |s| matches!(s, Step::StripKeyMaterial { .. })));
    let r = revokes(&steps)[0];
    assert!(events(&r.if_fresh).contains(&(true, "Suspended")));
    assert!(
        written_status(&r.if_fresh)
            .unwrap()
            .last_revocation
            .is_some()
    );
    assert!(!events(&r.if_none_fresh).contains(&(true, "Suspended")));
    assert!(
        written_status(&r.if_none_fresh)
            .unwrap()
            .last_revocation
            .is_none()
    );
}

#[test]
fn a_lapsed_review_with_delete_retires_the_identity() {
    let f = overdue("Delete");
    let steps = plan(&f, &settings()).steps;
    let revoked = revokes(&steps);
    assert!(
        reasons_revoked(revoked[0])
            .iter()
            .all(|(_, r)| *r == Reason::PrivilegeWithdrawn)
    );
    assert!(events(&steps).contains(&(true, "ReviewLapsed")));
    assert!(has(&steps, |s| matches!(s, Step::DeleteIdentity)));
    assert!(!has(&steps, |s| matches!(
        s,
        Step::RefreshTrustBundle { .. } | Step::WriteStatus(_)
    )));
    assert_eq!(finish(&steps), Requeue::AwaitChange);
}

#[test]
fn a_workload_missing_past_its_grace_period_retires_the_identity() {
    let mut f = holding_current();
    let now = f.now;
    with_identity(&mut f, |mi| {
        mi.spec.workload_ref = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "api"
        }))
        .unwrap();
        let mut status = status_with("0a", mi_not_after(), &[]);
        let mut missing = nhi_api::Condition::new(
            "WorkloadFound",
            false,
            "WorkloadMissing",
            "Deployment api does not exist",
        );
        missing.last_transition_time = rfc3339(now - Duration::minutes(6)).into();
        status.conditions = vec![missing];
        mi.status = Some(status);
    });
    f.workload = Some(Presence::Missing);
    let steps = plan(&f, &settings()).steps;
    let revoked = revokes(&steps);
    assert!(
        reasons_revoked(revoked[0])
            .iter()
            .all(|(_, r)| *r == Reason::CessationOfOperation)
    );
    assert!(has(
        &steps,
        |s| matches!(s, Step::RememberRevocation(r) if r.reason == "WorkloadLapsed")
    ));
    assert!(
        event_note(&steps, "WorkloadLapsed").starts_with("Deployment api has been missing since")
    );
    assert!(has(
        &steps,
        |s| matches!(s, Step::CountFailure(r) if r == "WorkloadLapsed")
    ));
    assert!(has(&steps, |s| matches!(s, Step::DeleteIdentity)));
    // Within the grace period: kept, said, and looked at again when it ends.
    with_identity(&mut f, |mi| {
        if let Some(c) = mi.status.as_mut().unwrap().conditions.first_mut() {
            c.last_transition_time = rfc3339(now - Duration::minutes(2)).into();
        }
    });
    let steps = plan(&f, &settings()).steps;
    assert!(!has(&steps, |s| matches!(s, Step::DeleteIdentity)));
    let wait = after(finish(&steps)).as_secs();
    assert!((179..=181).contains(&wait), "{wait}");
}

#[test]
fn a_workload_gone_missing_is_said_once() {
    let mut f = holding_current();
    with_identity(&mut f, |mi| {
        mi.spec.workload_ref = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "api"
        }))
        .unwrap();
    });
    f.workload = Some(Presence::Missing);
    let steps = plan(&f, &settings()).steps;
    assert_eq!(events(&steps), vec![(true, "WorkloadMissing")]);
}

fn deleting(f: &mut Facts) {
    let now = f.now;
    with_identity(f, |mi| {
        mi.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(now.unix_timestamp()).unwrap(),
            ));
        mi.status = Some(status_with("0a", mi_not_after(), &[]));
    });
}

#[test]
fn a_deletion_revokes_then_lets_go() {
    let mut f = holding_current();
    deleting(&mut f);
    let steps = plan(&f, &settings()).steps;
    assert!(matches!(steps[0], Step::ForgetMetrics));
    let r = revokes(&steps)[0];
    assert_eq!(r.on_failure, OnRevokeFailure::HoldDeletion);
    assert_eq!(
        reasons_revoked(r),
        vec![("0a".to_string(), Reason::CessationOfOperation)]
    );
    assert_eq!(events(&steps), vec![(false, "Revoked")]);
    assert!(has(
        &steps,
        |s| matches!(s, Step::Log(l) if l.contains("\"0a\""))
    ));
    let tail: Vec<_> = steps.iter().rev().take(3).collect();
    assert!(matches!(
        tail.as_slice(),
        [
            Step::Finish(Requeue::AwaitChange),
            Step::ForgetIdentity,
            Step::RemoveFinalizer
        ]
    ));
    // Said already by the retirement that revoked it.
    f.last_revocation = Some(RevocationStatus {
        reason: "WorkloadLapsed".into(),
        revoked_at: rfc3339(f.now),
        serial_numbers: vec!["0a".into()],
        request: None,
    });
    assert!(events(&plan(&f, &settings()).steps).is_empty());
    // Without our finalizer: nothing to revoke.
    with_identity(&mut f, |mi| mi.metadata.finalizers = None);
    let steps = plan(&f, &settings()).steps;
    assert!(matches!(
        steps.as_slice(),
        [
            Step::ForgetMetrics,
            Step::ForgetIdentity,
            Step::Finish(Requeue::AwaitChange)
        ]
    ));
}

#[test]
fn a_deletion_whose_revocation_is_not_recorded_waits_and_gives_up_only_with_a_timeout() {
    let mut f = fresh();
    deleting(&mut f);
    // The Secret cannot be read: the revocation cannot know what to revoke.
    f.secret.index_synced = false;
    f.secret.read = SecretRead::Unreadable(Arc::new(kube::Error::LinesCodecMaxLineLengthExceeded));
    let steps = plan(&f, &settings()).steps;
    assert!(revokes(&steps)[0].revocations.is_err());
    let error = RevokeError::NotRecorded("the record is contended".into());
    let retry = deletion_not_recorded(&f, &settings(), &error);
    assert_eq!(events(&retry), vec![(true, "RevocationFailed")]);
    assert!(
        event_note(&retry, "RevocationFailed").ends_with(
            "; the identity is deleted once its certificates are revoked, or have expired"
        )
    );
    let status = retry.iter().find_map(|s| match s {
        Step::RecordRevocationFailure(st) => Some(st.clone()),
        _ => None,
    });
    let status = *status.unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == READY).unwrap();
    assert_eq!(ready.reason, "RevocationFailed");
    assert_eq!(
        finish(&retry),
        Requeue::After(std::time::Duration::from_secs(5))
    );
    assert!(!has(&retry, |s| matches!(s, Step::RemoveFinalizer)));
    // Said once: a retry whose status already says it publishes no Event.
    let original = f.identity.status.clone();
    with_identity(&mut f, |mi| mi.status = Some(status.clone()));
    let again = deletion_not_recorded(&f, &settings(), &error);
    assert!(events(&again).is_empty(), "{:?}", events(&again));
    with_identity(&mut f, |mi| mi.status = original);
    // A refusal over a quota says which.
    let refusal = RevokeError::Refused(nhi_core::revocation::quota::Refusal::NamespaceQuota {
        namespace: "ns".into(),
        live: 5000,
        quota: 5000,
    });
    let refused = deletion_not_recorded(&f, &settings(), &refusal);
    assert_eq!(events(&refused), vec![(true, "RevocationQuotaExceeded")]);
    // With no finalizer timeout (the default), it waits on, every half minute.
    let mut waiting = settings();
    waiting.lifecycle.finalizer_timeout = None;
    f.now += Duration::hours(2);
    let still = deletion_not_recorded(&f, &waiting, &error);
    f.now -= Duration::hours(2);
    assert!(!has(&still, |s| matches!(s, Step::RemoveFinalizer)));
    assert_eq!(
        finish(&still),
        Requeue::After(std::time::Duration::from_secs(30))
    );
    // Past a finalizer timeout set on purpose: let go, and said why.
    f.now += Duration::minutes(2);
    let gone = deletion_not_recorded(&f, &settings(), &error);
    assert_eq!(events(&gone), vec![(true, "RevocationAbandoned")]);
    assert!(has(&gone, |s| matches!(s, Step::RemoveFinalizer)));
    assert_eq!(finish(&gone), Requeue::AwaitChange);
}

#[test]
fn a_deletion_never_revokes_another_identitys_certificate_copied_into_the_secret() {
    let mut f = fresh();
    deleting(&mut f);
    with_identity(&mut f, |mi| {
        if let Some(s) = mi.status.as_mut() {
            s.spiffe_id = Some("spiffe://cluster.local/ns/pay/mi/api".into());
        }
    });
    f.secret.index_synced = false;
    // Identity "victim"'s material, planted in this identity's Secret (labels and annotations
    // copied: it looks like ours).
    let mut victim = fresh();
    with_identity(&mut victim, |mi| mi.metadata.name = Some("victim".into()));
    let mut planted = real_secret(&victim);
    planted.metadata = real_secret(&f).metadata;
    let victim_serial =
        nhi_identity::certificate::leaf_info(&planted.data.as_ref().unwrap()["tls.crt"].0)
            .unwrap()
            .serial_hex;
    f.secret.read = SecretRead::Read(Some(Box::new(planted)));
    let steps = plan(&f, &settings()).steps;
    let revoked = reasons_revoked(revokes(&steps)[0]);
    assert!(
        !revoked.iter().any(|(s, _)| *s == victim_serial),
        "{revoked:?}"
    );
    assert!(revoked.iter().any(|(s, _)| s == "0a"), "{revoked:?}");
    // The identity's own certificate in its Secret is revoked.
    f.secret.read = SecretRead::Read(Some(Box::new(real_secret(&f))));
    let own = reasons_revoked(revokes(&plan(&f, &settings()).steps)[0]);
    assert_eq!(own.len(), 2, "{own:?}");
}
