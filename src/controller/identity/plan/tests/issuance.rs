//! Plan tests: judging the identity Secret, issuing, and settling what became of an issuance.

use super::*;

/// The Secret, read (the index has not listed yet), holds `secret` as edited.
fn reads_edited_secret(
    f: &mut Facts,
    edit: impl FnOnce(&mut std::collections::BTreeMap<String, ByteString>),
) {
    let mut s = real_secret(f);
    edit(s.data.as_mut().unwrap());
    f.secret.index_synced = false;
    f.secret.read = SecretRead::Read(Some(Box::new(s)));
}

fn corrupt_secret(f: &mut Facts) {
    reads_edited_secret(f, |data| {
        data.insert(
            keys::TLS_CRT.into(),
            ByteString(b"not a certificate".to_vec()),
        );
    });
}

fn keyless_secret(f: &mut Facts) {
    reads_edited_secret(f, |data| {
        data.remove(keys::TLS_KEY);
    });
}

fn signed_by_another_ca(f: &mut Facts) {
    let (i, h) = (current_info(f), inputs_hash(f));
    let other = new_ca("other CA", f.now);
    knows(f, i, &h, other.public_key_der());
}

/// The Secret holds `info`, built from `inputs_hash` (None: the current inputs) by the CA.
fn holds(f: &mut Facts, info: CertificateInfo, inputs_hash_: Option<&str>) {
    let h = inputs_hash_.map_or_else(|| inputs_hash(f), str::to_string);
    let key = f.ca.public_key_der().to_vec();
    knows(f, info, &h, &key);
}

fn expired(f: &mut Facts) {
    let i = info("0a", f.now - Duration::hours(2), f.now - Duration::hours(1));
    holds(f, i, None);
}

fn spec_changed(f: &mut Facts) {
    holds(f, current_info(f), Some("an older spec"));
}

fn renewal_due(f: &mut Facts) {
    let i = info(
        "0a",
        f.now - Duration::minutes(55),
        f.now + Duration::minutes(5),
    );
    holds(f, i, None);
}

fn grants_changed(f: &mut Facts) {
    holds(f, current_info(f), None);
    f.entitlements = vec![entitlement("pay", &["payments.process"])];
}

fn revoked_before(f: &mut Facts) {
    holds(f, current_info(f), None);
    f.last_revocation = Some(RevocationStatus {
        reason: "RevokeRequested".into(),
        revoked_at: rfc3339(f.now),
        serial_numbers: vec!["0A".into()],
        request: Some("r1".into()),
    });
}

#[test]
fn each_reissue_cause_issues_with_its_reason() {
    type Setup = fn(&mut Facts);
    // (case, setup, reason, the current certificate serves meanwhile)
    let cases: [(&str, Setup, ReissueReason, bool); 9] = [
        ("no Secret", |_| {}, ReissueReason::Missing, false),
        (
            "corrupt Secret",
            corrupt_secret,
            ReissueReason::Unparseable,
            false,
        ),
        (
            "Secret without its key",
            keyless_secret,
            ReissueReason::Missing,
            false,
        ),
        (
            "signed by another CA",
            signed_by_another_ca,
            ReissueReason::WrongIssuer,
            false,
        ),
        ("expired", expired, ReissueReason::Expired, false),
        (
            "spec changed",
            spec_changed,
            ReissueReason::InputsChanged,
            true,
        ),
        ("renewal due", renewal_due, ReissueReason::RenewalDue, true),
        (
            "grants changed",
            grants_changed,
            ReissueReason::InputsChanged,
            true,
        ),
        (
            "revoked by this operator before",
            revoked_before,
            ReissueReason::Revoked,
            false,
        ),
    ];
    for (name, setup, reason, keeps_current) in cases {
        let mut f = fresh();
        setup(&mut f);
        let plan = plan(&f, &settings());
        let issuance = issuance(&plan.steps);
        assert_eq!(issuance.reason, reason, "{name}");
        assert_eq!(issuance.still_valid.is_some(), keeps_current, "{name}");
        assert_eq!(issuance.credential, CredentialPlan::NotWanted, "{name}");
        assert_eq!(issuance.paced, None, "{name}");
        assert_eq!(issuance.first, reason == ReissueReason::Missing, "{name}");
    }
}

