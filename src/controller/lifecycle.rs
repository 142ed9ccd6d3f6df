//! Lifecycle governance in the identity reconciler: the finalizer that revokes on every deletion
//! path, retirement when a workload or review lapses, suspension, and revocation on request.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::context::Context;
use super::error::ReconcileError;
use super::identity_secret::{Ownership, keys, ownership};
use crate::api::{MachineIdentity, RevocationStatus};
use crate::ca::rfc3339;
use crate::issue::assess::leaf_info;
use crate::issue::leaf::CertificateInfo;
use crate::labels::{FIELD_MANAGER, REVOKE_FINALIZER, REVOKE_REQUESTED};
use crate::lifecycle::certificates::{revocations, unexpired};
use crate::lifecycle::review::{parse_review_date, review_state};
use crate::lifecycle::verdict::{Lifecycle, RetireCause, WORKLOAD_FOUND, WORKLOAD_MISSING, decide};
use crate::lifecycle::workload::workload_state;
use crate::revoke::{Reason, RevokeError};
use crate::settings::parse_go_duration;

/// How soon a deletion whose revocation failed is tried again.
const REVOCATION_RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// The lifecycle verdict for `mi` now.
pub fn assess_lifecycle(mi: &MachineIdentity, ctx: &Context, now: OffsetDateTime) -> Lifecycle {
    let warning = ctx.lifecycle.review_warning;
    let review_by = mi.spec.review_by.as_deref().and_then(parse_review_date);
    let review = review_state(review_by, warning, now);
    let namespace = mi.namespace().unwrap_or_default();
    let presence = mi
        .spec
        .workload_ref
        .as_ref()
        .map(|w| ctx.workloads.presence(&namespace, w));
    // The clock of a missing workload starts when it was first seen missing: the transition time
    // of the WorkloadFound condition, which survives restarts.
    let missing_since = mi
        .status
        .as_ref()
        .and_then(|s| crate::api::condition::find_condition(&s.conditions, WORKLOAD_FOUND))
        .filter(|c| c.status == "False" && c.reason == WORKLOAD_MISSING)
        .and_then(|c| crate::ca::parse_rfc3339(&c.last_transition_time));
    let grace = mi
        .spec
        .workload_ref
        .as_ref()
        .and_then(|w| w.grace_period.as_deref())
        .and_then(|g| parse_go_duration(g).ok())
        .unwrap_or(ctx.lifecycle.workload_grace);
    let workload = workload_state(presence, missing_since, grace, now);
    decide(
        review,
        workload,
        mi.spec.on_review_lapse.unwrap_or_default(),
        warning,
    )
}

fn identity_key(mi: &MachineIdentity) -> String {
    format!("{}/{}", mi.namespace().unwrap_or_default(), mi.name_any())
}

fn api(ctx: &Context, mi: &MachineIdentity) -> Api<MachineIdentity> {
    Api::namespaced(ctx.client.clone(), &mi.namespace().unwrap_or_default())
}

/// Adds the revoking finalizer when it is missing.
pub async fn ensure_finalizer(mi: &MachineIdentity, ctx: &Context) -> Result<(), ReconcileError> {
    set_finalizer(mi, ctx, true).await
}

/// The finalizer list with ours added (`on`) or removed, or None when it is already so.
pub fn finalizers_with(current: &[String], on: bool) -> Option<Vec<String>> {
    let has = current.iter().any(|f| f == REVOKE_FINALIZER);
    match (on, has) {
        (true, false) => Some(
            current
                .iter()
                .cloned()
                .chain([REVOKE_FINALIZER.to_string()])
                .collect(),
        ),
        (false, true) => Some(
            current
                .iter()
                .filter(|f| *f != REVOKE_FINALIZER)
                .cloned()
                .collect(),
        ),
        _ => None,
    }
}

