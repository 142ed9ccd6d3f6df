//! Table-driven tests of the MachineIdentity plan: every step, every branch that only the
//! end-to-end tests reached before. This module builds facts and inspects plans; the tests are
//! in [`issuance`] (judging the Secret, issuing, settling), [`governance`] (review, workload,
//! deletion) and [`policy`] (what the tenant policy refuses).

mod governance;
mod issuance;
mod policy;

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
use nhi_api::{
    CertificateRecord, MachineIdentity, MachineIdentityStatus, PodCertificateRecord,
    PodCertificatesStatus, RevocationStatus,
};
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
            finalizer_timeout: Some(Duration::minutes(1)),
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
            delegation: None,
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
        not_after: Some(rfc3339(not_after).into()),
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
    (ready.is_true(), ready.reason.to_string())
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

fn mi_not_after() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::minutes(30)
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
