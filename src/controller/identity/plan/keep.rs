//! The plan for an identity that stays: answer a revoke request, resolve its grants, judge the
//! certificate in its Secret, and keep it, re-issue it, or say why it cannot be issued.

use time::OffsetDateTime;

use super::conclude::{StatusExtras, conclude, kubernetes_access, secret_conflict, status_write};
use super::governance::answer_revoke_request;
use super::steps::{
    Conclusion, CredentialPlan, Failure, Issuance, PlannedEvent, RenewalInputs, Requeue, Step,
    requeue_at,
};
use crate::controller::identity::settings::Settings;
use kube::ResourceExt;

use crate::controller::identity::facts::{Facts, SecretRead};
use crate::controller::identity_secret::{Ownership, existing_material, ownership};
use crate::controller::reissue_pacing::slot_deferral;
use crate::controller::status::Outcome;
use crate::controller::status::READY;
use nhi_api::condition::find_condition;
use nhi_api::{Condition, MachineIdentity};
use nhi_core::entitle::resolve::{EffectiveGrants, effective_grants};
use nhi_core::issue::assess::{
    Expectations, KnownCertificate, ReissueReason, Verdict, assess, assess_known,
};
use nhi_core::issue::inputs::{ResolvedIdentity, SpecError, claims_extension, resolve_identity};
use nhi_core::lifecycle::verdict::Lifecycle;
use nhi_core::policy::POLICY_DENIED;
use nhi_core::policy::identity::{IdentityAllowance, as_allowed, check_identity};
use nhi_identity::certificate::CertificateInfo;

/// What the identity's Secret holds, as far as the plan needs to know.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Judgement {
    /// A Secret of that name exists and is not ours.
    Foreign,
    /// Ours, or absent: the verdict on its certificate.
    Verdict {
        verdict: Verdict,
        /// The Secret's resourceVersion judged at (None: there is no Secret).
        secret_version: Option<String>,
        /// When the Kubernetes client certificate in it expires, if it holds one.
        kube_client_not_after: Option<String>,
    },
}

/// The plan for an identity whose lifecycle keeps it issued.
pub(super) fn keep(
    facts: &Facts,
    settings: &Settings,
    lifecycle: &Lifecycle,
    conditions: Vec<Condition>,
) -> Vec<Step> {
    let mi = &facts.identity;
    let answer = answer_revoke_request(facts);
    let mut steps = answer.steps;
    // What is issued is the identity as its namespace's policy allows it.
    let allowance = check_identity(&mi.spec, &facts.policy);
    if !allowance.issuable {
        steps.extend(policy_blocked(facts, &allowance, conditions, answer.status));
        return steps;
    }
    let allowed = as_allowed(mi, &allowance, settings.issuance.default_ttl);
    let grants = effective_grants(
        &mi.name_any(),
        &facts.uid,
        mi.labels(),
        &facts.entitlements,
        facts.now,
    );
    let resolved = match claims_extension(&allowed, &grants)
        .and_then(|ext| resolve_identity(&allowed, &settings.issuance, ext, grants.not_after_cap))
    {
        Ok(r) => r,
        Err(e) => {
            steps.extend(invalid_spec(facts, &e, conditions, answer.status));
            return steps;
        }
    };
    let conclusion = Conclusion {
        grants: grants.grants.iter().cloned().collect(),
        grants_change_at: grants.next_change,
        lifecycle_check_at: lifecycle.next_check,
        spiffe_id: Some(resolved.request.spiffe_id.clone()),
        lifecycle_conditions: conditions,
        revocation: answer.status,
        policy_denial: allowance.denial(),
        kubernetes_access: allowed.wants_kubernetes_access(),
    };
    steps.extend(policy_denied_event(mi, conclusion.policy_denial.as_deref()));
    let expect = expectations(facts, &resolved, &grants, conclusion.kubernetes_access);
    let (judgement, memory) = match judge_secret(facts, &expect, answer.revoked_now) {
        Ok(j) => j,
        Err(failure) => {
            steps.push(Step::Fail(failure));
            return steps;
        }
    };
    steps.extend(memory);
    let judgement = without_revoked(judgement, &revoked_serials(facts), answer.revoked_now);
    let (judgement, paced) = deferred_for_rotation(facts, settings, judgement);
    let issuing = Issuing {
        resolved: &resolved,
        not_after_cap: grants.not_after_cap,
        paced,
    };
    steps.extend(act_on(facts, settings, judgement, issuing, conclusion));
    steps
}