/// Adds or removes the finalizer with a merge patch of the finalizer list at the version seen (a
/// conflict if anything changed since: never someone else's finalizer lost). A merge patch is
/// the cheapest write for the apiserver; it touches no other field.
async fn set_finalizer(
    mi: &MachineIdentity,
    ctx: &Context,
    on: bool,
) -> Result<(), ReconcileError> {
    let Some(finalizers) = finalizers_with(mi.finalizers(), on) else {
        return Ok(());
    };
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": mi.metadata.resource_version,
            "finalizers": finalizers,
        },
    });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api(ctx, mi)
        .patch(&mi.name_any(), &pp, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone already: nothing to hold.
        Err(kube::Error::Api(s)) if !on && s.code == 404 => Ok(()),
        // Changed since the cache saw it: look again at the new version.
        Err(kube::Error::Api(s)) if s.code == 409 => Err(ReconcileError::Conflict),
        Err(e) => Err(ReconcileError::Kube(e)),
    }
}

/// The certificate the identity's Secret holds, read from the API (the status may not show it
/// yet). None when there is no Secret of ours or it cannot be read.
async fn certificate_in_secret(
    mi: &MachineIdentity,
    ctx: &Context,
) -> Result<Option<CertificateInfo>, RevokeError> {
    // What the operator wrote or verified at the Secret's current version needs no read.
    let namespace = mi.namespace().unwrap_or_default();
    let uid = mi.metadata.uid.as_deref().unwrap_or_default();
    match ctx.secrets.get(&namespace, &mi.spec.secret_name) {
        Some(seen) => {
            if let Some(known) = ctx.known_certificate(uid, Some(&seen.resource_version)) {
                return Ok(Some(known.info));
            }
        }
        // Not among our labelled Secrets once the index is complete, and nothing written by us
        // since: there is no Secret of ours (the same judgement issuance makes).
        None if ctx
            .health
            .secrets_synced
            .load(std::sync::atomic::Ordering::Relaxed)
            && !ctx.has_known_certificate(uid) =>
        {
            return Ok(None);
        }
        None => {}
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    // A Secret that cannot be read may hold a certificate the status does not show yet: the
    // revocation fails (and is retried) rather than miss it.
    let secret = api.get_opt(&mi.spec.secret_name).await.map_err(|e| {
        RevokeError::NotRecorded(format!(
            "cannot read the identity Secret to find its certificate: {e}"
        ))
    })?;
    let Some(secret) = secret else {
        return Ok(None);
    };
    if ownership(Some(&secret.metadata), mi) != Ownership::Ours {
        return Ok(None);
    }
    Ok(secret
        .data
        .as_ref()
        .and_then(|d| d.get(keys::TLS_CRT))
        .and_then(|crt| leaf_info(&crt.0)))
}

/// Revokes every unexpired certificate of `mi` for `reason`; returns their serials and how many
/// were not revoked before.
async fn revoke_all(
    mi: &MachineIdentity,
    ctx: &Context,
    reason: Reason,
    now: OffsetDateTime,
) -> Result<(Vec<String>, usize), RevokeError> {
    let in_secret = certificate_in_secret(mi, ctx).await?;
    let certs = unexpired(mi.status.as_ref(), in_secret.as_ref(), now);
    let fresh = ctx
        .revoker
        .revoke(revocations(&certs, reason, &identity_key(mi)))
        .await?;
    Ok((certs.into_iter().map(|(s, _)| s).collect(), fresh))
}

/// An identity's deletion was just seen: start revoking what its status and the operator's
/// memory name at once, without waiting for its turn in the reconcile queue (a burst of
/// deletions would otherwise publish the last revocation only after every reconcile before it).
/// The finalizer still revokes and waits for the record before it lets the identity go.
pub fn revoke_early(ctx: &Arc<Context>, mi: &MachineIdentity) {
    let has_finalizer = mi.finalizers().iter().any(|f| f == REVOKE_FINALIZER);
    if mi.metadata.deletion_timestamp.is_none() || !has_finalizer {
        return;
    }
    let uid = mi.metadata.uid.as_deref().unwrap_or_default();
    let known = ctx.any_known_certificate(uid);
    let now = OffsetDateTime::now_utc();
    let certs = unexpired(mi.status.as_ref(), known.as_ref(), now);
    let revs = revocations(&certs, Reason::CessationOfOperation, &identity_key(mi));
    let revoker = ctx.revoker.clone();
    tokio::spawn(async move {
        if let Err(e) = revoker.revoke(revs).await {
            tracing::debug!(error = %e, "early revocation failed; the finalizer retries");
        }
    });
}

/// When the identity's grants lost some the previous certificates carried (an Entitlement
/// deleted, narrowed, or no longer selecting it) and it holds a new certificate, revokes the
/// earlier ones. Certificates ending within two minutes are left to expire: a grant reaching its
/// `expiresAt` leaves with its certificates (they were capped at it). A failure is returned, so
/// the reconcile is retried before the status forgets which grants were withdrawn.
pub async fn revoke_withdrawn_grants(
    mi: &MachineIdentity,
    ctx: &Context,
    grants: &[String],
    current_serial: &str,
    now: OffsetDateTime,
) -> Result<(), RevokeError> {
    let Some(status) = mi.status.as_ref() else {
        return Ok(());
    };
    let withdrawn: Vec<&str> = status
        .entitlements
        .iter()
        .filter(|g| !grants.contains(g))
        .map(String::as_str)
        .collect();
    if withdrawn.is_empty() {
        return Ok(());
    }
    let certs: Vec<(String, OffsetDateTime)> = unexpired(Some(status), None, now)
        .into_iter()
        .filter(|(serial, not_after)| {
            !serial.eq_ignore_ascii_case(current_serial)
                && *not_after > now + time::Duration::minutes(2)
        })
        .collect();
    if certs.is_empty() {
        return Ok(());
    }
    let fresh = ctx
        .revoker
        .revoke(revocations(
            &certs,
            Reason::PrivilegeWithdrawn,
            &identity_key(mi),
        ))
        .await?;
    if fresh > 0 {
        let serials: Vec<String> = certs.into_iter().map(|(s, _)| s).collect();
        ctx.publish(
            mi,
            EventType::Normal,
            "GrantWithdrawn",
            format!(
                "{} no longer granted: revoked {}",
                withdrawn.join(", "),
                serial_list(&serials)
            ),
        );
    }
    Ok(())
}

fn serial_list(serials: &[String]) -> String {
    match serials.is_empty() {
        true => "no unexpired certificate".to_string(),
        false => format!("serial {}", serials.join(", ")),
    }
}

/// The deletion path, whoever deleted the identity: revoke every unexpired certificate, then let
/// it go. If the revocation cannot be recorded, retry; past the finalizer timeout, let it go
/// anyway and say why.
pub async fn finalize(mi: &MachineIdentity, ctx: &Context) -> Result<Action, ReconcileError> {
    let uid = mi.metadata.uid.clone().unwrap_or_default();
    if !mi.finalizers().iter().any(|f| f == REVOKE_FINALIZER) {
        ctx.forget(&uid);
        return Ok(Action::await_change());
    }
    let now = OffsetDateTime::now_utc();
    match revoke_all(mi, ctx, Reason::CessationOfOperation, now).await {
        Ok((serials, _)) => {
            info!(identity = %identity_key(mi), serials = ?serials, "identity deleted; certificates revoked");
            // Said once: not again for certificates a retirement or suspension already revoked
            // (and said so).
            let said = ctx
                .last_revocation(&uid)
                .is_some_and(|r| serials.iter().all(|s| r.serial_numbers.contains(s)));
            if !serials.is_empty() && !said {
                ctx.publish(
                    mi,
                    EventType::Normal,
                    "Revoked",
                    format!("identity deleted: revoked {}", serial_list(&serials)),
                );
            }
        }
        Err(e) => {
            let deleted_at = mi
                .metadata
                .deletion_timestamp
                .as_ref()
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok())
                .unwrap_or(now);
            if now - deleted_at < ctx.lifecycle.finalizer_timeout {
                ctx.warn(
                    mi,
                    "RevocationFailed",
                    &format!("{e}; retrying before the identity is deleted"),
                );
                ctx.metrics.count_failure("RevocationFailed");
                write_revocation_failure(mi, ctx, &e.to_string(), now).await;
                return Ok(Action::requeue(REVOCATION_RETRY));
            }
            ctx.warn(
                mi,
                "RevocationAbandoned",
                &format!(
                    "deletion has waited {} for the revocation to be recorded, so the identity is let go: its certificates stay valid until they expire. Last error: {e}",
                    humantime(ctx.lifecycle.finalizer_timeout)
                ),
            );
            ctx.metrics.count_failure("RevocationAbandoned");
        }
    }
    set_finalizer(mi, ctx, false).await?;
    ctx.forget(&uid);
    Ok(Action::await_change())
}