#[test]
fn a_current_certificate_is_kept_until_its_renewal() {
    let f = holding_current();
    let steps = plan(&f, &settings()).steps;
    assert!(!has(&steps, |s| matches!(s, Step::Issue(_))));
    assert_eq!(ready_reason(&steps), (true, CERTIFICATE_VALID.to_string()));
    assert!(has(&steps, |s| matches!(s, Step::SetExpiry { .. })));
    let wait = after(finish(&steps)).as_secs();
    // Renewal at about two thirds of the hour (±5 %), counted from issue.
    assert!((2100..=2600).contains(&wait), "{wait}");
    // Nothing to say about a certificate kept.
    assert!(events(&steps).is_empty(), "{steps:#?}");
}

#[test]
fn a_secret_read_that_shows_a_current_certificate_is_remembered() {
    let mut f = fresh();
    f.secret.index_synced = false;
    f.secret.read = SecretRead::Read(Some(Box::new(real_secret(&f))));
    let steps = plan(&f, &settings()).steps;
    assert!(has(&steps, |s| matches!(
        s,
        Step::RememberCertificate { version: Some(v), .. } if v == "7"
    )));
    assert!(!has(&steps, |s| matches!(s, Step::Issue(_))));
    // A Secret whose certificate is re-issued is forgotten.
    let mut f = fresh();
    let mut s = real_secret(&f);
    s.data.as_mut().unwrap().remove(keys::TLS_KEY);
    f.secret.index_synced = false;
    f.secret.read = SecretRead::Read(Some(Box::new(s)));
    let steps = plan(&f, &settings()).steps;
    assert!(has(&steps, |s| matches!(s, Step::ForgetCertificate)));
    assert_eq!(issuance(&steps).secret_version.as_deref(), Some("7"));
}

#[test]
fn a_secret_of_the_same_name_the_operator_does_not_own_is_left_alone() {
    let mut f = fresh();
    let mut foreign = real_secret(&f);
    foreign.metadata.owner_references = None;
    f.secret.index_synced = false;
    f.secret.read = SecretRead::Read(Some(Box::new(foreign)));
    let steps = plan(&f, &settings()).steps;
    assert!(!has(&steps, |s| matches!(s, Step::Issue(_))));
    assert_eq!(events(&steps), vec![(true, "SecretConflict")]);
    assert!(has(
        &steps,
        |s| matches!(s, Step::CountFailure(r) if r == "SecretConflict")
    ));
    assert_eq!(ready_reason(&steps), (false, "SecretConflict".to_string()));
    assert_eq!(
        finish(&steps),
        Requeue::After(std::time::Duration::from_secs(60))
    );
    // Said once: not again while the status says so.
    let status = written_status(&steps).unwrap().clone();
    with_identity(&mut f, |mi| mi.status = Some(status));
    let again = plan(&f, &settings()).steps;
    assert!(events(&again).is_empty(), "{again:#?}");
    assert!(
        written_status(&again).is_none(),
        "the status says it already"
    );
}

#[test]
fn an_unreadable_secret_fails_the_reconcile() {
    let mut f = fresh();
    f.secret.index_synced = false;
    f.secret.read = SecretRead::Unreadable(Arc::new(kube::Error::LinesCodecMaxLineLengthExceeded));
    let steps = plan(&f, &settings()).steps;
    assert!(matches!(
        steps.last(),
        Some(Step::Fail(Failure::SecretUnreadable(_)))
    ));
}

#[test]
fn the_finalizer_comes_first_and_nothing_happens_before_the_entitlements_are_known() {
    let mut f = fresh();
    with_identity(&mut f, |mi| mi.metadata.finalizers = None);
    let steps = plan(&f, &settings()).steps;
    assert!(matches!(steps.first(), Some(Step::AddFinalizer)));
    f.entitlements_synced = false;
    let steps = plan(&f, &settings()).steps;
    assert!(matches!(
        steps.as_slice(),
        [Step::Finish(Requeue::After(d))] if *d == std::time::Duration::from_secs(1)
    ));
}

