//! The Entitlement reconciler: bind the grants to the certificates of the identities it selects,
//! record the thumbprints, report the phase.

use std::sync::Arc;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource, ResourceExt};
use time::OffsetDateTime;
use tracing::warn;

use super::entitlement_rbac::apply_rbac;
use super::entitlement_status::{
    Assessment, KUBERNETES_RBAC, READY, RbacOutcome, SubjectCertificate,
    comparable_entitlement_status, desired_entitlement_status, entitlement_status_changed,
};
use super::error::ReconcileError;
use super::events::EventPublisher;
use super::written::WrittenStatuses;
use crate::api::condition::find_condition;
use crate::api::{Entitlement, MachineIdentity};
use crate::entitle::rbac::plan_rbac;
use crate::entitle::resolve::{EntitlementFacts, Phase};
use crate::issue::kube_client::{access_disabled, kube_user};
use crate::labels::FIELD_MANAGER;
use crate::metrics::Metrics;

/// How soon to look again while subjects are being re-issued.
const BINDING_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// ...and once that has lasted a minute (a subject that cannot be issued, say).
const SLOW_BINDING_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// What the Entitlement reconciler reads and writes through.
pub struct EntitlementContext {
    pub client: Client,
    /// The MachineIdentity cache of the identity controller (subjects and their certificates).
    pub identities: Store<MachineIdentity>,
    pub events: Arc<EventPublisher>,
    pub metrics: Arc<Metrics>,
    /// Health flags: reconciles wait for the identity cache.
    pub health: Arc<crate::http::Health>,
    /// Whether Kubernetes access is enabled (`--kubernetes-access`): Roles are only written then.
    pub kubernetes_access: bool,
    /// The status last written per Entitlement.
    pub written: WrittenStatuses,
}

/// Whether the Entitlement has been waiting for its subjects for over a minute.
fn binding_for_long(status: Option<&crate::api::EntitlementStatus>, now: OffsetDateTime) -> bool {
    status
        .and_then(|s| find_condition(&s.conditions, READY))
        .filter(|c| c.reason == "Binding")
        .and_then(|c| {
            OffsetDateTime::parse(
                &c.last_transition_time,
                &time::format_description::well_known::Rfc3339,
            )
            .ok()
        })
        .is_some_and(|since| now - since > time::Duration::MINUTE)
}

/// Reconciles one Entitlement.
pub async fn reconcile(
    ent: Arc<Entitlement>,
    ctx: Arc<EntitlementContext>,
) -> Result<Action, ReconcileError> {
    let _counted = ctx.metrics.count_reconcile("entitlement");
    let namespace = ent.namespace().ok_or(ReconcileError::NotNamespaced)?;
    if ent.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if !ctx
        .health
        .identities_synced
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        // Subjects come from the identity cache: before it is complete, a RoleBinding would
        // lose its users and bindings their thumbprints.
        return Ok(Action::requeue(std::time::Duration::from_secs(1)));
    }
    let now = OffsetDateTime::now_utc();
    let (assessment, next_transition) = assess(&ent, &namespace, &ctx.identities, now);
    let rbac = materialise_rbac(&ent, &namespace, &ctx, &assessment).await?;
    let (status, pending) = desired_entitlement_status(
        ent.status.as_ref(),
        &assessment,
        rbac.as_ref(),
        &ent.spec.justification,
        ent.metadata.generation,
        now,
    );
    let uid = ent.metadata.uid.clone().unwrap_or_default();
    // The cache may not show our own last write yet: neither write it again nor report it twice.
    let written = comparable_entitlement_status(&status);
    if entitlement_status_changed(ent.status.as_ref(), &status)
        && !ctx.written.already_written(&uid, &written)
    {
        report_transition(&ent, &ctx, &status);
        report_rbac_transition(&ent, &ctx, &status);
        let api: Api<Entitlement> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = serde_json::json!({
            "apiVersion": Entitlement::api_version(&()),
            "kind": Entitlement::kind(&()),
            "status": status,
        });
        api.patch_status(
            &ent.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        ctx.written.remember(&uid, &written);
    }
    let action = match (pending, next_transition) {
        (true, _) if binding_for_long(ent.status.as_ref(), now) => {
            Action::requeue(SLOW_BINDING_RECHECK)
        }
        (true, _) => Action::requeue(BINDING_RECHECK),
        (false, Some(at)) => {
            let wait = (at - now).as_seconds_f64().max(0.0) + 0.5;
            Action::requeue(std::time::Duration::from_secs_f64(wait))
        }
        (false, None) => Action::await_change(),
    };
    Ok(action)
}

/// Reads the Entitlement and its subjects into plain data.
fn assess(
    ent: &Entitlement,
    namespace: &str,
    identities: &Store<MachineIdentity>,
    now: OffsetDateTime,
) -> (Assessment, Option<OffsetDateTime>) {
    let facts = match EntitlementFacts::from_resource(ent) {
        Ok(f) => f,
        Err(message) => {
            let reason = "InvalidSpec".to_string();
            return (Assessment::Invalid { reason, message }, None);
        }
    };
    let mut subjects = vec![];
    for mi in identities.state() {
        if mi.metadata.namespace.as_deref() != Some(namespace)
            || mi.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        match facts.selects(&mi.name_any(), mi.labels()) {
            Ok(true) => subjects.push(subject_certificate(&mi)),
            Ok(false) => {}
            Err(message) => {
                let reason = "InvalidSelector".to_string();
                return (Assessment::Invalid { reason, message }, None);
            }
        }
    }
    let assessment = Assessment::Usable {
        phase: facts.phase(now),
        grants: facts.grants.clone(),
        subjects,
    };
    (assessment, facts.next_transition(now))
}