fn humantime(d: time::Duration) -> String {
    format!("{}s", d.whole_seconds())
}

/// Shows a failed revocation in status while the deletion waits (best effort: the Event says it
/// too).
async fn write_revocation_failure(
    mi: &MachineIdentity,
    ctx: &Context,
    message: &str,
    now: OffsetDateTime,
) {
    // The whole status, with Ready replaced: an apply of less would drop the fields that say
    // which certificates are still to be revoked.
    let mut status = mi.status.clone().unwrap_or_default();
    let ready = crate::api::Condition::new(
        super::status::READY,
        false,
        "RevocationFailed",
        format!("deleting: {message}"),
    );
    let others: Vec<crate::api::Condition> = status
        .conditions
        .iter()
        .filter(|c| c.type_ != super::status::READY)
        .cloned()
        .collect();
    let mut conditions = crate::api::condition::merge_conditions(
        &status.conditions,
        vec![ready],
        mi.metadata.generation,
        &rfc3339(now),
    );
    conditions.extend(others);
    status.conditions = conditions;
    // Every retry (each few seconds) says the same: written once.
    if !super::status::status_changed(mi.status.as_ref(), &status) {
        return;
    }
    let patch = serde_json::json!({
        "apiVersion": MachineIdentity::api_version(&()),
        "kind": MachineIdentity::kind(&()),
        "status": status,
    });
    if let Err(e) = api(ctx, mi)
        .patch_status(
            &mi.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        warn!(identity = %identity_key(mi), error = %e, "cannot record the revocation failure in status");
    }
}

