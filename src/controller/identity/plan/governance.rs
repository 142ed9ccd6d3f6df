//! The plans of lifecycle governance: revoke and let go on deletion, retire (revoke and delete),
//! suspend (revoke and strip the key), and answer a revoke request.

use kube::ResourceExt;
use time::OffsetDateTime;

use super::conclude::{StatusExtras, identity_key, serial_list, status_write};
use super::steps::{OnRevokeFailure, PlannedEvent, Requeue, Revoke, Step, requeue_at};
use crate::controller::identity::facts::{Facts, RevokeRequest, SecretRead, revoke_request};
use crate::controller::identity::settings::Settings;
use crate::controller::identity_secret::{Ownership, keys, ownership};
use crate::controller::status::{
    Outcome, READY, REVOCATION_REFUSED, refused_condition, status_changed,
};
use crate::revoke::{Reason, Revocation, RevokeError};
use nhi_api::{Condition, MachineIdentityStatus, RefusedRevocation, RevocationStatus};
use nhi_core::lifecycle::certificates::every_revocation;
use nhi_core::lifecycle::verdict::{Lifecycle, REVIEW_OVERDUE, RetireCause};
use nhi_core::lifecycle::workload::WorkloadState;
use nhi_core::revocation::quota::Refusal;
use nhi_identity::certificate::CertificateInfo;
use nhi_identity::certificate::{leaf_info, leaf_spiffe_id, spiffe_path};
use nhi_identity::timestamp::rfc3339;

/// How soon a deletion whose revocation failed is tried again.
const REVOCATION_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The certificate the identity's Secret holds (the status may not show it yet): what the
/// operator knows of it at the indexed version, else what the Secret read shows; an error when
/// it could not be read (a revocation must not miss it).
fn certificate_held(facts: &Facts) -> Result<Option<CertificateInfo>, RevokeError> {
    let secret = &facts.secret;
    if secret.known_absent() {
        return Ok(None);
    }
    if let Some(known) = &secret.known {
        return Ok(Some(known.info.clone()));
    }
    match &secret.read {
        SecretRead::Unreadable(e) => Err(RevokeError::NotRecorded(format!(
            "cannot read the identity Secret to find its certificate: {e}"
        ))),
        SecretRead::Read(Some(s))
            if ownership(Some(&s.metadata), &facts.identity) == Ownership::Ours =>
        {
            let crt = s.data.as_ref().and_then(|d| d.get(keys::TLS_CRT));
            // Only a certificate of this identity: revoking one copied in from another identity
            // would revoke that one.
            let expected = facts
                .identity
                .status
                .as_ref()
                .and_then(|st| st.spiffe_id.as_deref());
            let ours = |crt: &[u8]| match expected {
                Some(id) => leaf_spiffe_id(crt).as_deref().and_then(spiffe_path) == spiffe_path(id),
                None => true,
            };
            Ok(crt
                .filter(|crt| ours(&crt.0))
                .and_then(|crt| leaf_info(&crt.0)))
        }
        SecretRead::Read(_) | SecretRead::NotRead => Ok(None),
    }
}

/// Every unexpired certificate of the identity, revoked for `reason`, and their serials.
fn revoke_every_certificate(
    facts: &Facts,
    reason: Reason,
) -> (Result<Vec<Revocation>, RevokeError>, Vec<String>) {
    match certificate_held(facts) {
        Ok(held) => {
            let revoked = every_revocation(
                facts.identity.status.as_ref(),
                held.as_ref(),
                reason,
                &identity_key(facts),
                facts.now,
            );
            let serials = revoked.iter().map(|r| r.serial_hex.clone()).collect();
            (Ok(revoked), serials)
        }
        Err(e) => (Err(e), vec![]),
    }
}

/// The deletion path, whoever deleted the identity: revoke every unexpired certificate, then let
/// it go. If the revocation cannot be recorded, see [`deletion_not_recorded`].
pub(super) fn deletion(facts: &Facts) -> Vec<Step> {
    let mi = &facts.identity;
    let mut steps = vec![Step::ForgetMetrics];
    if !mi
        .finalizers()
        .iter()
        .any(|f| f == nhi_core::labels::REVOKE_FINALIZER)
    {
        steps.extend([Step::ForgetIdentity, Step::Finish(Requeue::AwaitChange)]);
        return steps;
    }
    let (revocations, serials) = revoke_every_certificate(facts, Reason::CessationOfOperation);
    steps.push(Step::Revoke(Box::new(Revoke {
        revocations,
        on_failure: OnRevokeFailure::HoldDeletion,
        if_fresh: vec![],
        if_none_fresh: vec![],
    })));
    steps.push(Step::Log(format!(
        "identity deleted; certificates revoked: {serials:?}"
    )));
    // Said once: not again for certificates a retirement or suspension already revoked (and
    // said so).
    let said = facts
        .last_revocation
        .as_ref()
        .is_some_and(|r| serials.iter().all(|s| r.serial_numbers.contains(s)));
    if !serials.is_empty() && !said {
        steps.push(Step::Publish(PlannedEvent::normal(
            "Revoked",
            format!("identity deleted: revoked {}", serial_list(&serials)),
        )));
    }
    steps.extend([
        Step::RemoveFinalizer,
        Step::ForgetIdentity,
        Step::Finish(Requeue::AwaitChange),
    ]);
    steps
}

