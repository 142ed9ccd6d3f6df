//! How every plan that settled the identity's certificate (found current, issued, or not
//! issuable) concludes: certificates carrying withdrawn grants revoked, the requeue time, the
//! expiry metric and the status; and the facts about the identity the plans share.

use time::OffsetDateTime;

use super::steps::{Conclusion, OnRevokeFailure, PlannedEvent, Requeue, Revoke, Step, requeue_at};
use crate::controller::identity::facts::Facts;
use crate::controller::status::{
    Outcome, READY, comparable, deny_ready, desired_status, status_changed, with_lifecycle,
};
use crate::controller::status_memory::fingerprint;
use crate::revoke::Reason;
use nhi_api::{Condition, KubernetesAccessStatus, MachineIdentity, RevocationStatus};
use nhi_core::issue::kube_client::kube_user;
use nhi_core::lifecycle::certificates::{revocations, unexpired};
use nhi_core::podcert::record::pod_revocations;

/// How long to wait before looking again at an identity whose Secret name is taken.
const CONFLICT_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

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
    let extras = StatusExtras {
        policy_denial: conclusion.policy_denial.as_deref(),
        kubernetes_access: conclusion.kubernetes_access,
    };
    steps.extend(status_write(
        facts,
        &outcome,
        conclusion.spiffe_id.clone(),
        conclusion.lifecycle_conditions.clone(),
        conclusion.revocation.clone(),
        extras,
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
    let grace = time::Duration::minutes(2);
    let certs: Vec<_> = unexpired(Some(status), None, now)
        .into_iter()
        .filter(|(serial, not_after)| {
            !serial.eq_ignore_ascii_case(current) && *not_after > now + grace
        })
        .collect();
    let key = identity_key(facts);
    let mut revoked = revocations(&certs, Reason::PrivilegeWithdrawn, &key);
    // Pod certificates carry the grants current when they were issued: those carrying a
    // withdrawn one go too (their pods are without a valid certificate until the kubelet's
    // next refresh).
    revoked.extend(pod_revocations(
        Some(status),
        Some(&withdrawn),
        Reason::PrivilegeWithdrawn,
        &key,
        now,
        grace,
    ));
    if revoked.is_empty() {
        return None;
    }
    let serials: Vec<String> = revoked.iter().map(|r| r.serial_hex.clone()).collect();
    let note = format!(
        "{} no longer granted: revoked {}",
        withdrawn.join(", "),
        serial_list(&serials)
    );
    Some(Step::Revoke(Box::new(Revoke {
        revocations: Ok(revoked),
        on_failure: OnRevokeFailure::FailReconcile,
        if_fresh: vec![Step::Publish(PlannedEvent::normal("GrantWithdrawn", note))],
        if_none_fresh: vec![],
    })))
}

/// What the status shows of the identity's policy.
#[derive(Clone, Copy, Debug)]
pub(super) struct StatusExtras<'a> {
    /// What the policy refuses: `Ready` is false with reason `PolicyDenied`, whatever the
    /// certificate.
    pub policy_denial: Option<&'a str>,
    /// Whether the identity has Kubernetes access (the status shows its credential only then).
    pub kubernetes_access: bool,
}

impl StatusExtras<'_> {
    /// No refusal; Kubernetes access as the spec asks (for plans that issue nothing).
    pub fn of(mi: &MachineIdentity) -> Self {
        StatusExtras {
            policy_denial: None,
            kubernetes_access: mi.wants_kubernetes_access(),
        }
    }
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
    extras: StatusExtras<'_>,
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
    if !extras.kubernetes_access {
        status.kubernetes_access = None;
    }
    if let Some(denial) = extras.policy_denial {
        deny_ready(&mut status, mi.status.as_ref(), denial, facts.now);
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
fn renewal_of(outcome: &Outcome) -> Option<OffsetDateTime> {
    match outcome {
        Outcome::Valid { renew_at, .. } => Some(*renew_at),
        Outcome::Retrying {
            current: Some((_, renew_at)),
            ..
        } => Some(*renew_at),
        _ => None,
    }
}

/// The Kubernetes access a kept certificate (serial `serial_hex`) comes with, as the status
/// shows it (none unless the identity has Kubernetes access, `access`).
pub(super) fn kubernetes_access(
    mi: &MachineIdentity,
    access: bool,
    kube_client_not_after: Option<String>,
    serial_hex: &str,
) -> Option<KubernetesAccessStatus> {
    kube_client_not_after
        .filter(|_| access)
        .map(|not_after| KubernetesAccessStatus {
            user: kube_user(
                mi.metadata.namespace.as_deref().unwrap_or_default(),
                mi.metadata.name.as_deref().unwrap_or_default(),
                serial_hex,
            ),
            client_certificate_not_after: not_after,
        })
}

/// Whether the identity's Ready condition is false for `reason` (a problem already reported).
pub(super) fn is_blocked_on(mi: &MachineIdentity, reason: &str) -> bool {
    mi.status
        .as_ref()
        .and_then(|s| nhi_api::condition::find_condition(&s.conditions, READY))
        .is_some_and(|c| !c.is_true() && c.reason == reason)
}

/// `namespace/name` of the identity (in revocations and logs).
pub(super) fn identity_key(facts: &Facts) -> String {
    format!(
        "{}/{}",
        facts.namespace,
        facts.identity.metadata.name.as_deref().unwrap_or_default()
    )
}

pub(super) fn serial_list(serials: &[String]) -> String {
    match serials.is_empty() {
        true => "no unexpired certificate".to_string(),
        false => format!("serial {}", serials.join(", ")),
    }
}