/// What an issuance is made of, besides the judgement.
struct Issuing<'a> {
    resolved: &'a ResolvedIdentity,
    not_after_cap: Option<OffsetDateTime>,
    paced: Option<CertificateInfo>,
}

/// Keeps the certificate, issues a new one, or reports the Secret taken.
fn act_on(
    facts: &Facts,
    settings: &Settings,
    judgement: Judgement,
    issuing: Issuing<'_>,
    conclusion: Conclusion,
) -> Vec<Step> {
    let mi = &facts.identity;
    let access = conclusion.kubernetes_access;
    match judgement {
        Judgement::Foreign => {
            let (mut steps, outcome, requeue) = secret_conflict(facts);
            steps.extend(conclude(facts, &conclusion, outcome, requeue));
            steps
        }
        Judgement::Verdict {
            verdict: Verdict::Current { info, renew_at },
            kube_client_not_after,
            ..
        } => {
            let credential = kubernetes_access(mi, access, kube_client_not_after, &info.serial_hex);
            let outcome = Outcome::Valid {
                info,
                renew_at,
                grants: conclusion.grants.clone(),
                kubernetes_access: credential,
            };
            conclude(facts, &conclusion, outcome, requeue_at(renew_at, facts.now))
        }
        Judgement::Verdict {
            verdict:
                Verdict::Reissue {
                    reason,
                    still_valid,
                },
            secret_version,
            kube_client_not_after,
        } => {
            let first = reason == ReissueReason::Missing
                && mi
                    .status
                    .as_ref()
                    .and_then(|s| s.serial_number.as_ref())
                    .is_none();
            let resolved = issuing.resolved;
            vec![Step::Issue(Box::new(Issuance {
                request: resolved.request.clone(),
                key_algorithm: resolved.key_algorithm,
                inputs_hash: resolved.inputs_hash.clone(),
                reason,
                first,
                still_valid,
                credential: credential_plan(access, settings),
                secret_version,
                paced: issuing.paced,
                kube_client_not_after,
                renewal: RenewalInputs {
                    fraction: resolved.renewal_fraction,
                    identity_key: resolved.identity_key.clone(),
                    not_after_cap: issuing.not_after_cap,
                },
                conclusion,
            }))]
        }
    }
}

/// A spec the schema could not catch: said in an Event and the status; the identity waits for
/// a change.
fn invalid_spec(
    facts: &Facts,
    e: &SpecError,
    conditions: Vec<Condition>,
    revocation: Option<nhi_api::RevocationStatus>,
) -> Vec<Step> {
    let outcome = Outcome::Blocked {
        reason: e.reason().into(),
        message: e.to_string(),
    };
    let mut steps = vec![Step::Publish(PlannedEvent::warning(
        e.reason(),
        e.to_string(),
    ))];
    let extras = StatusExtras::of(&facts.identity);
    steps.extend(status_write(
        facts, &outcome, None, conditions, revocation, extras,
    ));
    steps.push(Step::Finish(Requeue::AwaitChange));
    steps
}

/// An identity of which nothing may be issued (its key algorithm is refused, or its policy
/// cannot be read): said once, blocked until the spec or the policy changes.
fn policy_blocked(
    facts: &Facts,
    allowance: &IdentityAllowance,
    conditions: Vec<Condition>,
    revocation: Option<nhi_api::RevocationStatus>,
) -> Vec<Step> {
    let message = allowance.denial().unwrap_or_default();
    let mut steps = policy_denied_event(&facts.identity, Some(&message));
    let outcome = Outcome::Blocked {
        reason: POLICY_DENIED.into(),
        message,
    };
    let extras = StatusExtras::of(&facts.identity);
    steps.extend(status_write(
        facts, &outcome, None, conditions, revocation, extras,
    ));
    steps.push(Step::Finish(Requeue::AwaitChange));
    steps
}