/// The rest of a deletion whose revocation could not be recorded or was refused (`error`): it
/// waits, showing why, and is tried again until the revocation is recorded or the certificates
/// have expired (then nothing is left to revoke). Only an operator started with a finalizer
/// timeout lets it go earlier, its certificates still valid, saying so.
pub fn deletion_not_recorded(facts: &Facts, settings: &Settings, error: &RevokeError) -> Vec<Step> {
    let mi = &facts.identity;
    let now = facts.now;
    let deleted_at = mi
        .metadata
        .deletion_timestamp
        .as_ref()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok())
        .unwrap_or(now);
    let waited = now - deleted_at;
    let timeout = settings
        .lifecycle
        .finalizer_timeout
        .filter(|timeout| waited >= *timeout);
    let Some(timeout) = timeout else {
        let reason = error.reason();
        let mut steps = vec![Step::CountFailure(reason.into())];
        // Said when the status starts saying it, not on every retry.
        if let Some(status) = revocation_failure_status(facts, reason, &error.to_string()) {
            steps.push(Step::Publish(PlannedEvent::warning(
                reason,
                format!(
                    "{error}; the identity is deleted once its certificates are revoked, or have expired"
                ),
            )));
            steps.push(Step::RecordRevocationFailure(Box::new(status)));
        }
        steps.push(Step::Finish(Requeue::After(revocation_retry(waited))));
        return steps;
    };
    vec![
        Step::Publish(PlannedEvent::warning(
            "RevocationAbandoned",
            format!(
                "deletion has waited {}s (--finalizer-timeout) for the revocation to be recorded, so the identity is let go: its certificates stay valid until they expire. Last error: {error}",
                timeout.whole_seconds()
            ),
        )),
        Step::CountFailure("RevocationAbandoned".into()),
        Step::RemoveFinalizer,
        Step::ForgetIdentity,
        Step::Finish(Requeue::AwaitChange),
    ]
}

/// How soon a deletion waiting for its revocation tries again: soon at first (an apiserver
/// hiccup), then every half minute (a full quota frees up only as certificates expire).
fn revocation_retry(waited: time::Duration) -> std::time::Duration {
    if waited < time::Duration::minutes(1) {
        REVOCATION_RETRY
    } else {
        std::time::Duration::from_secs(30)
    }
}

/// The status showing a failed revocation while the deletion waits: the whole status with Ready
/// replaced (an apply of less would drop the fields that say which certificates are still to be
/// revoked); None when it says so already (every retry says the same).
fn revocation_failure_status(
    facts: &Facts,
    reason: &str,
    message: &str,
) -> Option<MachineIdentityStatus> {
    let mi = &facts.identity;
    let mut status = mi.status.clone().unwrap_or_default();
    let ready = Condition::new(READY, false, reason, format!("deleting: {message}"));
    let others: Vec<Condition> = status
        .conditions
        .iter()
        .filter(|c| c.type_ != READY)
        .cloned()
        .collect();
    let mut conditions = nhi_api::condition::merge_conditions(
        &status.conditions,
        vec![ready],
        mi.metadata.generation,
        &rfc3339(facts.now),
    );
    conditions.extend(others);
    status.conditions = conditions;
    status_changed(mi.status.as_ref(), &status).then_some(status)
}

