//! The MachineIdentity reconciler: read the identity and its Secret, decide, write, report.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::context::Context;
use super::error::ReconcileError;
use super::identity_secret::{Ownership, build_identity_secret, existing_material, ownership};
use super::kube_access::obtain_kube_credential;
use super::lifecycle;
use super::status::{Outcome, comparable, desired_status, status_changed, with_lifecycle};
use crate::api::KubernetesAccessStatus;
use crate::api::MachineIdentity;
use crate::entitle::extension::{self, IdentityClaims};
use crate::entitle::resolve::{EffectiveGrants, EntitlementFacts, effective_grants};
use crate::issue::assess::{
    Expectations, KnownCertificate, ReissueReason, Verdict, assess, assess_known,
    renew_before_client_expiry, renewal_time,
};
use crate::issue::inputs::{ResolvedIdentity, SpecError, resolve_identity};
use crate::issue::keys::generate_key;
use crate::issue::kube_client::{access_disabled, kube_user};
use crate::issue::leaf::{CustomExtensions, IssueError, IssuedCertificate, issue_leaf};
use crate::labels::{FIELD_MANAGER, REVOKE_REQUESTED};
use crate::lifecycle::verdict::{
    LifecycleAction, REVIEW_OVERDUE, carry_while_starting, lifecycle_conditions, transition_events,
};

/// How long to wait before asking for a Kubernetes client certificate again after a failure.
const KUBE_ACCESS_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// How long to wait before looking again at an identity whose Secret name is taken.
const CONFLICT_RECHECK: std::time::Duration = std::time::Duration::from_secs(60);