/// The Warning Event and failure count of a policy refusal, when the status does not show this
/// very refusal yet.
fn policy_denied_event(mi: &MachineIdentity, denial: Option<&str>) -> Vec<Step> {
    let Some(message) = denial else {
        return vec![];
    };
    let shown = mi
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, READY))
        .is_some_and(|c| c.reason == POLICY_DENIED && c.message.starts_with(message));
    match shown {
        true => vec![],
        false => vec![
            Step::Publish(PlannedEvent::warning(POLICY_DENIED, message.to_string())),
            Step::CountFailure(POLICY_DENIED.into()),
        ],
    }
}

/// The Kubernetes credential, for an identity that has Kubernetes access (`wanted`) or not.
fn credential_plan(wanted: bool, settings: &Settings) -> CredentialPlan {
    match (wanted, settings.kubernetes_access) {
        (false, _) => CredentialPlan::NotWanted,
        (true, false) => CredentialPlan::Disabled,
        (true, true) => CredentialPlan::Obtain,
    }
}

/// What the certificate in the Secret is compared with.
pub(super) fn expectations<'a>(
    facts: &'a Facts,
    resolved: &'a ResolvedIdentity,
    grants: &EffectiveGrants,
    kubernetes_access: bool,
) -> Expectations<'a> {
    Expectations {
        ca_public_key_der: facts.ca.public_key_der(),
        retiring_ca_public_key_der: facts.ca.retiring().map(|r| r.public_key_der()),
        spiffe_id: Some(&resolved.request.spiffe_id),
        inputs_hash: &resolved.inputs_hash,
        renewal_fraction: resolved.renewal_fraction,
        identity_key: &resolved.identity_key,
        not_after_cap: grants.not_after_cap,
        needs_kubeconfig: kubernetes_access,
        now: facts.now,
    }
}

/// Judges the identity's Secret: from what the operator knows of it at the indexed version when
/// it can (and no revoke request is `answering` now), else from the Secret read; with what to
/// remember of a Secret read.
fn judge_secret(
    facts: &Facts,
    expect: &Expectations<'_>,
    answering: bool,
) -> Result<(Judgement, Vec<Step>), Failure> {
    let secret = &facts.secret;
    if let (Some(seen), Some(known), false) =
        (secret.indexed_ours(&facts.uid), &secret.known, answering)
    {
        let judgement = Judgement::Verdict {
            verdict: assess_known(known, expect),
            secret_version: Some(seen.resource_version.clone()),
            kube_client_not_after: known.kube_client_not_after.clone(),
        };
        return Ok((judgement, vec![]));
    }
    let missing = Judgement::Verdict {
        verdict: Verdict::Reissue {
            reason: ReissueReason::Missing,
            still_valid: None,
        },
        secret_version: None,
        kube_client_not_after: None,
    };
    // Not among our labelled Secrets and nothing written by us: absent (issuance creates, never
    // applies, so a Secret that exists after all is not overwritten).
    if secret.known_absent() {
        return Ok((missing, vec![]));
    }
    let read = match &secret.read {
        SecretRead::Read(s) => s.as_deref(),
        SecretRead::Unreadable(e) => return Err(Failure::SecretUnreadable(e.clone())),
        SecretRead::NotRead => None,
    };
    match ownership(read.map(|s| &s.metadata), &facts.identity) {
        Ownership::Foreign => Ok((Judgement::Foreign, vec![])),
        Ownership::Absent => Ok((missing, vec![Step::ForgetCertificate])),
        Ownership::Ours => {
            let Some(read) = read else {
                return Err(Failure::SecretAppeared);
            };
            let verdict = assess(&existing_material(read), expect);
            let kube_client_not_after = read
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(nhi_core::labels::KUBE_CLIENT_NOT_AFTER))
                .cloned();
            let memory = match &verdict {
                Verdict::Current { info, .. } => Step::RememberCertificate {
                    version: read.metadata.resource_version.clone(),
                    certificate: KnownCertificate::new(
                        info.clone(),
                        expect.inputs_hash,
                        expect.ca_public_key_der,
                    )
                    .with_kube_client_not_after(kube_client_not_after.clone()),
                },
                Verdict::Reissue { .. } => Step::ForgetCertificate,
            };
            let judgement = Judgement::Verdict {
                verdict,
                secret_version: read.metadata.resource_version.clone(),
                kube_client_not_after,
            };
            Ok((judgement, vec![memory]))
        }
    }
}

