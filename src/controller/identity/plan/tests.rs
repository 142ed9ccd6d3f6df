//! Table-driven tests of the MachineIdentity plan: every step, every branch that only the
//! end-to-end tests reached before.

use std::sync::Arc;

use k8s_openapi::ByteString;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::ca::CertificateAuthority;
use crate::controller::identity::facts::{Facts, SecretFacts, SecretRead};
use crate::controller::identity_secret::{build_identity_secret, keys};
use crate::controller::secret_index::SecretVersion;
use crate::controller::status::{CERTIFICATE_VALID, ISSUING, READY};
use crate::controller::status_memory::fingerprint;
use crate::revoke::{Reason, RevokeError};
use nhi_api::{CertificateRecord, MachineIdentity, MachineIdentityStatus, RevocationStatus};
use nhi_core::entitle::resolve::EntitlementFacts;
use nhi_core::issue::assess::{KnownCertificate, ReissueReason};
use nhi_core::issue::inputs::{IssuancePolicy, resolve_identity};
use nhi_core::issue::keys::generate_key;
use nhi_core::issue::leaf::issue_leaf;
use nhi_core::labels::{REVOKE_FINALIZER, REVOKE_REQUESTED};
use nhi_core::lifecycle::workload::Presence;
use nhi_identity::certificate::CertificateInfo;
use nhi_identity::timestamp::rfc3339;

const UID: &str = "e1bf1523-c16a-45de-b47b-0eb795b56dfa";

fn new_ca(name: &str, now: OffsetDateTime) -> CertificateAuthority {
    let m = CertificateAuthority::generate_root(name, Duration::days(30), now).unwrap();
    CertificateAuthority::from_material(&m, now).unwrap()
}

fn settings() -> Settings {
    Settings {
        issuance: IssuancePolicy {
            trust_domain: "cluster.local".into(),
            default_ttl: Duration::hours(1),
            min_ttl: Duration::minutes(5),
            max_ttl: Duration::hours(24),
            renewal_fraction: 2.0 / 3.0,
        },
        lifecycle: LifecyclePolicy {
            workload_grace: Duration::minutes(5),
            review_warning: Duration::days(14),
            finalizer_timeout: Duration::minutes(1),
        },
        kubernetes_access: true,
        reissue_spread: Duration::minutes(10),
    }
}

fn identity(spec: serde_json::Value) -> MachineIdentity {
    let mut spec_json = serde_json::json!({"owner": {"team": "payments"}, "secretName": "api-id"});
    if let (Some(base), Some(extra)) = (spec_json.as_object_mut(), spec.as_object()) {
        base.extend(extra.clone());
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
        "metadata": {
            "name": "api", "namespace": "pay", "uid": UID, "generation": 1,
            "resourceVersion": "10", "finalizers": [REVOKE_FINALIZER],
        },
        "spec": spec_json,
    }))
    .unwrap()
}

/// The facts of a fresh identity: no Secret, nothing known, caches synced.
fn facts_of(mi: MachineIdentity) -> Facts {
    let now = OffsetDateTime::now_utc();
    Facts {
        now,
        identity: Arc::new(mi),
        namespace: "pay".into(),
        uid: UID.into(),
        entitlements_synced: true,
        policy: open_policy("pay"),
        workload: None,
        entitlements: vec![],
        secret: SecretFacts {
            indexed: None,
            index_synced: true,
            known: None,
            any_known: false,
            read: SecretRead::NotRead,
        },
        ca: Arc::new(new_ca("test CA", now)),
        ca_switched_at: None,
        last_revocation: None,
        status_just_written: None,
    }
}

/// A policy that allows every grant, Kubernetes access and every rule (above the floor).
pub(crate) fn open_policy(namespace: &str) -> nhi_core::policy::EffectivePolicy {
    let everything = vec!["*".to_string()];
    let open = nhi_api::IdentityPolicy::new(
        "open",
        nhi_api::IdentityPolicySpec {
            namespace_selector: Default::default(),
            dns_names: None,
            grants: Some(nhi_api::ClaimRule {
                allowed: everything.clone(),
                exclusive: false,
            }),
            max_ttl: None,
            key_algorithms: vec![],
            kubernetes_access: Some(true),
            kubernetes_rules: vec![nhi_api::KubernetesRule {
                api_groups: everything.clone(),
                resources: everything.clone(),
                verbs: everything,
                resource_names: vec![],
            }],
            reserved_attributes: vec![],
        },
    );
    nhi_core::policy::effective_policy(namespace, &Default::default(), &[open], "cluster.local")
}

fn fresh() -> Facts {
    facts_of(identity(serde_json::json!({})))
}

fn with_identity(facts: &mut Facts, edit: impl FnOnce(&mut MachineIdentity)) {
    let mut mi = (*facts.identity).clone();
    edit(&mut mi);
    facts.identity = Arc::new(mi);
}

/// The inputs hash of the identity's certificate without grants or attributes.
fn inputs_hash(facts: &Facts) -> String {
    resolve_identity(&facts.identity, &settings().issuance, vec![], None)
        .unwrap()
        .inputs_hash
}