/// Retires the identity: revokes every unexpired certificate, says why, and deletes it (the
/// finalizer then finds nothing left to revoke).
pub(super) fn retire(facts: &Facts, lifecycle: &Lifecycle, cause: RetireCause) -> Vec<Step> {
    let mi = &facts.identity;
    let reason = match cause {
        RetireCause::WorkloadGone => Reason::CessationOfOperation,
        RetireCause::ReviewOverdue => Reason::PrivilegeWithdrawn,
    };
    let (revocations, serials) = revoke_every_certificate(facts, reason);
    let why = match (cause, &lifecycle.workload, &mi.spec.workload_ref) {
        (RetireCause::WorkloadGone, WorkloadState::Lapsed { since }, Some(w)) => format!(
            "{} {} has been missing since {}, past its grace period",
            w.kind,
            w.name,
            rfc3339(*since)
        ),
        _ => format!(
            "the review date {} has passed and onReviewLapse is Delete",
            mi.spec.review_by.as_deref().unwrap_or_default()
        ),
    };
    let note = format!(
        "{why}: revoked {} and deleting the identity",
        serial_list(&serials)
    );
    vec![
        Revoke::plain(revocations),
        Step::RememberRevocation(RevocationStatus {
            reason: cause.reason().into(),
            revoked_at: rfc3339(facts.now),
            serial_numbers: serials,
            request: None,
        }),
        Step::Log(note.clone()),
        Step::Publish(PlannedEvent::warning(cause.reason(), note)),
        Step::CountFailure(cause.reason().into()),
        Step::DeleteIdentity,
        Step::Finish(Requeue::AwaitChange),
    ]
}

/// The Secret version to strip the key material from, when the Secret is ours and holds some (a
/// certificate the operator knows it holds comes with its key).
fn strippable(facts: &Facts) -> Option<String> {
    let secret = &facts.secret;
    if let (Some(seen), Some(_)) = (secret.indexed_ours(&facts.uid), &secret.known) {
        return Some(seen.resource_version.clone());
    }
    let SecretRead::Read(Some(s)) = &secret.read else {
        return None;
    };
    if ownership(Some(&s.metadata), &facts.identity) != Ownership::Ours {
        return None;
    }
    let data = s.data.as_ref()?;
    let holds = |k: &str| data.get(k).is_some_and(|v| !v.0.is_empty());
    [
        keys::TLS_KEY,
        keys::TLS_CRT,
        keys::IDENTITY_PEM,
        keys::KUBECONFIG,
    ]
    .iter()
    .any(|k| holds(k))
    .then(|| s.metadata.resource_version.clone().unwrap_or_default())
}

/// Suspends the identity (review lapsed, `Suspend`): revokes every unexpired certificate and
/// removes the key material from its Secret; renewing stops until `reviewBy` moves forward. A
/// pending revoke request is answered by the suspension's revocation, or on its own when the
/// suspension revoked and removed nothing new.
pub(super) fn suspend(
    facts: &Facts,
    lifecycle: &Lifecycle,
    conditions: Vec<Condition>,
) -> Vec<Step> {
    let mi = &facts.identity;
    let (revocations, serials) = revoke_every_certificate(facts, Reason::PrivilegeWithdrawn);
    let strip = strippable(facts);
    let outcome = suspended_outcome(mi);
    let suspended = suspended_steps(facts, &outcome, serials, conditions.clone());
    let mut steps = match strip {
        Some(version) => {
            let mut steps = vec![
                Revoke::plain(revocations),
                Step::StripKeyMaterial { version },
            ];
            steps.extend(suspended);
            steps
        }
        None => {
            let answer = answer_revoke_request(facts);
            let mut nothing_new = vec![Step::ForgetCertificate];
            nothing_new.extend(answer.steps);
            nothing_new.extend(status_write(
                facts,
                &outcome,
                None,
                conditions,
                answer.status,
                StatusExtras::of(&facts.identity),
            ));
            vec![Step::Revoke(Box::new(Revoke {
                revocations,
                on_failure: OnRevokeFailure::FailReconcile,
                if_fresh: suspended,
                if_none_fresh: nothing_new,
            }))]
        }
    };
    // A workload's grace period can still end while suspended.
    let requeue = lifecycle
        .next_check
        .map_or(Requeue::AwaitChange, |at| requeue_at(at, facts.now));
    steps.push(Step::Finish(requeue));
    steps
}

/// What a lapsed review shows as the identity's Ready condition.
fn suspended_outcome(mi: &nhi_api::MachineIdentity) -> Outcome {
    Outcome::Blocked {
        reason: REVIEW_OVERDUE.into(),
        message: format!(
            "the review date {} has passed: the identity is suspended (certificates revoked, key removed); move reviewBy forward to resume",
            mi.spec.review_by.as_deref().unwrap_or_default()
        ),
    }
}