#[test]
fn the_trust_bundle_follows_the_ca() {
    let mut f = holding_current();
    if let Some(seen) = f.secret.indexed.as_mut() {
        seen.trust_bundle = Some("an older bundle".into());
    }
    let steps = plan(&f, &settings()).steps;
    assert!(matches!(&steps[0], Step::RefreshTrustBundle { version } if version == "7"));
    assert!(matches!(&steps[1], Step::RememberCertificate { version: Some(v), .. } if v == "7"));
    // A Secret someone else controls is not touched.
    if let Some(seen) = f.secret.indexed.as_mut() {
        seen.controller_uid = Some("someone-else".into());
    }
    let steps = plan(&f, &settings()).steps;
    assert!(!has(&steps, |s| matches!(
        s,
        Step::RefreshTrustBundle { .. }
    )));
}

#[test]
fn a_spec_the_schema_missed_blocks_and_waits_for_a_change() {
    let f = facts_of(identity(serde_json::json!({"certificate": {"ttl": "1m"}})));
    let steps = plan(&f, &settings()).steps;
    assert_eq!(events(&steps), vec![(true, "TTLOutOfBounds")]);
    assert_eq!(ready_reason(&steps), (false, "TTLOutOfBounds".to_string()));
    assert_eq!(finish(&steps), Requeue::AwaitChange);
}

#[test]
fn a_revoke_request_revokes_and_reissues() {
    let mut f = holding_current();
    with_identity(&mut f, |mi| {
        mi.metadata.annotations = Some([(REVOKE_REQUESTED.to_string(), "r1".to_string())].into());
        mi.status = Some(status_with("0a", mi_not_after(), &[]));
    });
    // Answering, the operator looks at the Secret afresh.
    f.secret.read = SecretRead::Read(Some(Box::new(real_secret(&f))));
    let steps = plan(&f, &settings()).steps;
    let revoked = revokes(&steps);
    assert_eq!(revoked.len(), 1);
    let serials: Vec<_> = reasons_revoked(revoked[0]);
    assert!(serials.iter().all(|(_, r)| *r == Reason::KeyCompromise));
    assert!(serials.iter().any(|(s, _)| s == "0a"), "{serials:?}");
    assert_eq!(
        serials.len(),
        1,
        "the status's and the Secret's are one: {serials:?}"
    );
    assert!(event_note(&steps, "RevokeRequested").ends_with("on request (r1)"));
    assert!(has(
        &steps,
        |s| matches!(s, Step::RememberRevocation(r) if r.request.as_deref() == Some("r1"))
    ));
    let issuance = issuance(&steps);
    assert_eq!(issuance.reason, ReissueReason::Revoked);
    assert_eq!(issuance.still_valid, None);
    let shown = issuance.conclusion.revocation.as_ref().unwrap();
    assert_eq!(shown.request.as_deref(), Some("r1"));
    // Answered already (the status lags): shown again, nothing revoked again.
    f.last_revocation = Some(shown.clone());
    f.secret.read = SecretRead::NotRead;
    let steps = plan(&f, &settings()).steps;
    assert!(revokes(&steps).is_empty());
    assert!(!events(&steps).iter().any(|(_, r)| *r == "RevokeRequested"));
}