fn info(serial: &str, not_before: OffsetDateTime, not_after: OffsetDateTime) -> CertificateInfo {
    CertificateInfo {
        serial_hex: serial.into(),
        thumbprint_sha256: format!("{serial}-thumb"),
        not_before,
        not_after,
    }
}

/// A certificate valid for the next hour, issued a minute ago.
fn current_info(facts: &Facts) -> CertificateInfo {
    info(
        "0a",
        facts.now - Duration::minutes(1),
        facts.now + Duration::minutes(59),
    )
}

/// The Secret is ours, indexed at version 7 with the CA's bundle, and the operator knows the
/// certificate in it.
fn knows(facts: &mut Facts, info: CertificateInfo, inputs_hash: &str, ca_key: &[u8]) {
    facts.secret.indexed = Some(SecretVersion {
        resource_version: "7".into(),
        controller_uid: Some(UID.into()),
        trust_bundle: Some(facts.ca.bundle_fingerprint().to_string()),
    });
    facts.secret.known = Some(KnownCertificate::new(info, inputs_hash, ca_key));
    facts.secret.any_known = true;
}

/// The Secret is ours, holds a current certificate, and the operator knows it.
fn holding_current() -> Facts {
    let mut f = fresh();
    let (i, h, key) = (
        current_info(&f),
        inputs_hash(&f),
        f.ca.public_key_der().to_vec(),
    );
    knows(&mut f, i, &h, &key);
    f
}

/// A real identity Secret for the identity, with a certificate signed by the facts' CA now.
fn real_secret(facts: &Facts) -> k8s_openapi::api::core::v1::Secret {
    let resolved = resolve_identity(&facts.identity, &settings().issuance, vec![], None).unwrap();
    let key = generate_key(resolved.key_algorithm).unwrap();
    let issued = issue_leaf(&facts.ca, &resolved.request, &key, facts.now).unwrap();
    let mut s = build_identity_secret(
        &facts.identity,
        &issued,
        &facts.ca,
        &resolved.inputs_hash,
        None,
    );
    s.metadata.resource_version = Some("7".into());
    s
}

fn status_with(serial: &str, not_after: OffsetDateTime, grants: &[&str]) -> MachineIdentityStatus {
    MachineIdentityStatus {
        serial_number: Some(serial.into()),
        not_after: Some(rfc3339(not_after)),
        entitlements: grants.iter().map(|g| g.to_string()).collect(),
        ..Default::default()
    }
}

fn entitlement(name: &str, grants: &[&str]) -> EntitlementFacts {
    EntitlementFacts {
        name: name.into(),
        names: ["api".to_string()].into(),
        pins: Default::default(),
        selector: None,
        grants: grants.iter().map(|g| g.to_string()).collect(),
        not_before: None,
        expires_at: None,
        expiry_lead: Duration::ZERO,
    }
}

// Inspecting plans.

fn events(steps: &[Step]) -> Vec<(bool, &str)> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Publish(e) => Some((e.warning, e.reason.as_str())),
            _ => None,
        })
        .collect()
}

fn event_note<'a>(steps: &'a [Step], reason: &str) -> &'a str {
    steps
        .iter()
        .find_map(|s| match s {
            Step::Publish(e) if e.reason == reason => Some(e.note.as_str()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {reason} Event in {steps:#?}"))
}

fn finish(steps: &[Step]) -> Requeue {
    match steps.last() {
        Some(Step::Finish(r)) => *r,
        other => panic!("the plan does not finish: {other:?}"),
    }
}

fn written_status(steps: &[Step]) -> Option<&MachineIdentityStatus> {
    steps.iter().find_map(|s| match s {
        Step::WriteStatus(st) => Some(st.as_ref()),
        _ => None,
    })
}

fn ready_reason(steps: &[Step]) -> (bool, String) {
    let status = written_status(steps).expect("a status is written");
    let ready = status.conditions.iter().find(|c| c.type_ == READY).unwrap();
    (ready.is_true(), ready.reason.clone())
}

fn issuance(steps: &[Step]) -> &Issuance {
    match steps.last() {
        Some(Step::Issue(i)) => i,
        other => panic!("no issuance last: {other:?}"),
    }
}

fn revokes(steps: &[Step]) -> Vec<&Revoke> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Revoke(r) => Some(r.as_ref()),
            _ => None,
        })
        .collect()
}

fn reasons_revoked(r: &Revoke) -> Vec<(String, Reason)> {
    r.revocations
        .as_ref()
        .expect("revocations known")
        .iter()
        .map(|x| (x.serial_hex.clone(), x.reason))
        .collect()
}

fn has(steps: &[Step], pred: impl Fn(&Step) -> bool) -> bool {
    steps.iter().any(pred)
}

fn after(d: Requeue) -> std::time::Duration {
    match d {
        Requeue::After(d) => d,
        Requeue::AwaitChange => panic!("awaits a change"),
    }
}

// The tests.

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

