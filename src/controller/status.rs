//! Builds a MachineIdentity's status from the outcome of a reconcile (pure).

use time::OffsetDateTime;

use nhi_api::RevocationStatus;
use nhi_api::condition::{Condition, merge_conditions, without_transition_times};
use nhi_api::{KubernetesAccessStatus, MachineIdentityStatus};
use nhi_core::lifecycle::certificates::previous_after;
use nhi_core::policy::POLICY_DENIED;
use nhi_identity::certificate::CertificateInfo;
use nhi_identity::timestamp::rfc3339;

/// Condition type: the identity holds a valid certificate.
pub const READY: &str = "Ready";

/// The condition shown while the last revoke request stands refused (`status.refusedRevocation`).
pub const REVOCATION_REFUSED: &str = "RevocationRefused";
/// Condition type: an issuance is in progress (being retried after a failure).
pub const ISSUING: &str = "Issuing";
/// Ready reason when the Secret holds a valid, current certificate.
pub const CERTIFICATE_VALID: &str = "CertificateValid";
/// Issuing reason when nothing is pending.
pub const UP_TO_DATE: &str = "UpToDate";

/// What a reconcile found or did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The Secret holds a valid certificate (found or just issued).
    Valid {
        info: CertificateInfo,
        renew_at: OffsetDateTime,
        /// The grants the certificate carries.
        grants: Vec<String>,
        /// The Kubernetes client credential written with the certificate, if one was just
        /// issued (otherwise the previous status stands).
        kubernetes_access: Option<KubernetesAccessStatus>,
    },
    /// The identity cannot be issued until something changes (`reason` is stable CamelCase).
    Blocked { reason: String, message: String },
    /// Issuance failed and will be retried; `current` is the still-valid certificate, if any.
    Retrying {
        reason: String,
        message: String,
        current: Option<(CertificateInfo, OffsetDateTime)>,
    },
}

/// The status after `outcome`, keeping transition times of unchanged conditions and the previous
/// certificate facts when no certificate was looked at.
pub fn desired_status(
    previous: Option<&MachineIdentityStatus>,
    outcome: &Outcome,
    spiffe_id: Option<String>,
    generation: Option<i64>,
    now: OffsetDateTime,
) -> MachineIdentityStatus {
    let prev = previous.cloned().unwrap_or_default();
    let mut status = MachineIdentityStatus {
        conditions: vec![],
        observed_generation: generation,
        spiffe_id: spiffe_id.or(prev.spiffe_id.clone()),
        // Written by the signer and the delegation endpoint, never by this controller: a copy
        // from a lagging cache would set them back.
        pod_certificates: None,
        delegation: None,
        ..prev.clone()
    };
    match outcome {
        Outcome::Valid {
            info,
            renew_at,
            grants,
            kubernetes_access,
        } => {
            set_certificate(&mut status, &prev, info, *renew_at, now);
            status.entitlements = grants.clone();
            if kubernetes_access.is_some() {
                status.kubernetes_access = kubernetes_access.clone().map(Box::new);
            }
        }
        Outcome::Retrying {
            current: Some((info, renew_at)),
            ..
        } => set_certificate(&mut status, &prev, info, *renew_at, now),
        _ => {}
    }
    let conditions = outcome_conditions(outcome);
    status.conditions = merge_conditions(&prev.conditions, conditions, generation, &rfc3339(now));
    status
}

/// The status showing `info` as the current certificate, renewing at `renew_at`; the one it
/// replaces joins the earlier ones.
fn set_certificate(
    status: &mut MachineIdentityStatus,
    prev: &MachineIdentityStatus,
    info: &CertificateInfo,
    renew_at: OffsetDateTime,
    now: OffsetDateTime,
) {
    status.previous_certificates = previous_after(prev, &info.serial_hex, now);
    status.serial_number = Some(info.serial_hex.clone());
    status.thumbprint_sha256 = Some(info.thumbprint_sha256.clone());
    status.not_before = Some(rfc3339(info.not_before).into());
    status.not_after = Some(rfc3339(info.not_after).into());
    status.renewal_time = Some(rfc3339(renew_at).into());
}