#[test]
fn a_revoke_request_over_quota_is_answered_refused_once_and_kept_until_one_is_accepted() {
    use crate::controller::identity::plan::revoke_request_refused;
    use crate::controller::status::REVOCATION_REFUSED;
    use nhi_core::revocation::quota::Refusal;
    let mut f = holding_current();
    with_identity(&mut f, |mi| {
        mi.metadata.annotations = Some([(REVOKE_REQUESTED.to_string(), "r9".to_string())].into());
        mi.status = Some(status_with("0a", mi_not_after(), &[]));
    });
    f.secret.read = SecretRead::Read(Some(Box::new(real_secret(&f))));
    // The request's revocation is refused by the service when over quota: not a reconcile error.
    let steps = plan(&f, &settings()).steps;
    assert_eq!(
        revokes(&steps)[0].on_failure,
        OnRevokeFailure::RefuseRequest
    );
    let refusal = Refusal::IdentityQuota {
        identity: "ns/web".into(),
        live: 32,
        quota: 32,
    };
    let refused = revoke_request_refused(&f, &refusal);
    assert_eq!(events(&refused), vec![(true, "RevocationQuotaExceeded")]);
    assert!(
        event_note(&refused, "RevocationQuotaExceeded")
            .starts_with("revoke request r9 refused: identity ns/web already has 32")
    );
    let status = written_status(&refused).unwrap().clone();
    assert_eq!(status.refused_revocation.as_ref().unwrap().request, "r9");
    assert_eq!(
        status.serial_number.as_deref(),
        Some("0a"),
        "the certificate stays"
    );
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == REVOCATION_REFUSED)
        .unwrap();
    assert!(condition.is_true() && condition.reason == "RevocationQuotaExceeded");
    // Answered: the next reconcile revokes nothing and keeps the condition in what it writes.
    with_identity(&mut f, |mi| mi.status = Some(status.clone()));
    let steps = plan(&f, &settings()).steps;
    assert!(revokes(&steps).is_empty());
    assert!(events(&steps).is_empty(), "{:?}", events(&steps));
    if let Some(written) = written_status(&steps) {
        assert!(
            written
                .conditions
                .iter()
                .any(|c| c.type_ == REVOCATION_REFUSED)
        );
    }
    // A second refusal while refused says nothing new.
    with_identity(&mut f, |mi| {
        mi.metadata.annotations = Some([(REVOKE_REQUESTED.to_string(), "r10".to_string())].into());
    });
    assert!(events(&revoke_request_refused(&f, &refusal)).is_empty());
    // A later request accepted clears it.
    let steps = plan(&f, &settings()).steps;
    let issuance = issuance(&steps);
    // (What desired_status hands on: the previous status without its conditions.)
    let cleared = crate::controller::status::with_lifecycle(
        MachineIdentityStatus {
            conditions: vec![],
            ..status.clone()
        },
        Some(&status),
        vec![],
        issuance.conclusion.revocation.clone(),
        f.now,
    );
    assert!(cleared.refused_revocation.is_none());
    assert!(
        !cleared
            .conditions
            .iter()
            .any(|c| c.type_ == REVOCATION_REFUSED)
    );
}

#[test]
fn certificates_carrying_a_withdrawn_grant_are_revoked_once_a_new_one_is_held() {
    let mut f = holding_current();
    let now = f.now;
    with_identity(&mut f, |mi| {
        let mut status = status_with("0a", now + Duration::minutes(59), &["payments.refund"]);
        status.previous_certificates = vec![
            CertificateRecord {
                serial_number: "09".into(),
                not_after: rfc3339(now + Duration::minutes(40)),
            },
            // Ends within two minutes: left to expire.
            CertificateRecord {
                serial_number: "08".into(),
                not_after: rfc3339(now + Duration::minutes(1)),
            },
        ];
        mi.status = Some(status);
    });
    let steps = plan(&f, &settings()).steps;
    let revoked = revokes(&steps);
    assert_eq!(revoked.len(), 1, "{steps:#?}");
    assert_eq!(
        reasons_revoked(revoked[0]),
        vec![("09".to_string(), Reason::PrivilegeWithdrawn)]
    );
    assert_eq!(revoked[0].on_failure, OnRevokeFailure::FailReconcile);
    assert_eq!(
        events(&revoked[0].if_fresh),
        vec![(false, "GrantWithdrawn")]
    );
    assert!(revoked[0].if_none_fresh.is_empty());
    // Nothing withdrawn: nothing revoked.
    let steps = plan(&holding_current(), &settings()).steps;
    assert!(revokes(&steps).is_empty());
}