fn mi_not_after() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::minutes(30)
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

fn written(facts: &Facts, serial: &str, failure: Option<CredentialFailure>) -> IssueReport {
    IssueReport::Written {
        info: info(
            serial,
            facts.now - Duration::minutes(1),
            facts.now + Duration::hours(1),
        ),
        version: Some("8".into()),
        credential: None,
        credential_failure: failure,
    }
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
        missing.last_transition_time = rfc3339(now - Duration::minutes(6));
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
            c.last_transition_time = rfc3339(now - Duration::minutes(2));
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
fn a_deletion_whose_revocation_is_not_recorded_waits_then_gives_up() {
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
        event_note(&retry, "RevocationFailed")
            .ends_with("; retrying before the identity is deleted")
    );
    let status = retry.iter().find_map(|s| match s {
        Step::RecordRevocationFailure(st) => Some(st),
        _ => None,
    });
    let ready = status
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .unwrap();
    assert_eq!(ready.reason, "RevocationFailed");
    assert_eq!(
        finish(&retry),
        Requeue::After(std::time::Duration::from_secs(5))
    );
    assert!(!has(&retry, |s| matches!(s, Step::RemoveFinalizer)));
    // Past the finalizer timeout: let go, and said why.
    f.now += Duration::minutes(2);
    let gone = deletion_not_recorded(&f, &settings(), &error);
    assert_eq!(events(&gone), vec![(true, "RevocationAbandoned")]);
    assert!(has(&gone, |s| matches!(s, Step::RemoveFinalizer)));
    assert_eq!(finish(&gone), Requeue::AwaitChange);
}

#[test]
fn what_the_policy_refuses_is_left_out_of_the_certificate_and_keeps_it_not_ready() {
    let mut f = facts_of(identity(serde_json::json!({
        "certificate": {"dnsNames": ["api.pay.svc", "payments-api.payments.svc"], "ttl": "2h"},
        "attributes": {"project": "p"},
        "kubernetesAccess": {"enabled": true},
    })));
    f.policy = nhi_core::policy::effective_policy("pay", &Default::default(), &[], "cluster.local");
    let steps = plan(&f, &settings()).steps;
    // Said once, as a Warning naming the field and the policy.
    assert_eq!(events(&steps), vec![(true, "PolicyDenied")]);
    let note = event_note(&steps, "PolicyDenied");
    assert!(
        note.contains("spec.certificate.dnsNames[1]: refused by the built-in default")
            && note.contains("\"payments-api.payments.svc\" is not allowed")
            && note.contains("built-in default")
            && note.contains("spec.kubernetesAccess.enabled"),
        "{note}"
    );
    // Issued without the refused name and without Kubernetes access.
    let i = issuance(&steps);
    assert_eq!(i.request.dns_names, vec!["api.pay.svc"]);
    assert_eq!(i.credential, CredentialPlan::NotWanted);
    let rest = settle(&f, i, written(&f, "0c", None));
    let status = written_status(&rest).unwrap();
    assert_eq!(status.serial_number.as_deref(), Some("0c"));
    let ready = nhi_api::condition::find_condition(&status.conditions, READY).unwrap();
    assert!(!ready.is_true());
    assert_eq!(ready.reason, "PolicyDenied");
    assert!(
        ready.message.contains("(certificate 0c valid until"),
        "{}",
        ready.message
    );
    // Once the status shows the refusal, it is not said again.
    let mut again = facts_of(identity(serde_json::json!({
        "certificate": {"dnsNames": ["api.pay.svc", "payments-api.payments.svc"], "ttl": "2h"},
        "attributes": {"project": "p"},
        "kubernetesAccess": {"enabled": true},
    })));
    again.policy = f.policy.clone();
    with_identity(&mut again, |mi| mi.status = Some(status.clone()));
    let steps = plan(&again, &settings()).steps;
    assert!(
        !events(&steps).contains(&(true, "PolicyDenied")),
        "{:?}",
        events(&steps)
    );
}

#[test]
fn a_refused_key_algorithm_issues_nothing() {
    let mut f = facts_of(identity(serde_json::json!({
        "certificate": {"keyAlgorithm": "Ed25519"},
    })));
    let strict = nhi_api::IdentityPolicy::new(
        "strict",
        nhi_api::IdentityPolicySpec {
            key_algorithms: vec![nhi_api::KeyAlgorithm::EcdsaP256],
            ..nhi_core::policy::effective::built_in_default()
        },
    );
    f.policy = nhi_core::policy::effective_policy("pay", &Default::default(), &[strict], "c");
    let steps = plan(&f, &settings()).steps;
    assert_eq!(events(&steps), vec![(true, "PolicyDenied")]);
    assert!(!has(&steps, |s| matches!(s, Step::Issue(_))));
    assert_eq!(ready_reason(&steps), (false, "PolicyDenied".to_string()));
    assert!(event_note(&steps, "PolicyDenied").contains("Ed25519 is not allowed"));
    assert_eq!(finish(&steps), Requeue::AwaitChange);
}