/// Reconciles one MachineIdentity.
pub async fn reconcile(
    mi: Arc<MachineIdentity>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let _timer = ctx.metrics.time_reconcile();
    let _counted = ctx.metrics.count_reconcile("machineidentity");
    let namespace = mi.namespace().ok_or(ReconcileError::NotNamespaced)?;
    let name = mi.name_any();
    if mi.metadata.deletion_timestamp.is_some() {
        ctx.metrics.forget(&namespace, &name);
        return lifecycle::finalize(&mi, &ctx).await;
    }
    if !ctx.health.entitlements_synced.load(Ordering::Relaxed) {
        // Grants are resolved from the Entitlement cache: issuing before it is complete would
        // issue certificates without grants, then issue them again.
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    // Every identity that may hold a certificate carries the finalizer that revokes it.
    lifecycle::ensure_finalizer(&mi, &ctx).await?;
    let now = OffsetDateTime::now_utc();
    let verdict = lifecycle::assess_lifecycle(&mi, &ctx, now);
    let lifecycle_conditions = carry_while_starting(
        lifecycle_conditions(&verdict, mi.spec.workload_ref.as_ref()),
        &verdict,
        mi.status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default(),
    );
    for e in transition_events(
        mi.status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default(),
        &lifecycle_conditions,
    ) {
        let type_ = if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(&mi, type_, &e.reason, e.message);
    }
    let extras = |revocation| Extras {
        conditions: lifecycle_conditions.clone(),
        revocation,
    };
    // The Secret's trust bundle follows the CA's (a rotation publishes the next root in it),
    // whatever else happens to the identity, unless it is going away.
    let refreshed = match verdict.action {
        LifecycleAction::Retire(_) => None,
        _ => super::ca_rollout::refresh_trust_bundle(&mi, &ctx).await?,
    };
    match verdict.action {
        LifecycleAction::Retire(cause) => {
            return lifecycle::retire(&mi, &ctx, &verdict, cause).await;
        }
        LifecycleAction::Suspend => {
            // A pending revoke request is answered by the suspension's revocation as well.
            let mut revocation = lifecycle::suspend(&mi, &ctx, now).await?;
            if let (Some(r), Some(request)) =
                (revocation.as_mut(), mi.annotations().get(REVOKE_REQUESTED))
            {
                r.request = Some(request.clone());
            }
            let revocation = match revocation {
                Some(r) => Some(r),
                None => lifecycle::answer_revoke_request(&mi, &ctx, now)
                    .await?
                    .map(|a| a.status),
            };
            let outcome = Outcome::Blocked {
                reason: REVIEW_OVERDUE.into(),
                message: format!(
                    "the review date {} has passed: the identity is suspended (certificates revoked, key removed); move reviewBy forward to resume",
                    mi.spec.review_by.as_deref().unwrap_or_default()
                ),
            };
            write_status(&mi, &ctx, &outcome, None, now, extras(revocation)).await?;
            // A workload's grace period can still end while suspended.
            return Ok(verdict
                .next_check
                .map_or_else(Action::await_change, |at| requeue_at(at, now)));
        }
        LifecycleAction::Keep => {}
    }
    let answer = lifecycle::answer_revoke_request(&mi, &ctx, now).await?;
    let revoked_now = answer.as_ref().is_some_and(|a| a.revoked_now);
    let revoked_on_request = answer.map(|a| a.status);
    let ca = ctx.ca();
    let entitlements = namespace_entitlements(&ctx, &namespace);
    let grants = effective_grants(&name, mi.labels(), &entitlements, now);
    let resolved = match claims_extension(&mi, &grants)
        .and_then(|ext| resolve_identity(&mi, &ctx.policy, ext, grants.not_after_cap))
    {
        Ok(r) => r,
        Err(e) => {
            let outcome = Outcome::Blocked {
                reason: e.reason().into(),
                message: e.to_string(),
            };
            ctx.warn(&mi, e.reason(), &e.to_string());
            write_status(&mi, &ctx, &outcome, None, now, extras(revoked_on_request)).await?;
            return Ok(Action::await_change());
        }
    };
    let expect = Expectations {
        ca_public_key_der: ca.public_key_der(),
        retiring_ca_public_key_der: ca.retiring().map(|r| r.public_key_der()),
        inputs_hash: &resolved.inputs_hash,
        renewal_fraction: resolved.renewal_fraction,
        identity_key: &resolved.identity_key,
        not_after_cap: grants.not_after_cap,
        needs_kubeconfig: mi.wants_kubernetes_access(),
        now,
    };
    let carried: Vec<String> = grants.grants.iter().cloned().collect();
    let carried_now = carried.clone();
    // A certificate revoked by this operator (on request, or just now) is never kept: a new one
    // is issued, even when an earlier attempt failed after the revocation.
    let mut revoked: Vec<String> = ctx
        .last_revocation(mi.metadata.uid.as_deref().unwrap_or_default())
        .map(|r| r.serial_numbers)
        .unwrap_or_default();
    if let Some(r) = mi.status.as_ref().and_then(|s| s.last_revocation.as_ref()) {
        revoked.extend(r.serial_numbers.iter().cloned());
    }
    let examined = without_revoked(
        examine_secret(&ctx, &mi, &namespace, &expect, refreshed.as_deref()).await?,
        &revoked,
        revoked_now,
    );
    let examined = deferred_for_rotation(&ctx, &mi, examined, now);
    let (outcome, action) = match examined {
        Examined::Foreign => secret_conflict(&mi, &ctx, &namespace),
        Examined::Verdict(Verdict::Current { info, renew_at }, _, kube_not_after) => (
            Outcome::Valid {
                info,
                renew_at,
                grants: carried,
                kubernetes_access: kube_not_after.filter(|_| mi.wants_kubernetes_access()).map(
                    |not_after| KubernetesAccessStatus {
                        user: kube_user(&namespace, &name),
                        client_certificate_not_after: not_after,
                    },
                ),
            },
            requeue_at(renew_at, now),
        ),
        Examined::Verdict(
            Verdict::Reissue {
                reason,
                still_valid,
            },
            judged_version,
            _,
        ) => {
            let (outcome, action) = issue(
                &mi,
                &ctx,
                &resolved,
                &expect,
                judged_version,
                reason,
                still_valid,
                carried,
            )
            .await?;
            (outcome, action)
        }
    };
    // Certificates that carried a grant the identity no longer has are revoked once it holds one
    // without it: they would otherwise keep proving it until they expire.
    if let Some(current) = current_of(&outcome) {
        lifecycle::revoke_withdrawn_grants(&mi, &ctx, &carried_now, &current, now).await?;
    }
    // Come back when the grants change (an Entitlement starts or ends), if that is sooner than
    // the renewal. Retries and rechecks keep their own, shorter, delays.
    let action = match (grants.next_change, renewal_of(&outcome)) {
        (Some(at), Some(renew_at)) if at < renew_at => requeue_at(at, now),
        _ => action,
    };
    // And when the lifecycle changes by time alone (a review window, a workload's grace period),
    // if that is sooner still.
    let action = match (verdict.next_check, renewal_of(&outcome)) {
        (Some(at), Some(renew_at)) if at < renew_at => requeue_at(at, now),
        // No certificate to renew: the lifecycle time replaces waiting for a change, never a
        // retry's own, shorter delay.
        (Some(at), None) if action == Action::await_change() => requeue_at(at, now),
        _ => action,
    };
    if let Outcome::Valid { info, .. } = &outcome {
        ctx.metrics
            .set_expiry(&namespace, &name, info.not_after.unix_timestamp());
    }
    write_status(
        &mi,
        &ctx,
        &outcome,
        Some(resolved.request.spiffe_id.clone()),
        now,
        extras(revoked_on_request),
    )
    .await?;
    Ok(action)
}

/// The outcome when the identity's Secret name is taken by a Secret that is not ours: report it
/// once, leave the Secret alone, look again later.
fn secret_conflict(mi: &MachineIdentity, ctx: &Context, namespace: &str) -> (Outcome, Action) {
    let message = format!(
        "Secret {namespace}/{} exists and is not managed by this identity; it is left untouched",
        mi.spec.secret_name
    );
    if !is_blocked_on(mi, "SecretConflict") {
        ctx.warn(mi, "SecretConflict", &message);
        ctx.metrics.count_failure("SecretConflict");
    }
    let outcome = Outcome::Blocked {
        reason: "SecretConflict".into(),
        message,
    };
    (outcome, Action::requeue(CONFLICT_RECHECK))
}

/// Issues a new certificate and writes the Secret; returns the outcome for status.
#[allow(clippy::too_many_arguments)]
async fn issue(
    mi: &MachineIdentity,
    ctx: &Context,
    resolved: &ResolvedIdentity,
    expect: &Expectations<'_>,
    judged_version: Option<String>,
    reason: ReissueReason,
    still_valid: Option<(crate::issue::leaf::CertificateInfo, OffsetDateTime)>,
    grants: Vec<String>,
) -> Result<(Outcome, Action), ReconcileError> {
    let now = expect.now;
    // One CA for the signature and the bundle written with it, even if a rotation swaps it.
    let ca = ctx.ca();
    let ca_key_der = ca.public_key_der().to_vec();
    let ca_key_der = ca_key_der.as_slice();
    let (request, alg, signer) = (resolved.request.clone(), resolved.key_algorithm, ca.clone());
    let signed: Result<IssuedCertificate, IssueError> = tokio::task::spawn_blocking(move || {
        let key = generate_key(alg).map_err(IssueError::Signing)?;
        issue_leaf(&signer, &request, &key, OffsetDateTime::now_utc())
    })
    .await?;
    let issued = match signed {
        Ok(i) => i,
        Err(e) => {
            let why = match e {
                IssueError::CaExpiresTooSoon { .. } => "CAExpiresTooSoon",
                _ => "IssuanceFailed",
            };
            ctx.warn(mi, why, &e.to_string());
            ctx.metrics.count_failure(why);
            let outcome = Outcome::Retrying {
                reason: why.into(),
                message: e.to_string(),
                current: still_valid,
            };
            return Ok((outcome, Action::requeue(std::time::Duration::from_secs(30))));
        }
    };
    // The Kubernetes client credential is renewed with the certificate, and written with it.
    // A failed credential keeps the current certificate while it is valid; without one, the
    // identity gets its certificate anyway (without a kubeconfig) and the credential is retried.
    let mut kube_failure = None;
    let kube_credential = match (mi.wants_kubernetes_access(), &ctx.kube_endpoint) {
        (false, _) => None,
        (true, None) => {
            let outcome = Outcome::Blocked {
                reason: "KubernetesAccessDisabled".into(),
                message: access_disabled("spec.kubernetesAccess"),
            };
            if !is_blocked_on(mi, "KubernetesAccessDisabled") {
                ctx.warn(
                    mi,
                    "KubernetesAccessDisabled",
                    &access_disabled("spec.kubernetesAccess"),
                );
            }
            return Ok((outcome, Action::await_change()));
        }
        (true, Some(endpoint)) => {
            match obtain_kube_credential(&ctx.client, endpoint, mi, resolved.request.ttl).await {
                Ok(c) => Some(c),
                Err(e) => {
                    ctx.warn(mi, e.reason(), &e.to_string());
                    ctx.metrics.count_failure(e.reason());
                    if still_valid.is_some() {
                        let outcome = Outcome::Retrying {
                            reason: e.reason().into(),
                            message: e.to_string(),
                            current: still_valid,
                        };
                        return Ok((outcome, Action::requeue(KUBE_ACCESS_RETRY)));
                    }
                    kube_failure = Some(e);
                    None
                }
            }
        }
    };
    let mut secret = build_identity_secret(
        mi,
        &issued,
        &ca,
        &resolved.inputs_hash,
        kube_credential.as_ref(),
    );
    // Overwrite only the Secret version that was judged ours: if it changed since (deleted and
    // re-created by someone else, say), the write fails with a conflict and we look again.
    let exists = judged_version.is_some();
    secret.metadata.resource_version = judged_version;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &mi.namespace().unwrap_or_default());
    let written = match exists {
        // Create, never apply, a Secret we have not seen: if one exists after all (someone
        // else's, or ours not yet cached), the create fails and we look before doing anything.
        false => match api
            .create(
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &secret,
            )
            .await
        {
            Ok(created) => created,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let existing = api.get_opt(&mi.spec.secret_name).await?;
                if ownership(existing.as_ref().map(|s| &s.metadata), mi) == Ownership::Foreign {
                    return Ok(secret_conflict(
                        mi,
                        ctx,
                        &mi.namespace().unwrap_or_default(),
                    ));
                }
                // Ours, but not in the cache yet: look again once it is.
                return Err(ReconcileError::SecretAppeared);
            }
            Err(e) => return Err(ReconcileError::Kube(e)),
        },
        true => match api
            .patch(
                &mi.spec.secret_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&secret),
            )
            .await
        {
            Ok(written) => written,
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                ctx.forget_certificate(mi.metadata.uid.as_deref().unwrap_or_default());
                return Err(ReconcileError::SecretAppeared);
            }
            Err(e) => return Err(ReconcileError::Kube(e)),
        },
    };
    // Remember what is in the Secret at the version just written: the watch event of this very
    // write then needs no read of the Secret.
    ctx.remember_certificate(
        mi.metadata.uid.as_deref().unwrap_or_default(),
        written.metadata.resource_version.clone(),
        KnownCertificate::new(issued.info.clone(), &resolved.inputs_hash, ca_key_der)
            .with_kube_client_not_after(
                kube_credential
                    .as_ref()
                    .map(|c| c.status.client_certificate_not_after.clone()),
            ),
    );
    let renew_at = renew_before_client_expiry(
        renewal_time(&issued.info, expect),
        &issued.info,
        kube_credential
            .as_ref()
            .map(|c| c.status.client_certificate_not_after.as_str()),
    );
    let event_reason = match reason {
        ReissueReason::Missing
            if mi
                .status
                .as_ref()
                .and_then(|s| s.serial_number.as_ref())
                .is_none() =>
        {
            "Issued"
        }
        ReissueReason::RenewalDue => "Renewed",
        _ => "Reissued",
    };
    ctx.metrics.count_issued(reason.as_str());
    let mut carries = match grants.is_empty() {
        true => String::new(),
        false => format!(", carrying {}", grants.join(", ")),
    };
    if let Some(c) = &kube_credential {
        carries.push_str(&format!(
            "; Kubernetes client certificate for {} valid until {}",
            c.status.user, c.status.client_certificate_not_after
        ));
    }
    let note = format!(
        "issued certificate {} ({}), valid until {}{carries}",
        issued.info.serial_hex,
        reason.as_str(),
        crate::ca::rfc3339(issued.info.not_after)
    );
    info!(namespace = %mi.namespace().unwrap_or_default(), name = %mi.name_any(), serial = %issued.info.serial_hex, reason = reason.as_str(), "issued certificate");
    ctx.publish(mi, EventType::Normal, event_reason, note);
    if let Some(e) = kube_failure {
        let outcome = Outcome::Retrying {
            reason: e.reason().into(),
            message: e.to_string(),
            current: Some((issued.info, renew_at)),
        };
        return Ok((outcome, Action::requeue(KUBE_ACCESS_RETRY)));
    }
    Ok((
        Outcome::Valid {
            info: issued.info,
            renew_at,
            grants,
            kubernetes_access: kube_credential.map(|c| c.status),
        },
        requeue_at(renew_at, now),
    ))
}