/// The `Ready` and `Issuing` conditions after `outcome`.
fn outcome_conditions(outcome: &Outcome) -> Vec<Condition> {
    let valid = |info: &CertificateInfo, renew_at: OffsetDateTime| {
        Condition::new(
            READY,
            true,
            CERTIFICATE_VALID,
            valid_message(info, renew_at),
        )
    };
    match outcome {
        Outcome::Valid { info, renew_at, .. } => vec![
            valid(info, *renew_at),
            Condition::new(ISSUING, false, UP_TO_DATE, "the certificate is current"),
        ],
        Outcome::Blocked { reason, message } => vec![
            Condition::new(READY, false, reason, message.clone()),
            Condition::new(ISSUING, false, reason, message.clone()),
        ],
        Outcome::Retrying {
            reason,
            message,
            current,
        } => {
            let ready = match current {
                Some((info, renew_at)) => valid(info, *renew_at),
                None => Condition::new(READY, false, reason, message.clone()),
            };
            vec![
                ready,
                Condition::new(ISSUING, true, reason, message.clone()),
            ]
        }
    }
}

/// Makes `Ready` false with reason `PolicyDenied`: the spec claims what its namespace's policy
/// refuses (the certificate, if any, is valid without it; the message says both). The
/// transition time is kept while the previous `Ready` was already this refusal.
pub fn deny_ready(
    status: &mut MachineIdentityStatus,
    previous: Option<&MachineIdentityStatus>,
    denial: &str,
    now: OffsetDateTime,
) {
    let Some(ready) = status.conditions.iter_mut().find(|c| c.type_ == READY) else {
        return;
    };
    let certificate = match ready.is_true() {
        true => format!(" ({})", ready.message),
        false => String::new(),
    };
    let was_denied = previous
        .and_then(|p| nhi_api::condition::find_condition(&p.conditions, READY))
        .filter(|c| c.reason == POLICY_DENIED && !c.is_true());
    let mut denied = Condition::new(
        READY,
        false,
        POLICY_DENIED,
        format!("{denial}{certificate}"),
    );
    denied.observed_generation = ready.observed_generation;
    denied.last_transition_time = match was_denied {
        Some(c) => c.last_transition_time.clone(),
        None => rfc3339(now).into(),
    };
    *ready = denied;
}

/// Adds the lifecycle conditions (`WorkloadFound`, `ReviewDue`) and the last revocation, if one
/// was just made, to a status built by [`desired_status`].
pub fn with_lifecycle(
    mut status: MachineIdentityStatus,
    previous: Option<&MachineIdentityStatus>,
    conditions: Vec<Condition>,
    revocation: Option<RevocationStatus>,
    now: OffsetDateTime,
) -> MachineIdentityStatus {
    let prev = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    let generation = status.observed_generation;
    // A revoke request accepted since supersedes the refused one.
    if let (Some(refused), Some(r)) = (&status.refused_revocation, &revocation)
        && r.request.is_some()
        && r.request.as_ref() != Some(&refused.request)
    {
        status.refused_revocation = None;
    }
    let mut conditions = conditions;
    if let Some(refused) = &status.refused_revocation {
        conditions.push(refused_condition(refused));
    }
    status.conditions.extend(merge_conditions(
        prev,
        conditions,
        generation,
        &rfc3339(now),
    ));
    if revocation.is_some() {
        status.last_revocation = revocation.map(Box::new);
    }
    status
}

/// The condition saying a revoke request stands refused.
pub fn refused_condition(refused: &nhi_api::RefusedRevocation) -> Condition {
    Condition::new(
        REVOCATION_REFUSED,
        true,
        &refused.reason,
        format!(
            "revoke request {} refused: {}",
            refused.request, refused.message
        ),
    )
}

fn valid_message(info: &CertificateInfo, renew_at: OffsetDateTime) -> String {
    format!(
        "certificate {} valid until {}, renews at {}",
        info.serial_hex,
        rfc3339(info.not_after),
        rfc3339(renew_at)
    )
}

/// Whether two statuses differ in anything but condition transition times (to skip no-op writes).
pub fn status_changed(old: Option<&MachineIdentityStatus>, new: &MachineIdentityStatus) -> bool {
    old.map(comparable) != Some(comparable(new))
}