/// What a suspension that revoked or removed something (`serials`) does: says so, remembers
/// the revocation, and shows it in status (answering a pending revoke request too).
fn suspended_steps(
    facts: &Facts,
    outcome: &Outcome,
    serials: Vec<String>,
    conditions: Vec<Condition>,
) -> Vec<Step> {
    let mi = &facts.identity;
    let note = format!(
        "the review date {} has passed: revoked {}, removed the key from Secret {}; renewing stops until reviewBy moves forward (kubectl nhi review)",
        mi.spec.review_by.as_deref().unwrap_or_default(),
        serial_list(&serials),
        mi.spec.secret_name
    );
    let revocation = RevocationStatus {
        reason: REVIEW_OVERDUE.into(),
        revoked_at: rfc3339(facts.now),
        serial_numbers: serials,
        request: None,
    };
    let mut shown = revocation.clone();
    shown.request = mi
        .annotations()
        .get(nhi_core::labels::REVOKE_REQUESTED)
        .cloned();
    let mut steps = vec![
        Step::ForgetCertificate,
        Step::Publish(PlannedEvent::warning("Suspended", note)),
        Step::RememberRevocation(revocation),
    ];
    let extras = StatusExtras::of(&facts.identity);
    steps.extend(status_write(
        facts,
        outcome,
        None,
        conditions,
        Some(shown),
        extras,
    ));
    steps
}

/// How a revoke request is answered: the steps, the revocation to show in status, and whether
/// certificates are revoked now (a new one is then issued unless the identity is suspended).
pub(super) struct Answer {
    pub steps: Vec<Step>,
    pub status: Option<RevocationStatus>,
    pub revoked_now: bool,
}

/// Answers a `kubectl nhi revoke` request (a new value of the `nhi.dev/revoke-requested`
/// annotation): revokes every unexpired certificate. One answered already, though the status
/// does not show it (the cache lags our write, or the write failed), is shown again and revokes
/// nothing more.
pub(super) fn answer_revoke_request(facts: &Facts) -> Answer {
    let request = match revoke_request(&facts.identity, facts.last_revocation.as_ref()) {
        RevokeRequest::None => {
            return Answer {
                steps: vec![],
                status: None,
                revoked_now: false,
            };
        }
        RevokeRequest::Answered(status) => {
            return Answer {
                steps: vec![],
                status: Some(status.clone()),
                revoked_now: false,
            };
        }
        RevokeRequest::New(request) => request,
    };
    let (revocations, serials) = revoke_every_certificate(facts, Reason::KeyCompromise);
    let note = format!("revoked {} on request ({request})", serial_list(&serials));
    let status = RevocationStatus {
        reason: "RevokeRequested".into(),
        revoked_at: rfc3339(facts.now),
        serial_numbers: serials,
        request: Some(request.to_string()),
    };
    Answer {
        steps: vec![
            Step::Revoke(Box::new(Revoke {
                revocations,
                on_failure: OnRevokeFailure::RefuseRequest,
                if_fresh: vec![],
                if_none_fresh: vec![],
            })),
            Step::ForgetCertificate,
            Step::Publish(PlannedEvent::warning("RevokeRequested", note)),
            Step::RememberRevocation(status.clone()),
        ],
        status: Some(status),
        revoked_now: true,
    }
}

/// A revoke request refused over a quota: answered as refused (the status says so, with a
/// condition, and the request is not tried again), one Warning Event when the refusals start,
/// and the identity otherwise left as it is: its certificates stay valid.
pub fn revoke_request_refused(facts: &Facts, refusal: &Refusal) -> Vec<Step> {
    let mi = &facts.identity;
    let request = mi
        .annotations()
        .get(nhi_core::labels::REVOKE_REQUESTED)
        .cloned()
        .unwrap_or_default();
    let refused = RefusedRevocation {
        request: request.clone(),
        reason: refusal.reason().into(),
        message: refusal.to_string(),
        refused_at: rfc3339(facts.now),
    };
    let mut status = mi.status.clone().unwrap_or_default();
    let already = status
        .conditions
        .iter()
        .any(|c| c.type_ == REVOCATION_REFUSED && c.is_true() && c.reason == refusal.reason());
    let condition = refused_condition(&refused);
    let others: Vec<Condition> = status
        .conditions
        .iter()
        .filter(|c| c.type_ != REVOCATION_REFUSED)
        .cloned()
        .collect();
    status.conditions = others;
    status
        .conditions
        .extend(nhi_api::condition::merge_conditions(
            &mi.status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default(),
            vec![condition],
            status.observed_generation,
            &rfc3339(facts.now),
        ));
    status.refused_revocation = Some(Box::new(refused));
    let mut steps = vec![];
    if !already {
        steps.push(Step::Publish(PlannedEvent::warning(
            refusal.reason(),
            format!("revoke request {request} refused: {refusal}"),
        )));
    }
    steps.extend([
        Step::WriteStatus(Box::new(status)),
        // The normal plan runs again once the status shows the request answered.
        Step::Finish(Requeue::After(REVOCATION_RETRY)),
    ]);
    steps
}