/// What the identity's Secret holds, as far as reconciling needs to know.
enum Examined {
    /// A Secret of that name exists and is not ours.
    Foreign,
    /// Ours or absent: the verdict on its certificate, the resourceVersion of the Secret it
    /// was judged at (None: there is no Secret), and when the Kubernetes client certificate in
    /// it expires (if it holds one).
    Verdict(Verdict, Option<String>, Option<String>),
}

/// Examines the identity's Secret, reading its body only when the operator does not already know
/// what it holds: the metadata cache shows whether it exists and at which resourceVersion, and a
/// certificate the operator wrote or verified at that version needs no second look. `refreshed`:
/// the version this reconcile just wrote (its trust bundle), which the cache may not show yet.
async fn examine_secret(
    ctx: &Context,
    mi: &MachineIdentity,
    namespace: &str,
    expect: &Expectations<'_>,
    refreshed: Option<&str>,
) -> Result<Examined, ReconcileError> {
    let uid = mi.metadata.uid.clone().unwrap_or_default();
    let synced = ctx
        .health
        .secrets_synced
        .load(std::sync::atomic::Ordering::Relaxed);
    let seen = ctx
        .secrets
        .get(namespace, &mi.spec.secret_name)
        .map(|mut seen| {
            if let Some(rv) = refreshed {
                seen.resource_version = rv.to_string();
            }
            seen
        });
    match seen {
        // Indexed Secrets all carry the managed-by label (the watch selects it).
        Some(seen) if seen.controller_uid.is_some() && seen.controller_uid == mi.metadata.uid => {
            if let Some(known) = ctx.known_certificate(&uid, Some(&seen.resource_version)) {
                return Ok(Examined::Verdict(
                    assess_known(&known, expect),
                    Some(seen.resource_version),
                    known.kube_client_not_after,
                ));
            }
        }
        // Not among our labelled Secrets and nothing written by us: absent (issuance creates,
        // never applies, so a Secret that exists after all is not overwritten).
        None if synced && !ctx.has_known_certificate(&uid) => {
            let missing = Verdict::Reissue {
                reason: ReissueReason::Missing,
                still_valid: None,
            };
            return Ok(Examined::Verdict(missing, None, None));
        }
        _ => {}
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api.get_opt(&mi.spec.secret_name).await?;
    match ownership(secret.as_ref().map(|s| &s.metadata), mi) {
        Ownership::Foreign => Ok(Examined::Foreign),
        Ownership::Absent => {
            ctx.forget_certificate(&uid);
            let missing = Verdict::Reissue {
                reason: ReissueReason::Missing,
                still_valid: None,
            };
            Ok(Examined::Verdict(missing, None, None))
        }
        Ownership::Ours => {
            let Some(secret) = secret else {
                return Err(ReconcileError::SecretAppeared);
            };
            let material = existing_material(&secret);
            let verdict = assess(&material, expect);
            let kube_not_after = secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::labels::KUBE_CLIENT_NOT_AFTER))
                .cloned();
            match &verdict {
                Verdict::Current { info, .. } => ctx.remember_certificate(
                    &uid,
                    secret.metadata.resource_version.clone(),
                    KnownCertificate::new(
                        info.clone(),
                        expect.inputs_hash,
                        expect.ca_public_key_der,
                    )
                    .with_kube_client_not_after(kube_not_after.clone()),
                ),
                Verdict::Reissue { .. } => ctx.forget_certificate(&uid),
            }
            let version = secret.metadata.resource_version.clone();
            Ok(Examined::Verdict(verdict, version, kube_not_after))
        }
    }
}

