//! [`settle`]: what became of an issuance, turned into the rest of the plan.

use super::conclude::{conclude, is_blocked_on, kubernetes_access, secret_conflict};
use super::steps::{
    Conclusion, CredentialFailure, Failure, Issuance, IssueReport, PlannedEvent, Requeue, Step,
    requeue_at,
};
use crate::controller::identity::facts::Facts;
use crate::controller::status::Outcome;
use nhi_core::issue::assess::{
    Expectations, KnownCertificate, ReissueReason, renew_before_client_expiry, renewal_time,
};
use nhi_core::issue::kube_client::access_disabled;
use nhi_identity::certificate::CertificateInfo;
use nhi_identity::timestamp::rfc3339;

/// How long to wait before asking for a Kubernetes client certificate again after a failure.
const KUBE_ACCESS_RETRY: std::time::Duration = std::time::Duration::from_secs(30);
/// How long to wait before signing again after a failure.
const SIGNING_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// The rest of the plan after an issuance, from what became of it.
pub fn settle(facts: &Facts, issuance: &Issuance, report: IssueReport) -> Vec<Step> {
    let conclusion = &issuance.conclusion;
    match report {
        IssueReport::Paced { kept, until } => {
            let access = kubernetes_access(
                &facts.identity,
                conclusion.kubernetes_access,
                issuance.kube_client_not_after.clone(),
                &kept.serial_hex,
            );
            let outcome = Outcome::Valid {
                info: kept,
                renew_at: until,
                grants: conclusion.grants.clone(),
                kubernetes_access: access,
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
        IssueReport::KubeAccessDisabled => kube_access_disabled(facts, conclusion),
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

/// The identity wants Kubernetes access and it is disabled: said once, blocked until something
/// changes.
fn kube_access_disabled(facts: &Facts, conclusion: &Conclusion) -> Vec<Step> {
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
    credential: Option<nhi_api::KubernetesAccessStatus>,
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
        spiffe_id: None,
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
    credential: Option<&nhi_api::KubernetesAccessStatus>,
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