/// Retires the identity: revokes every unexpired certificate, says why, and deletes it (the
/// finalizer then finds nothing left to revoke).
pub async fn retire(
    mi: &MachineIdentity,
    ctx: &Context,
    lifecycle: &Lifecycle,
    cause: RetireCause,
) -> Result<Action, ReconcileError> {
    let now = OffsetDateTime::now_utc();
    let reason = match cause {
        RetireCause::WorkloadGone => Reason::CessationOfOperation,
        RetireCause::ReviewOverdue => Reason::PrivilegeWithdrawn,
    };
    let (serials, _) = revoke_all(mi, ctx, reason, now)
        .await
        .map_err(ReconcileError::Revocation)?;
    let why = match (cause, &lifecycle.workload, &mi.spec.workload_ref) {
        (
            RetireCause::WorkloadGone,
            crate::lifecycle::workload::WorkloadState::Lapsed { since },
            Some(w),
        ) => format!(
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
    ctx.remember_revocation(
        mi.metadata.uid.as_deref().unwrap_or_default(),
        &RevocationStatus {
            reason: cause.reason().into(),
            revoked_at: rfc3339(now),
            serial_numbers: serials.clone(),
            request: None,
        },
    );
    let note = format!(
        "{why}: revoked {} and deleting the identity",
        serial_list(&serials)
    );
    info!(identity = %identity_key(mi), reason = cause.reason(), "{note}");
    ctx.warn(mi, cause.reason(), &note);
    ctx.metrics.count_failure(cause.reason());
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: mi.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api(ctx, mi).delete(&mi.name_any(), &dp).await {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Action::await_change()),
        Err(e) => Err(ReconcileError::Kube(e)),
    }
}

/// Suspends the identity (review lapsed, `Suspend`): revokes every unexpired certificate and
/// removes the key material from its Secret. Returns the revocation to show in status, when
/// anything was newly revoked.
pub async fn suspend(
    mi: &MachineIdentity,
    ctx: &Context,
    now: OffsetDateTime,
) -> Result<Option<RevocationStatus>, ReconcileError> {
    let (serials, fresh) = revoke_all(mi, ctx, Reason::PrivilegeWithdrawn, now)
        .await
        .map_err(ReconcileError::Revocation)?;
    let stripped = strip_key_material(mi, ctx).await?;
    ctx.forget_certificate(mi.metadata.uid.as_deref().unwrap_or_default());
    if fresh == 0 && !stripped {
        return Ok(None);
    }
    let note = format!(
        "the review date {} has passed: revoked {}, removed the key from Secret {}; renewing stops until reviewBy moves forward (kubectl nhi review)",
        mi.spec.review_by.as_deref().unwrap_or_default(),
        serial_list(&serials),
        mi.spec.secret_name
    );
    ctx.warn(mi, "Suspended", &note);
    let revocation = RevocationStatus {
        reason: crate::lifecycle::verdict::REVIEW_OVERDUE.into(),
        revoked_at: rfc3339(now),
        serial_numbers: serials,
        request: None,
    };
    ctx.remember_revocation(mi.metadata.uid.as_deref().unwrap_or_default(), &revocation);
    Ok(Some(revocation))
}

/// Removes the certificate, key, single-file identity and kubeconfig from the identity's Secret,
/// keeping the trust bundle. Returns whether anything was removed.
async fn strip_key_material(mi: &MachineIdentity, ctx: &Context) -> Result<bool, ReconcileError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &mi.namespace().unwrap_or_default());
    let Some(secret) = api.get_opt(&mi.spec.secret_name).await? else {
        return Ok(false);
    };
    if ownership(Some(&secret.metadata), mi) != Ownership::Ours {
        return Ok(false);
    }
    let data = secret.data.unwrap_or_default();
    let holds = |k: &str| data.get(k).is_some_and(|v| !v.0.is_empty());
    if ![
        keys::TLS_KEY,
        keys::TLS_CRT,
        keys::IDENTITY_PEM,
        keys::KUBECONFIG,
    ]
    .iter()
    .any(|k| holds(k))
    {
        return Ok(false);
    }
    // A merge patch at the version read (a conflict if it changed since). kubernetes.io/tls
    // Secrets must keep both keys: they stay, empty.
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": secret.metadata.resource_version,
            "annotations": {
                crate::labels::SERIAL: null,
                crate::labels::CERT_INPUTS: null,
                crate::labels::KUBE_CLIENT_NOT_AFTER: null,
            },
        },
        "data": {
            keys::TLS_KEY: "",
            keys::TLS_CRT: "",
            keys::IDENTITY_PEM: null,
            keys::KUBECONFIG: null,
        },
    });
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api
        .patch(&mi.spec.secret_name, &pp, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        // Changed since read: look again.
        Err(kube::Error::Api(s)) if s.code == 409 => Err(ReconcileError::Conflict),
        Err(e) => Err(ReconcileError::Kube(e)),
    }
}