#[test]
fn pod_certificates_carrying_a_withdrawn_grant_are_revoked_with_per_pod_keys() {
    let mut f = holding_current();
    let now = f.now;
    with_identity(&mut f, |mi| {
        let mut status = status_with("0a", now + Duration::minutes(59), &["payments.refund"]);
        let pod_cert = |serial: &str, pod: &str, grants: &[&str]| PodCertificateRecord {
            serial_number: serial.into(),
            not_after: rfc3339(now + Duration::minutes(50)),
            pod: pod.into(),
            grants: grants.iter().map(|g| g.to_string()).collect(),
        };
        status.pod_certificates = Some(Box::new(PodCertificatesStatus {
            outstanding: 2,
            certificates: vec![
                pod_cert("c1", "web-0", &["payments.refund"]),
                pod_cert("c2", "web-1", &[]),
            ],
            ..Default::default()
        }));
        mi.status = Some(status);
    });
    let steps = plan(&f, &settings()).steps;
    let revoked = revokes(&steps);
    assert_eq!(revoked.len(), 1, "{steps:#?}");
    assert_eq!(
        reasons_revoked(revoked[0]),
        vec![("c1".to_string(), Reason::PrivilegeWithdrawn)],
        "only the pod certificate carrying the withdrawn grant"
    );
    let identities: Vec<String> = revoked[0]
        .revocations
        .as_ref()
        .unwrap()
        .iter()
        .map(|r| r.identity.clone())
        .collect();
    assert!(identities[0].ends_with("/pod/web-0"), "{identities:?}");
}

/// The facts of an identity holding a certificate of the CA retiring in a rotation, the new one
/// having switched `switched_ago`.
fn mid_rotation(switched_ago: Duration, renews_in: Duration) -> Facts {
    let mut f = fresh();
    let old = new_ca("old CA", f.now);
    let old_key = old.public_key_der().to_vec();
    f.ca = Arc::new(new_ca("new CA", f.now).with_retiring(old));
    f.ca_switched_at = Some(f.now - switched_ago);
    // Renewal at two thirds of the lifetime: choose the lifetime so it falls `renews_in` ahead.
    let lifetime = Duration::minutes(60);
    let issued = f.now + renews_in - lifetime * (2.0 / 3.0);
    let i = info("0a", issued - Duration::minutes(1), issued + lifetime);
    let h = inputs_hash(&f);
    knows(&mut f, i, &h, &old_key);
    f
}

#[test]
fn a_rotation_defers_reissues_to_each_identitys_slot_then_paces_them() {
    // Just switched: the identity's slot lies ahead (within the 10 minute spread).
    let f = mid_rotation(Duration::ZERO, Duration::minutes(30));
    let steps = plan(&f, &settings()).steps;
    assert!(!has(&steps, |s| matches!(s, Step::Issue(_))), "{steps:#?}");
    assert!(ready_reason(&steps).0);
    assert!(after(finish(&steps)) <= std::time::Duration::from_secs(600));
    // The slot has passed: re-issued, at the rate.
    let f = mid_rotation(Duration::minutes(20), Duration::minutes(30));
    let steps = plan(&f, &settings()).steps;
    let i = issuance(&steps);
    assert_eq!(i.reason, ReissueReason::WrongIssuer);
    assert_eq!(i.paced.as_ref().map(|c| c.serial_hex.as_str()), Some("0a"));
    // Not admitted by the rate: kept until told.
    let until = f.now + Duration::seconds(2);
    let kept = i.paced.clone().unwrap();
    let rest = settle(&f, i, IssueReport::Paced { kept, until });
    assert!(ready_reason(&rest).0);
    assert_eq!(
        finish(&rest),
        Requeue::After(std::time::Duration::from_secs(2))
    );
    // A certificate due now is never held back by the rate.
    let f = mid_rotation(Duration::minutes(20), Duration::minutes(-1));
    let steps = plan(&f, &settings()).steps;
    assert_eq!(issuance(&steps).paced, None);
}

