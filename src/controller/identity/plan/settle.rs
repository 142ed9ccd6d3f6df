//! How a plan concludes once the identity's certificate is settled (found current, issued, or
//! not issuable): withdrawn grants, the requeue time, metrics, status; and [`settle`], which
//! turns what became of an issuance into that conclusion.

use super::governance::is_blocked_on;
use super::keep::kubernetes_access;
use super::{
    Conclusion, CredentialFailure, Failure, Issuance, IssueReport, OnRevokeFailure, PlannedEvent,
    Requeue, Revoke, Step, identity_key, requeue_at, serial_list,
};
use crate::api::{Condition, RevocationStatus};
use crate::ca::rfc3339;
use crate::controller::identity::facts::Facts;
use crate::controller::status::{
    Outcome, comparable, desired_status, status_changed, with_lifecycle,
};
use crate::controller::status_memory::fingerprint;
use crate::issue::assess::{
    Expectations, KnownCertificate, ReissueReason, renew_before_client_expiry, renewal_time,
};
use crate::issue::kube_client::access_disabled;
use crate::issue::leaf::CertificateInfo;
use crate::lifecycle::certificates::{revocations, unexpired};
use crate::revoke::Reason;

/// How long to wait before looking again at an identity whose Secret name is taken.
const CONFLICT_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);
/// How long to wait before asking for a Kubernetes client certificate again after a failure.
const KUBE_ACCESS_RETRY: std::time::Duration = std::time::Duration::from_secs(30);
/// How long to wait before signing again after a failure.
const SIGNING_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// The rest of the plan after an issuance, from what became of it.
pub fn settle(facts: &Facts, issuance: &Issuance, report: IssueReport) -> Vec<Step> {
    let conclusion = &issuance.conclusion;
    match report {
        IssueReport::Paced { kept, until } => {
            let outcome = Outcome::Valid {
                info: kept,
                renew_at: until,
                grants: conclusion.grants.clone(),
                kubernetes_access: kubernetes_access(
                    &facts.identity,
                    issuance.kube_client_not_after.clone(),
                ),
            };
            conclude(facts, conclusion, outcome, requeue_at(until, facts.now))
        }
        IssueReport::SigningFailed {
            ca_expires_too_soon,
            message,
        } => {
            let why = match ca_expires_too_soon {
                true => "CAExpiresTooSoon",
                false => "IssuanceFailed",
            };
            retrying(facts, issuance, why, message, SIGNING_RETRY)
        }
        IssueReport::KubeAccessDisabled => {
            let message = access_disabled("spec.kubernetesAccess");
            let mut steps = vec![];
            if !is_blocked_on(&facts.identity, "KubernetesAccessDisabled") {
                steps.push(Step::Publish(PlannedEvent::warning(
                    "KubernetesAccessDisabled",
                    message.clone(),
                )));
            }
            let outcome = Outcome::Blocked {
                reason: "KubernetesAccessDisabled".into(),
                message,
            };
            steps.extend(conclude(facts, conclusion, outcome, Requeue::AwaitChange));
            steps
        }
        IssueReport::CredentialFailed { reason, message } => {
            retrying(facts, issuance, reason, message, KUBE_ACCESS_RETRY)
        }
        IssueReport::SecretTaken { credential_failure } => {
            let mut steps = credential_failed(credential_failure.as_ref());
            let (events, outcome, requeue) = secret_conflict(facts);
            steps.extend(events);
            steps.extend(conclude(facts, conclusion, outcome, requeue));
            steps
        }
        // Ours, but not in the cache yet, or changed since it was judged: look again once the
        // cache shows it.
        IssueReport::WriteConflicted {
            created,
            credential_failure,
        } => {
            let mut steps = credential_failed(credential_failure.as_ref());
            if !created {
                steps.push(Step::ForgetCertificate);
            }
            steps.push(Step::Fail(Failure::SecretAppeared));
            steps
        }
        IssueReport::Written {
            info,
            version,
            credential,
            credential_failure,
        } => written(
            facts,
            issuance,
            info,
            version,
            credential,
            credential_failure,
        ),
    }
}

/// The credential failed, but the identity gets its certificate anyway (without a kubeconfig),
/// and the credential is retried: said and counted.
fn credential_failed(failure: Option<&CredentialFailure>) -> Vec<Step> {
    match failure {
        Some(f) => vec![
            Step::Publish(PlannedEvent::warning(f.reason, f.message.clone())),
            Step::CountFailure(f.reason.into()),
        ],
        None => vec![],
    }
}

/// An issuance that failed for `reason` before anything was written: said, counted, retried
/// after `retry`, the current certificate kept meanwhile when it is still valid.
fn retrying(
    facts: &Facts,
    issuance: &Issuance,
    reason: &str,
    message: String,
    retry: std::time::Duration,
) -> Vec<Step> {
    let mut steps = vec![
        Step::Publish(PlannedEvent::warning(reason, message.clone())),
        Step::CountFailure(reason.into()),
    ];
    let outcome = Outcome::Retrying {
        reason: reason.into(),
        message,
        current: issuance.still_valid.clone(),
    };
    steps.extend(conclude(
        facts,
        &issuance.conclusion,
        outcome,
        Requeue::After(retry),
    ));
    steps
}