/// What lifecycle governance adds to a status: its conditions and a revocation just made.
struct Extras {
    conditions: Vec<crate::api::Condition>,
    revocation: Option<crate::api::RevocationStatus>,
}

async fn write_status(
    mi: &MachineIdentity,
    ctx: &Context,
    outcome: &Outcome,
    spiffe_id: Option<String>,
    now: OffsetDateTime,
    extras: Extras,
) -> Result<(), ReconcileError> {
    let status = desired_status(
        mi.status.as_ref(),
        outcome,
        spiffe_id,
        mi.metadata.generation,
        now,
    );
    let uid = mi.metadata.uid.clone().unwrap_or_default();
    // A revocation made earlier stays in status even when the cache lags our write of it.
    let revocation = extras.revocation.or_else(|| ctx.last_revocation(&uid));
    let mut status = with_lifecycle(
        status,
        mi.status.as_ref(),
        extras.conditions,
        revocation,
        now,
    );
    if !mi.wants_kubernetes_access() {
        status.kubernetes_access = None;
    }
    // Skip the write when the cached status already says it, or when this operator already
    // wrote exactly this (the cache may not show our own write yet).
    let written = comparable(&status);
    if !status_changed(mi.status.as_ref(), &status) || ctx.written.already_written(&uid, &written) {
        return Ok(());
    }
    let api: Api<MachineIdentity> =
        Api::namespaced(ctx.client.clone(), &mi.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": MachineIdentity::api_version(&()),
        "kind": MachineIdentity::kind(&()),
        "status": status,
    });
    api.patch_status(
        &mi.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    ctx.written.remember(&uid, &written);
    Ok(())
}