#[test]
fn kubernetes_access_is_planned_with_the_certificate() {
    let mut f = facts_of(identity(
        serde_json::json!({"kubernetesAccess": {"enabled": true}}),
    ));
    let steps = plan(&f, &settings()).steps;
    assert_eq!(issuance(&steps).credential, CredentialPlan::Obtain);
    let mut disabled = settings();
    disabled.kubernetes_access = false;
    let steps = plan(&f, &disabled).steps;
    assert_eq!(issuance(&steps).credential, CredentialPlan::Disabled);
    // Signed, but access is disabled: blocked, said once.
    let i = issuance(&steps).clone();
    let rest = settle(&f, &i, IssueReport::KubeAccessDisabled);
    assert_eq!(events(&rest), vec![(true, "KubernetesAccessDisabled")]);
    assert_eq!(
        ready_reason(&rest),
        (false, "KubernetesAccessDisabled".into())
    );
    assert_eq!(finish(&rest), Requeue::AwaitChange);
    let status = written_status(&rest).unwrap().clone();
    with_identity(&mut f, |mi| mi.status = Some(status));
    let rest = settle(&f, &i, IssueReport::KubeAccessDisabled);
    assert!(events(&rest).is_empty());
}

fn wants_kubernetes() -> Facts {
    facts_of(identity(
        serde_json::json!({"kubernetesAccess": {"enabled": true}}),
    ))
}

fn renewing() -> Facts {
    let mut f = fresh();
    renewal_due(&mut f);
    f
}

fn csr_not_signed() -> CredentialFailure {
    CredentialFailure {
        reason: "CSRNotSigned",
        message: "not signed".into(),
    }
}

fn signing_failed(ca_expires_too_soon: bool) -> IssueReport {
    IssueReport::SigningFailed {
        ca_expires_too_soon,
        message: "cannot sign".into(),
    }
}

#[test]
fn what_becomes_of_an_issuance_settles_the_rest() {
    type Report = fn(&Facts) -> IssueReport;
    // (case, facts, report, Events, Ready, Issuing)
    type Case = (
        &'static str,
        fn() -> Facts,
        Report,
        Vec<(bool, &'static str)>,
        bool,
        bool,
    );
    let cases: [Case; 6] = [
        (
            "first issuance",
            fresh,
            |f| written(f, "0b", None),
            vec![(false, "Issued")],
            true,
            false,
        ),
        (
            "renewal",
            renewing,
            |f| written(f, "0b", None),
            vec![(false, "Renewed")],
            true,
            false,
        ),
        (
            "CA expires too soon",
            fresh,
            |_| signing_failed(true),
            vec![(true, "CAExpiresTooSoon")],
            false,
            true,
        ),
        (
            "signing failed",
            fresh,
            |_| signing_failed(false),
            vec![(true, "IssuanceFailed")],
            false,
            true,
        ),
        (
            "credential failed, no certificate yet: written without a kubeconfig",
            wants_kubernetes,
            |f| written(f, "0b", Some(csr_not_signed())),
            vec![(true, "CSRNotSigned"), (false, "Issued")],
            true,
            true,
        ),
        (
            "Secret taken meanwhile",
            fresh,
            |_| IssueReport::SecretTaken {
                credential_failure: None,
            },
            vec![(true, "SecretConflict")],
            false,
            false,
        ),
    ];
    for (name, facts, report, expected_events, ready, issuing) in cases {
        let f = facts();
        let steps = plan(&f, &settings()).steps;
        let rest = settle(&f, issuance(&steps), report(&f));
        assert_eq!(events(&rest), expected_events, "{name}");
        assert_eq!(ready_and_issuing(&rest), (ready, issuing), "{name}");
        assert!(matches!(finish(&rest), Requeue::After(_)), "{name}");
    }
}

fn ready_and_issuing(steps: &[Step]) -> (bool, bool) {
    let status = written_status(steps).expect("a status is written");
    let cond = |t: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .is_true()
    };
    (cond(READY), cond(ISSUING))
}