/// The Secret holds the new certificate: remember it, say so, and conclude.
fn written(
    facts: &Facts,
    issuance: &Issuance,
    info: CertificateInfo,
    version: Option<String>,
    credential: Option<crate::api::KubernetesAccessStatus>,
    credential_failure: Option<CredentialFailure>,
) -> Vec<Step> {
    let mut steps = credential_failed(credential_failure.as_ref());
    let client_not_after = credential
        .as_ref()
        .map(|c| c.client_certificate_not_after.clone());
    // What is in the Secret at the version just written: the watch event of this very write
    // then needs no read of the Secret.
    steps.push(Step::RememberCertificate {
        version,
        certificate: KnownCertificate::new(
            info.clone(),
            &issuance.inputs_hash,
            facts.ca.public_key_der(),
        )
        .with_kube_client_not_after(client_not_after.clone()),
    });
    let renew_at = renew_before_client_expiry(
        renewal_time(&info, &renewal_expectations(facts, issuance)),
        &info,
        client_not_after.as_deref(),
    );
    steps.push(Step::CountIssued(issuance.reason.as_str()));
    steps.push(Step::Log(format!(
        "issued certificate {} ({})",
        info.serial_hex,
        issuance.reason.as_str()
    )));
    steps.push(Step::Publish(issued_event(
        issuance,
        &info,
        credential.as_ref(),
    )));
    let (outcome, requeue) = match credential_failure {
        Some(CredentialFailure { reason, message }) => (
            Outcome::Retrying {
                reason: reason.into(),
                message,
                current: Some((info, renew_at)),
            },
            Requeue::After(KUBE_ACCESS_RETRY),
        ),
        None => (
            Outcome::Valid {
                info,
                renew_at,
                grants: issuance.conclusion.grants.clone(),
                kubernetes_access: credential,
            },
            requeue_at(renew_at, facts.now),
        ),
    };
    steps.extend(conclude(facts, &issuance.conclusion, outcome, requeue));
    steps
}

/// What the renewal time of a new certificate is computed with.
fn renewal_expectations<'a>(facts: &'a Facts, issuance: &'a Issuance) -> Expectations<'a> {
    Expectations {
        ca_public_key_der: facts.ca.public_key_der(),
        retiring_ca_public_key_der: None,
        inputs_hash: &issuance.inputs_hash,
        renewal_fraction: issuance.renewal.fraction,
        identity_key: &issuance.renewal.identity_key,
        not_after_cap: issuance.renewal.not_after_cap,
        needs_kubeconfig: false,
        now: facts.now,
    }
}

/// The Event of an issuance: `Issued` (the first), `Renewed` or `Reissued`.
fn issued_event(
    issuance: &Issuance,
    info: &CertificateInfo,
    credential: Option<&crate::api::KubernetesAccessStatus>,
) -> PlannedEvent {
    let reason = match issuance.reason {
        ReissueReason::Missing if issuance.first => "Issued",
        ReissueReason::RenewalDue => "Renewed",
        _ => "Reissued",
    };
    let grants = &issuance.conclusion.grants;
    let mut carries = match grants.is_empty() {
        true => String::new(),
        false => format!(", carrying {}", grants.join(", ")),
    };
    if let Some(c) = credential {
        carries.push_str(&format!(
            "; Kubernetes client certificate for {} valid until {}",
            c.user, c.client_certificate_not_after
        ));
    }
    let note = format!(
        "issued certificate {} ({}), valid until {}{carries}",
        info.serial_hex,
        issuance.reason.as_str(),
        rfc3339(info.not_after)
    );
    PlannedEvent::normal(reason, note)
}

/// The identity's Secret name is taken by a Secret that is not ours: report it once, leave the
/// Secret alone, look again later. The Events, the outcome and the requeue.
pub(super) fn secret_conflict(facts: &Facts) -> (Vec<Step>, Outcome, Requeue) {
    let mi = &facts.identity;
    let message = format!(
        "Secret {}/{} exists and is not managed by this identity; it is left untouched",
        facts.namespace, mi.spec.secret_name
    );
    let mut steps = vec![];
    if !is_blocked_on(mi, "SecretConflict") {
        steps.push(Step::Publish(PlannedEvent::warning(
            "SecretConflict",
            message.clone(),
        )));
        steps.push(Step::CountFailure("SecretConflict".into()));
    }
    let outcome = Outcome::Blocked {
        reason: "SecretConflict".into(),
        message,
    };
    (steps, outcome, Requeue::After(CONFLICT_RECHECK))
}