/// What answering a revoke request did.
pub struct RevokeAnswer {
    /// The revocation to show in status.
    pub status: crate::api::RevocationStatus,
    /// Whether certificates were revoked just now (a new one is to be issued).
    pub revoked_now: bool,
}

/// Answers a `kubectl nhi revoke` request (a new value of the `nhi.dev/revoke-requested`
/// annotation): revokes every unexpired certificate. The caller issues a new certificate unless
/// the identity is suspended.
pub async fn answer_revoke_request(
    mi: &MachineIdentity,
    ctx: &Context,
    now: OffsetDateTime,
) -> Result<Option<RevokeAnswer>, ReconcileError> {
    let Some(request) = mi.annotations().get(REVOKE_REQUESTED) else {
        return Ok(None);
    };
    let answered = mi
        .status
        .as_ref()
        .and_then(|s| s.last_revocation.as_ref())
        .and_then(|r| r.request.as_ref());
    if answered == Some(request) {
        return Ok(None);
    }
    let uid = mi.metadata.uid.as_deref().unwrap_or_default();
    // Answered already, but the status does not show it (the cache lags our write, or the write
    // failed): show the answer again, revoke nothing more.
    if let Some(status) = ctx
        .last_revocation(uid)
        .filter(|r| r.request.as_ref() == Some(request))
    {
        return Ok(Some(RevokeAnswer {
            status,
            revoked_now: false,
        }));
    }
    let (serials, _) = revoke_all(mi, ctx, Reason::KeyCompromise, now)
        .await
        .map_err(ReconcileError::Revocation)?;
    ctx.forget_certificate(uid);
    ctx.warn(
        mi,
        "RevokeRequested",
        &format!("revoked {} on request ({request})", serial_list(&serials)),
    );
    let status = RevocationStatus {
        reason: "RevokeRequested".into(),
        revoked_at: rfc3339(now),
        serial_numbers: serials,
        request: Some(request.clone()),
    };
    ctx.remember_revocation(uid, &status);
    Ok(Some(RevokeAnswer {
        status,
        revoked_now: true,
    }))
}