#[test]
fn a_failed_credential_keeps_a_valid_certificate_and_writes_nothing() {
    let mut f = wants_kubernetes();
    renewal_due(&mut f);
    let steps = plan(&f, &settings()).steps;
    let issuance = issuance(&steps);
    assert!(issuance.still_valid.is_some());
    let failure = csr_not_signed();
    let report = IssueReport::CredentialFailed {
        reason: failure.reason,
        message: failure.message,
    };
    let rest = settle(&f, issuance, report);
    assert!(!has(&rest, |s| matches!(
        s,
        Step::RememberCertificate { .. }
    )));
    assert_eq!(events(&rest), vec![(true, "CSRNotSigned")]);
    assert!(has(
        &rest,
        |s| matches!(s, Step::CountFailure(r) if r == "CSRNotSigned")
    ));
    assert_eq!(
        finish(&rest),
        Requeue::After(std::time::Duration::from_secs(30))
    );
    assert!(
        ready_reason(&rest).0,
        "the current certificate still serves"
    );
}

#[test]
fn an_issuance_remembers_what_it_wrote_and_says_what_it_carries() {
    let mut f = fresh();
    f.entitlements = vec![entitlement("pay", &["payments.process"])];
    let steps = plan(&f, &settings()).steps;
    let i = issuance(&steps);
    let rest = settle(&f, i, written(&f, "0b", None));
    assert!(has(&rest, |s| matches!(
        s,
        Step::RememberCertificate { version: Some(v), certificate } if v == "8" && certificate.info.serial_hex == "0b"
    )));
    assert!(has(&rest, |s| matches!(
        s,
        Step::CountIssued("SecretMissing")
    )));
    let note = event_note(&rest, "Issued");
    assert!(
        note.starts_with("issued certificate 0b (SecretMissing), valid until "),
        "{note}"
    );
    assert!(note.ends_with(", carrying payments.process"), "{note}");
    let status = written_status(&rest).unwrap();
    assert_eq!(status.serial_number.as_deref(), Some("0b"));
    assert_eq!(status.entitlements, vec!["payments.process"]);
    assert!(status.spiffe_id.as_deref() == Some("spiffe://cluster.local/ns/pay/mi/api"));
}

#[test]
fn write_conflicts_are_looked_at_again() {
    let f = fresh();
    let steps = plan(&f, &settings()).steps;
    let i = issuance(&steps);
    let created = settle(
        &f,
        i,
        IssueReport::WriteConflicted {
            created: true,
            credential_failure: None,
        },
    );
    assert!(matches!(
        created.as_slice(),
        [Step::Fail(Failure::SecretAppeared)]
    ));
    let applied = settle(
        &f,
        i,
        IssueReport::WriteConflicted {
            created: false,
            credential_failure: None,
        },
    );
    assert!(matches!(
        applied.as_slice(),
        [Step::ForgetCertificate, Step::Fail(Failure::SecretAppeared)]
    ));
}

#[test]
fn a_status_already_written_is_not_written_again() {
    let mut f = holding_current();
    let steps = plan(&f, &settings()).steps;
    let status = written_status(&steps).unwrap().clone();
    f.status_just_written = Some(fingerprint(&crate::controller::status::comparable(&status)));
    let steps = plan(&f, &settings()).steps;
    assert!(written_status(&steps).is_none(), "{steps:#?}");
    // Something else written moments ago: written again.
    f.status_just_written = Some(fingerprint(&"another status"));
    assert!(written_status(&plan(&f, &settings()).steps).is_some());
}

#[test]
fn the_requeue_moves_to_the_next_grant_change() {
    let mut f = holding_current();
    let mut ent = entitlement("soon", &["payments.process"]);
    ent.not_before = Some(f.now + Duration::minutes(5));
    f.entitlements = vec![ent];
    let steps = plan(&f, &settings()).steps;
    let wait = after(finish(&steps)).as_secs();
    assert!((299..=301).contains(&wait), "{wait}");
}