/// Concludes a plan with the identity's certificate settled as `outcome`: certificates carrying
/// withdrawn grants revoked, the requeue moved to the next grant or lifecycle change when that
/// is sooner, the expiry metric, and the status.
pub(super) fn conclude(
    facts: &Facts,
    conclusion: &Conclusion,
    outcome: Outcome,
    requeue: Requeue,
) -> Vec<Step> {
    let mut steps = vec![];
    if let Some(current) = current_serial(&outcome) {
        steps.extend(withdrawn_grants(facts, &conclusion.grants, &current));
    }
    let requeue = sooner_change(facts, conclusion, &outcome, requeue);
    if let Outcome::Valid { info, .. } = &outcome {
        steps.push(Step::SetExpiry {
            not_after_unix: info.not_after.unix_timestamp(),
        });
    }
    steps.extend(status_write(
        facts,
        &outcome,
        conclusion.spiffe_id.clone(),
        conclusion.lifecycle_conditions.clone(),
        conclusion.revocation.clone(),
    ));
    steps.push(Step::Finish(requeue));
    steps
}

/// Come back when the grants change (an Entitlement starts or ends), or the lifecycle by time
/// alone (a review window, a workload's grace period), if that is sooner than the renewal.
/// Retries and rechecks keep their own, shorter, delays.
fn sooner_change(
    facts: &Facts,
    conclusion: &Conclusion,
    outcome: &Outcome,
    requeue: Requeue,
) -> Requeue {
    let renewal = renewal_of(outcome);
    let requeue = match (conclusion.grants_change_at, renewal) {
        (Some(at), Some(renew_at)) if at < renew_at => requeue_at(at, facts.now),
        _ => requeue,
    };
    match (conclusion.lifecycle_check_at, renewal) {
        (Some(at), Some(renew_at)) if at < renew_at => requeue_at(at, facts.now),
        // No certificate to renew: the lifecycle time replaces waiting for a change, never a
        // retry's own, shorter delay.
        (Some(at), None) if requeue == Requeue::AwaitChange => requeue_at(at, facts.now),
        _ => requeue,
    }
}

/// When the identity's grants lost some its previous certificates carried (an Entitlement
/// deleted, narrowed, or no longer selecting it) and it holds `current`, the earlier ones are
/// revoked. Certificates ending within two minutes are left to expire: a grant reaching its
/// `expiresAt` leaves with its certificates (they were capped at it). A failure fails the
/// reconcile, so it is retried before the status forgets which grants were withdrawn.
fn withdrawn_grants(facts: &Facts, grants: &[String], current: &str) -> Option<Step> {
    let status = facts.identity.status.as_ref()?;
    let withdrawn: Vec<&str> = status
        .entitlements
        .iter()
        .filter(|g| !grants.contains(g))
        .map(String::as_str)
        .collect();
    if withdrawn.is_empty() {
        return None;
    }
    let now = facts.now;
    let certs: Vec<_> = unexpired(Some(status), None, now)
        .into_iter()
        .filter(|(serial, not_after)| {
            !serial.eq_ignore_ascii_case(current) && *not_after > now + time::Duration::minutes(2)
        })
        .collect();
    if certs.is_empty() {
        return None;
    }
    let serials: Vec<String> = certs.iter().map(|(s, _)| s.clone()).collect();
    let note = format!(
        "{} no longer granted: revoked {}",
        withdrawn.join(", "),
        serial_list(&serials)
    );
    Some(Step::Revoke(Box::new(Revoke {
        revocations: Ok(revocations(
            &certs,
            Reason::PrivilegeWithdrawn,
            &identity_key(facts),
        )),
        on_failure: OnRevokeFailure::FailReconcile,
        if_fresh: vec![Step::Publish(PlannedEvent::normal("GrantWithdrawn", note))],
        if_none_fresh: vec![],
    })))
}

/// The status after `outcome` with the lifecycle conditions and a revocation (this reconcile's,
/// else the last one this operator made: the cache may lag our write of it); None when neither
/// the cached status nor our write of moments ago differs from it.
pub(super) fn status_write(
    facts: &Facts,
    outcome: &Outcome,
    spiffe_id: Option<String>,
    conditions: Vec<Condition>,
    revocation: Option<RevocationStatus>,
) -> Option<Step> {
    let mi = &facts.identity;
    let status = desired_status(
        mi.status.as_ref(),
        outcome,
        spiffe_id,
        mi.metadata.generation,
        facts.now,
    );
    let revocation = revocation.or_else(|| facts.last_revocation.clone());
    let mut status = with_lifecycle(
        status,
        mi.status.as_ref(),
        conditions,
        revocation,
        facts.now,
    );
    if !mi.wants_kubernetes_access() {
        status.kubernetes_access = None;
    }
    let unchanged = !status_changed(mi.status.as_ref(), &status)
        || facts.status_just_written == Some(fingerprint(&comparable(&status)));
    (!unchanged).then(|| Step::WriteStatus(Box::new(status)))
}

/// The serial of the certificate the identity holds after this reconcile, if any.
fn current_serial(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Valid { info, .. }
        | Outcome::Retrying {
            current: Some((info, _)),
            ..
        } => Some(info.serial_hex.clone()),
        _ => None,
    }
}

/// When the certificate in `outcome` renews, if there is one.
fn renewal_of(outcome: &Outcome) -> Option<time::OffsetDateTime> {
    match outcome {
        Outcome::Valid { renew_at, .. } => Some(*renew_at),
        Outcome::Retrying {
            current: Some((_, renew_at)),
            ..
        } => Some(*renew_at),
        _ => None,
    }
}