/// The serials this operator revoked for the identity: never kept, even when an earlier attempt
/// to replace them failed after the revocation.
fn revoked_serials(facts: &Facts) -> Vec<String> {
    let mut revoked: Vec<String> = facts
        .last_revocation
        .as_ref()
        .map(|r| r.serial_numbers.clone())
        .unwrap_or_default();
    if let Some(r) = facts
        .identity
        .status
        .as_ref()
        .and_then(|s| s.last_revocation.as_ref())
    {
        revoked.extend(r.serial_numbers.iter().cloned());
    }
    revoked
}

/// The judgement with certificates this operator revoked (or revokes `now`) treated as gone: one
/// in the Secret is re-issued (`Revoked`), and none is kept as "still valid" meanwhile.
pub(super) fn without_revoked(judgement: Judgement, revoked: &[String], now: bool) -> Judgement {
    let is_revoked = |serial: &str| now || revoked.iter().any(|r| r.eq_ignore_ascii_case(serial));
    let Judgement::Verdict {
        verdict,
        secret_version,
        kube_client_not_after,
    } = judgement
    else {
        return judgement;
    };
    let verdict = match verdict {
        Verdict::Current { info, .. } if is_revoked(&info.serial_hex) => Verdict::Reissue {
            reason: ReissueReason::Revoked,
            still_valid: None,
        },
        Verdict::Reissue {
            reason,
            still_valid: Some((info, _)),
        } if is_revoked(&info.serial_hex) => Verdict::Reissue {
            reason,
            still_valid: None,
        },
        other => other,
    };
    Judgement::Verdict {
        verdict,
        secret_version,
        kube_client_not_after,
    }
}

/// A certificate of the CA retiring in a rotation is kept (it is still trusted) until the
/// identity's slot comes: re-issues are spread. Once it has, the re-issue is paced by the rate
/// (the certificate to keep meanwhile is the second value), unless the certificate must be
/// renewed now anyway.
pub(super) fn deferred_for_rotation(
    facts: &Facts,
    settings: &Settings,
    judgement: Judgement,
) -> (Judgement, Option<CertificateInfo>) {
    let Judgement::Verdict {
        verdict:
            Verdict::Reissue {
                reason: ReissueReason::WrongIssuer,
                still_valid: Some((info, renew_at)),
            },
        secret_version,
        kube_client_not_after,
    } = judgement
    else {
        return (judgement, None);
    };
    let now: OffsetDateTime = facts.now;
    let slot = slot_deferral(
        &facts.uid,
        facts.ca_switched_at,
        settings.reissue_spread,
        renew_at,
        now,
    );
    let (verdict, paced) = match slot {
        Some(at) => (Verdict::Current { info, renew_at: at }, None),
        None => (
            // A certificate about to end is never held back by the rate.
            Verdict::Reissue {
                reason: ReissueReason::WrongIssuer,
                still_valid: Some((info.clone(), renew_at)),
            },
            (renew_at > now).then_some(info),
        ),
    };
    let judgement = Judgement::Verdict {
        verdict,
        secret_version,
        kube_client_not_after,
    };
    (judgement, paced)
}