/// Writes or removes the Entitlement's Role and RoleBinding; None when it has never had any.
async fn materialise_rbac(
    ent: &Entitlement,
    namespace: &str,
    ctx: &EntitlementContext,
    assessment: &Assessment,
) -> Result<Option<RbacOutcome>, ReconcileError> {
    let had = ent.status.as_ref().is_some_and(|s| s.kubernetes.is_some());
    let wanted = ent.spec.kubernetes.is_some();
    if !had && !wanted {
        return Ok(None);
    }
    let (active, users) = match assessment {
        Assessment::Usable {
            phase, subjects, ..
        } => (
            *phase == Phase::Active,
            subjects
                .iter()
                .filter(|s| s.kubernetes_access)
                .map(|s| kube_user(namespace, &s.identity))
                .collect(),
        ),
        Assessment::Invalid { .. } => (false, vec![]),
    };
    if !ctx.kubernetes_access {
        return Ok(Some(RbacOutcome::Refused {
            message: access_disabled("spec.kubernetes"),
        }));
    }
    let plan = plan_rbac(ent, active, users);
    let outcome = apply_rbac(&ctx.client, namespace, &ent.name_any(), None, plan).await?;
    Ok(Some(outcome))
}

fn subject_certificate(mi: &MachineIdentity) -> SubjectCertificate {
    let status = mi.status.clone().unwrap_or_default();
    SubjectCertificate {
        kubernetes_access: mi.wants_kubernetes_access(),
        identity: mi.name_any(),
        grants: status.entitlements.into_iter().collect(),
        serial_number: status.serial_number,
        thumbprint_sha256: status.thumbprint_sha256,
        not_after: status.not_after,
    }
}

/// Publishes an Event when the Ready reason changes: bound, expired, scheduled, or unusable.
fn report_transition(
    ent: &Entitlement,
    ctx: &EntitlementContext,
    status: &crate::api::EntitlementStatus,
) {
    let reason_of = |conditions: &[crate::api::Condition]| {
        find_condition(conditions, READY).map(|c| (c.reason.clone(), c.message.clone()))
    };
    let before = ent.status.as_ref().and_then(|s| reason_of(&s.conditions));
    let Some((reason, message)) = reason_of(&status.conditions) else {
        return;
    };
    if before.as_ref().map(|(r, _)| r) == Some(&reason) {
        return;
    }
    let justification = &ent.spec.justification;
    let (type_, event_reason) = match reason.as_str() {
        "Bound" => (EventType::Normal, "Bound"),
        "Expired" => (EventType::Normal, "Expired"),
        "NotYetActive" => (EventType::Normal, "Scheduled"),
        "Binding" => return,
        other => (EventType::Warning, other),
    };
    let phase_note = match reason.as_str() {
        "NotYetActive" => format!(
            "grants apply from {}",
            ent.spec.not_before.clone().unwrap_or_default()
        ),
        _ => message,
    };
    ctx.events.publish(
        &ctx.metrics,
        ent,
        type_,
        event_reason,
        format!("{phase_note} (justification: {justification})"),
    );
}

/// Publishes an Event when the Kubernetes permissions are granted, change users, or are removed.
fn report_rbac_transition(
    ent: &Entitlement,
    ctx: &EntitlementContext,
    status: &crate::api::EntitlementStatus,
) {
    let of = |conditions: &[crate::api::Condition]| {
        find_condition(conditions, KUBERNETES_RBAC).map(|c| (c.reason.clone(), c.message.clone()))
    };
    let before = ent.status.as_ref().and_then(|s| of(&s.conditions));
    let Some((reason, message)) = of(&status.conditions) else {
        return;
    };
    if before.as_ref() == Some(&(reason.clone(), message.clone())) {
        return;
    }
    let event_reason = match reason.as_str() {
        "Bound" | "NoUsers" => "KubernetesAccessGranted",
        // Already reported as not Ready (RoleRefused).
        "RoleRefused" => return,
        _ if before.is_none() => return,
        _ => "KubernetesAccessRemoved",
    };
    ctx.events.publish(
        &ctx.metrics,
        ent,
        EventType::Normal,
        event_reason,
        format!("{message} (justification: {})", ent.spec.justification),
    );
}

/// What to do after a failed reconcile: report it, retry soon.
pub fn error_policy(
    ent: Arc<Entitlement>,
    err: &ReconcileError,
    ctx: Arc<EntitlementContext>,
) -> Action {
    warn!(namespace = %ent.namespace().unwrap_or_default(), name = %ent.name_any(), reason = err.reason(), error = %err, "entitlement reconcile failed");
    ctx.metrics.count_failure(err.reason());
    let jitter = rand::random_range(0..2000);
    Action::requeue(std::time::Duration::from_millis(3000 + jitter))
}