/// The status without condition transition times, nor the parts other writers own: what decides
/// whether a write is needed. A
/// stale cache yields the same status with fresh transition times; that needs no write.
pub fn comparable(status: &MachineIdentityStatus) -> MachineIdentityStatus {
    MachineIdentityStatus {
        conditions: without_transition_times(&status.conditions),
        // Other writers' parts (see `desired_status`).
        pod_certificates: None,
        delegation: None,
        ..status.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn info() -> CertificateInfo {
        let nb = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        CertificateInfo {
            serial_hex: "4a".into(),
            thumbprint_sha256: "ab".into(),
            not_before: nb,
            not_after: nb + Duration::hours(1),
        }
    }

    #[test]
    fn valid_outcome_is_ready_with_certificate_facts() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_100).unwrap();
        let renew = now + Duration::minutes(30);
        let s = desired_status(
            None,
            &Outcome::Valid {
                info: info(),
                renew_at: renew,
                grants: vec!["payments.process".into()],
                kubernetes_access: None,
            },
            Some("spiffe://x".into()),
            Some(2),
            now,
        );
        assert!(s.conditions[0].is_true() && s.conditions[0].type_ == READY);
        assert!(!s.conditions[1].is_true());
        assert_eq!(s.serial_number.as_deref(), Some("4a"));
        assert_eq!(s.not_after.as_deref(), Some("2027-01-15T09:00:00Z"));
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.entitlements, vec!["payments.process"]);
        // Re-deriving at a later time changes nothing: no status churn, no extra writes.
        let again = desired_status(
            Some(&s),
            &Outcome::Valid {
                info: info(),
                renew_at: renew,
                grants: vec!["payments.process".into()],
                kubernetes_access: None,
            },
            Some("spiffe://x".into()),
            Some(2),
            now + Duration::minutes(5),
        );
        assert!(!status_changed(Some(&s), &again));
        // A stale cache (no status yet) gives fresh transition times: still the same status.
        let from_stale = desired_status(
            None,
            &Outcome::Valid {
                info: info(),
                renew_at: renew,
                grants: vec!["payments.process".into()],
                kubernetes_access: None,
            },
            Some("spiffe://x".into()),
            Some(2),
            now + Duration::minutes(5),
        );
        assert_eq!(comparable(&from_stale), comparable(&s));
        assert!(status_changed(None, &s));
    }

    #[test]
    fn the_parts_other_writers_own_are_never_written_back_nor_make_a_write() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_100).unwrap();
        let out = Outcome::Retrying {
            reason: "CAExpiresTooSoon".into(),
            message: "m".into(),
            current: Some((info(), now)),
        };
        let written = desired_status(None, &out, None, Some(1), now);
        let mut observed = written.clone();
        observed.delegation = Some(Box::new(nhi_api::DelegationStatus {
            delegated: 3,
            ..Default::default()
        }));
        observed.pod_certificates = Some(Default::default());
        let next = desired_status(Some(&observed), &out, None, Some(1), now);
        assert_eq!(
            next.delegation, None,
            "a stale copy would set the count back"
        );
        assert_eq!(next.pod_certificates, None);
        assert!(!status_changed(Some(&observed), &next));
    }

    #[test]
    fn retrying_with_a_valid_certificate_stays_ready() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_100).unwrap();
        let out = Outcome::Retrying {
            reason: "CAExpiresTooSoon".into(),
            message: "m".into(),
            current: Some((info(), now)),
        };
        let s = desired_status(None, &out, None, Some(1), now);
        assert!(s.conditions[0].is_true());
        assert!(s.conditions[1].is_true());
        assert_eq!(s.conditions[1].reason, "CAExpiresTooSoon");
    }

    #[test]
    fn blocked_is_not_ready_and_keeps_previous_certificate_facts() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_100).unwrap();
        let prev = desired_status(
            None,
            &Outcome::Valid {
                info: info(),
                renew_at: now,
                grants: vec![],
                kubernetes_access: None,
            },
            None,
            Some(1),
            now,
        );
        let s = desired_status(
            Some(&prev),
            &Outcome::Blocked {
                reason: "SecretConflict".into(),
                message: "taken".into(),
            },
            None,
            Some(2),
            now,
        );
        assert!(!s.conditions[0].is_true());
        assert_eq!(s.conditions[0].reason, "SecretConflict");
        assert_eq!(s.serial_number.as_deref(), Some("4a"));
    }
}