/// The Entitlements of a namespace, as plain data (one whose timestamps do not parse is left out:
/// its own status reports it).
fn namespace_entitlements(ctx: &Context, namespace: &str) -> Vec<EntitlementFacts> {
    ctx.entitlements
        .state()
        .iter()
        .filter(|e| e.metadata.namespace.as_deref() == Some(namespace))
        .filter_map(|e| EntitlementFacts::from_resource(e).ok())
        .collect()
}

/// The identity extension for the identity's grants and attributes (none when both are empty).
fn claims_extension(
    mi: &MachineIdentity,
    grants: &EffectiveGrants,
) -> Result<CustomExtensions, SpecError> {
    let claims = IdentityClaims {
        grants: grants.grants.clone(),
        attributes: mi.spec.attributes.clone(),
    };
    if claims.is_empty() {
        return Ok(vec![]);
    }
    let der =
        extension::encode(&claims).map_err(|e| SpecError::InvalidAttributes(e.to_string()))?;
    Ok(vec![(extension::EXTENSION_OID.to_vec(), der)])
}

/// The verdict with certificates this operator revoked treated as gone: one in the Secret is
/// re-issued (`Revoked`), and none is kept as "still valid" while retrying.
fn without_revoked(examined: Examined, revoked: &[String], revoked_now: bool) -> Examined {
    let is_revoked = |serial: &str| revoked.iter().any(|r| r.eq_ignore_ascii_case(serial));
    match examined {
        Examined::Verdict(Verdict::Current { info, .. }, version, kube)
            if revoked_now || is_revoked(&info.serial_hex) =>
        {
            Examined::Verdict(
                Verdict::Reissue {
                    reason: ReissueReason::Revoked,
                    still_valid: None,
                },
                version,
                kube,
            )
        }
        Examined::Verdict(
            Verdict::Reissue {
                reason,
                still_valid: Some((info, _)),
            },
            version,
            kube,
        ) if revoked_now || is_revoked(&info.serial_hex) => Examined::Verdict(
            Verdict::Reissue {
                reason,
                still_valid: None,
            },
            version,
            kube,
        ),
        other => other,
    }
}

/// A certificate of the CA retiring in a rotation is kept (it is still trusted) until the
/// identity's turn to re-issue comes: re-issues are spread and rate-limited.
fn deferred_for_rotation(
    ctx: &Context,
    mi: &MachineIdentity,
    examined: Examined,
    now: OffsetDateTime,
) -> Examined {
    match examined {
        Examined::Verdict(
            Verdict::Reissue {
                reason: ReissueReason::WrongIssuer,
                still_valid: Some((info, renew_at)),
            },
            version,
            kube,
        ) => {
            let uid = mi.metadata.uid.as_deref().unwrap_or_default();
            let verdict = match ctx.rollout.defer(uid, renew_at, now) {
                Some(at) => Verdict::Current { info, renew_at: at },
                None => Verdict::Reissue {
                    reason: ReissueReason::WrongIssuer,
                    still_valid: Some((info, renew_at)),
                },
            };
            Examined::Verdict(verdict, version, kube)
        }
        other => other,
    }
}

/// The serial of the certificate the identity holds after this reconcile, if any.
fn current_of(outcome: &Outcome) -> Option<String> {
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

fn is_blocked_on(mi: &MachineIdentity, reason: &str) -> bool {
    mi.status
        .as_ref()
        .and_then(|s| crate::api::condition::find_condition(&s.conditions, super::status::READY))
        .is_some_and(|c| !c.is_true() && c.reason == reason)
}

fn requeue_at(at: OffsetDateTime, now: OffsetDateTime) -> Action {
    let secs = (at - now).as_seconds_f64().max(1.0);
    Action::requeue(std::time::Duration::from_secs_f64(secs))
}

/// What to do after a failed reconcile: count it, report it, retry soon.
pub fn error_policy(mi: Arc<MachineIdentity>, err: &ReconcileError, ctx: Arc<Context>) -> Action {
    warn!(namespace = %mi.namespace().unwrap_or_default(), name = %mi.name_any(), reason = err.reason(), error = %err, "reconcile failed");
    ctx.metrics.count_failure(err.reason());
    if matches!(
        err,
        ReconcileError::SecretAppeared | ReconcileError::Conflict
    ) {
        // Our own Secret not yet in the cache, or the identity changed under us: the cache shows
        // it in a moment.
        return Action::requeue(std::time::Duration::from_millis(500));
    }
    ctx.publish(&mi, EventType::Warning, err.reason(), err.to_string());
    let jitter = rand::random_range(0..2000);
    Action::requeue(std::time::Duration::from_millis(3000 + jitter))
}
