//! Plan: what an Entitlement reconcile does, decided from its [`Facts`] alone (pure): which of
//! its subjects hold a certificate carrying its grants, what becomes of its Role and RoleBinding,
//! and, once the RBAC writes answered ([`conclude`]), its status, Events and requeue time.

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use time::OffsetDateTime;

use super::facts::{ExistingRbac, Facts};
use super::status::{
    Assessment, KUBERNETES_RBAC, READY, RbacOutcome, comparable_entitlement_status,
    desired_entitlement_status, entitlement_status_changed,
};
use crate::controller::status_memory::fingerprint;
use nhi_api::condition::find_condition;
use nhi_api::{Condition, Entitlement, EntitlementStatus, PinnedSubject};
use nhi_core::entitle::rbac::{RbacPlan, is_ours, plan_rbac, rbac_name};
use nhi_core::entitle::resolve::{EntitlementFacts, Phase};
use nhi_core::issue::kube_client::access_disabled;
use nhi_core::policy::entitlement::check_entitlement;
use nhi_core::policy::{POLICY_DENIED, refusal_message};

/// How soon an Entitlement is looked at again while the identity cache is incomplete.
const IDENTITIES_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How soon to look again while subjects are being re-issued.
const BINDING_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// ...and once that has lasted a minute (a subject that cannot be issued, say).
const SLOW_BINDING_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// What a reconcile of an Entitlement does.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Nothing: it is being deleted (its RBAC goes with it) — wait for a change.
    AwaitChange,
    /// Subjects come from the identity cache: before it is complete, a RoleBinding would lose
    /// its users and bindings their thumbprints. Look again shortly.
    WaitForIdentities(std::time::Duration),
    /// Write its RBAC (when it has any), then [`conclude`].
    Bind(Box<Binding>),
}

/// What binding an Entitlement does.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    /// What the reconcile learned of the Entitlement and its subjects.
    pub assessment: Assessment,
    /// When its phase changes next (notBefore, expiresAt).
    pub next_transition: Option<OffsetDateTime>,
    /// Its Role and RoleBinding; None when it has never had any.
    pub rbac: Option<RbacDecision>,
    /// Which identity each named subject is bound to.
    pub pins: Pins,
}

/// The identities the named subjects are pinned to, for the current spec generation: those
/// pinned before, and the current identity of each name not pinned yet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pins {
    pub subjects: Vec<PinnedSubject>,
    /// The spec generation they are for.
    pub generation: Option<i64>,
    /// Named subjects whose identity was re-created since it was pinned (not bound).
    pub replaced: Vec<String>,
}

impl Pins {
    /// The pins the status shows, kept as they are (an Entitlement that binds nothing now must
    /// not forget whom its names were bound to).
    fn kept(ent: &Entitlement) -> Pins {
        let status = ent.status.as_ref();
        Pins {
            subjects: status
                .map(|s| s.pinned_subjects.clone())
                .unwrap_or_default(),
            generation: status.and_then(|s| s.pinned_generation),
            replaced: vec![],
        }
    }
}

/// What becomes of the Entitlement's Role and RoleBinding.
#[derive(Clone, Debug, PartialEq)]
pub enum RbacDecision {
    /// Nothing to write: the outcome is known.
    Known(RbacOutcome),
    Write(RbacWrites),
}

/// The RBAC writes, in order: apply the Role, then the RoleBinding (or delete ours when there
/// is none to apply), then delete the Role when it is to go. Deletions touch only objects
/// labelled for the Entitlement (and owned by `owner_uid` when given), by uid precondition. A
/// Role or RoleBinding the apiserver refuses (the operator cannot grant what it does not hold)
/// removes the RoleBinding and is the outcome instead.
#[derive(Clone, Debug, PartialEq)]
pub struct RbacWrites {
    pub role: Option<Box<Role>>,
    pub binding: Option<Box<RoleBinding>>,
    /// The uid of our existing RoleBinding, to delete when none is applied or one is refused.
    pub binding_to_delete: Option<Option<String>>,
    /// The uid of our existing Role, to delete.
    pub role_to_delete: Option<Option<String>>,
    /// What the writes make of it, unless the apiserver refuses.
    pub outcome: RbacOutcome,
}

/// What a reconcile concludes with, once the RBAC writes answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Conclusion {
    /// Events about changes of the status (published before it is written).
    pub events: Vec<PlannedEvent>,
    /// The status to write, when it differs from the cached one and our write of moments ago.
    pub status: Option<Box<EntitlementStatus>>,
    pub requeue: Requeue,
}

/// An Event about the Entitlement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// When to look at the Entitlement again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Requeue {
    After(std::time::Duration),
    AwaitChange,
}

/// The plan for the reconcile whose facts are `facts`.
pub fn plan(facts: &Facts) -> Plan {
    let ent = &facts.entitlement;
    if ent.metadata.deletion_timestamp.is_some() {
        return Plan::AwaitChange;
    }
    if !facts.identities_synced {
        return Plan::WaitForIdentities(IDENTITIES_SYNC_WAIT);
    }
    let (assessment, next_transition, pins) = assess(facts);
    let rbac = rbac_decision(facts, &assessment);
    Plan::Bind(Box::new(Binding {
        assessment,
        next_transition,
        rbac,
        pins,
    }))
}

/// The Entitlement and its subjects as plain data, when its phase changes next, and the pins of
/// its named subjects.
fn assess(facts: &Facts) -> (Assessment, Option<OffsetDateTime>, Pins) {
    let ent = match EntitlementFacts::from_resource(&facts.entitlement) {
        Ok(f) => f,
        Err(message) => {
            let reason = "InvalidSpec".to_string();
            return (
                Assessment::Invalid { reason, message },
                None,
                Pins::kept(&facts.entitlement),
            );
        }
    };
    // Nothing of an Entitlement the policy refuses is bound: its grants leave every certificate,
    // its RBAC is removed.
    let refusals = check_entitlement(&facts.entitlement.spec, &facts.policy);
    if !refusals.is_empty() {
        let reason = POLICY_DENIED.to_string();
        let message = format!("refused: {}", refusal_message(&refusals));
        return (
            Assessment::Invalid { reason, message },
            None,
            Pins::kept(&facts.entitlement),
        );
    }
    let mut subjects = vec![];
    let mut pins = Pins {
        subjects: ent
            .pins
            .iter()
            .map(|(name, uid)| PinnedSubject {
                name: name.clone(),
                uid: uid.clone(),
            })
            .collect(),
        generation: facts.entitlement.metadata.generation,
        replaced: vec![],
    };
    for identity in &facts.identities {
        let name = &identity.certificate.identity;
        match ent.selects(name, Some(&identity.uid), &identity.labels) {
            Ok(true) => subjects.push(identity.certificate.clone()),
            Ok(false) => {}
            Err(message) => {
                let reason = "InvalidSelector".to_string();
                return (
                    Assessment::Invalid { reason, message },
                    None,
                    Pins::kept(&facts.entitlement),
                );
            }
        }
        if ent.replaced(name, Some(&identity.uid)) {
            pins.replaced.push(name.clone());
        } else if ent.names.contains(name) && !ent.pins.contains_key(name) {
            pins.subjects.push(PinnedSubject {
                name: name.clone(),
                uid: identity.uid.clone(),
            });
        }
    }
    pins.subjects.sort_by(|a, b| a.name.cmp(&b.name));
    let assessment = Assessment::Usable {
        phase: ent.phase(facts.now),
        grants: ent.grants.clone(),
        subjects,
    };
    (assessment, ent.next_transition(facts.now), pins)
}

/// What becomes of the Role and RoleBinding; None when the Entitlement has never had any.
fn rbac_decision(facts: &Facts, assessment: &Assessment) -> Option<RbacDecision> {
    let ent = &facts.entitlement;
    let had = ent.status.as_ref().is_some_and(|s| s.kubernetes.is_some());
    if !had && ent.spec.kubernetes.is_none() {
        return None;
    }
    if !facts.kubernetes_access {
        return Some(RbacDecision::Known(RbacOutcome::Refused {
            message: access_disabled("spec.kubernetes"),
        }));
    }
    let (active, users) = match assessment {
        Assessment::Usable {
            phase, subjects, ..
        } => (
            *phase == Phase::Active,
            subjects
                .iter()
                .filter(|s| s.kubernetes_access)
                .flat_map(|s| s.kube_users.iter().cloned())
                .collect(),
        ),
        Assessment::Invalid { .. } => (false, vec![]),
    };
    let existing = facts.rbac.clone().unwrap_or_default();
    let plan = plan_rbac(ent, active, users);
    Some(rbac_writes(
        &existing,
        &ent.name_any(),
        &facts.namespace,
        None,
        plan,
    ))
}

/// The writes that carry out `plan` given what `existing`, for Entitlement `entitlement` (and,
/// when `owner_uid` is given, only objects owned by exactly that object).
pub fn rbac_writes(
    existing: &ExistingRbac,
    entitlement: &str,
    namespace: &str,
    owner_uid: Option<&str>,
    plan: RbacPlan,
) -> RbacDecision {
    let ours = |meta: &kube::api::ObjectMeta| is_ours(meta, entitlement, owner_uid);
    let binding_to_delete = existing
        .binding
        .as_ref()
        .filter(|b| ours(&b.metadata))
        .map(|b| b.uid());
    let role_to_delete = existing
        .role
        .as_ref()
        .filter(|r| ours(&r.metadata))
        .map(|r| r.uid());
    let writes = |role, binding, role_to_delete, outcome| {
        RbacDecision::Write(RbacWrites {
            role,
            binding,
            binding_to_delete: binding_to_delete.clone(),
            role_to_delete,
            outcome,
        })
    };
    match plan {
        RbacPlan::Remove => writes(None, None, role_to_delete, RbacOutcome::Removed),
        RbacPlan::Refuse(message) => writes(None, None, None, RbacOutcome::Refused { message }),
        RbacPlan::Apply { role, binding } => {
            if let Some(message) = foreign(existing, entitlement, namespace) {
                return RbacDecision::Known(RbacOutcome::Refused { message });
            }
            let users: Vec<String> = binding
                .iter()
                .flat_map(|b| b.subjects.iter().flatten())
                .map(|s| s.name.clone())
                .collect();
            let outcome = RbacOutcome::Applied {
                role: role.name_any(),
                role_binding: (!users.is_empty()).then(|| rbac_name(entitlement)),
                users,
            };
            writes(Some(role), binding, None, outcome)
        }
    }
}

/// Why an existing Role or RoleBinding of the name is not the Entitlement's to change.
fn foreign(existing: &ExistingRbac, entitlement: &str, namespace: &str) -> Option<String> {
    let not_ours = |meta: &kube::api::ObjectMeta| !is_ours(meta, entitlement, None);
    let role = existing.role.as_ref().map(|r| (&r.metadata, "Role"));
    let binding = existing
        .binding
        .as_ref()
        .map(|b| (&b.metadata, "RoleBinding"));
    let (meta, kind) = [role, binding]
        .into_iter()
        .flatten()
        .find(|(meta, _)| not_ours(meta))?;
    Some(format!(
        "{kind} {namespace}/{} exists and is not managed by this Entitlement; it is left untouched",
        meta.name.as_deref().unwrap_or_default()
    ))
}

/// The status, Events and requeue after binding, given what became of the RBAC.
pub fn conclude(facts: &Facts, binding: &Binding, rbac: Option<&RbacOutcome>) -> Conclusion {
    let ent = &facts.entitlement;
    let (mut status, pending) = desired_entitlement_status(
        ent.status.as_ref(),
        &binding.assessment,
        rbac,
        &ent.spec.justification,
        ent.metadata.generation,
        facts.now,
    );
    with_pins(&mut status, &binding.pins);
    // The cache may not show our own last write yet: neither write it again nor report it twice.
    let written = comparable_entitlement_status(&status);
    let changed = entitlement_status_changed(ent.status.as_ref(), &status)
        && facts.status_just_written != Some(fingerprint(&written));
    let requeue = match (pending, binding.next_transition) {
        (true, _) if binding_for_long(ent.status.as_ref(), facts.now) => {
            Requeue::After(SLOW_BINDING_RECHECK)
        }
        (true, _) => Requeue::After(BINDING_RECHECK),
        (false, Some(at)) => {
            let wait = (at - facts.now).as_seconds_f64().max(0.0) + 0.5;
            Requeue::After(std::time::Duration::from_secs_f64(wait))
        }
        (false, None) => Requeue::AwaitChange,
    };
    if !changed {
        return Conclusion {
            events: vec![],
            status: None,
            requeue,
        };
    }
    let events = [transition_event(ent, &status), rbac_event(ent, &status)];
    Conclusion {
        events: events.into_iter().flatten().collect(),
        status: Some(Box::new(status)),
        requeue,
    }
}

/// Records the pins of the named subjects, and says in `Ready` which named identities were
/// re-created since they were bound (they are not bound until the spec changes).
fn with_pins(status: &mut EntitlementStatus, pins: &Pins) {
    if pins.subjects.is_empty() && pins.replaced.is_empty() {
        return;
    }
    status.pinned_subjects = pins.subjects.clone();
    status.pinned_generation = pins.generation;
    if pins.replaced.is_empty() {
        return;
    }
    if let Some(ready) = status.conditions.iter_mut().find(|c| c.type_ == READY) {
        ready.message.push_str(&format!(
            "; not bound: {} re-created since it was bound (change the Entitlement's spec to bind \
             the new identity)",
            pins.replaced.join(", ")
        ));
    }
}

/// Whether the Entitlement has been waiting for its subjects for over a minute.
fn binding_for_long(status: Option<&EntitlementStatus>, now: OffsetDateTime) -> bool {
    status
        .and_then(|s| find_condition(&s.conditions, READY))
        .filter(|c| c.reason == "Binding")
        .and_then(|c| nhi_identity::timestamp::parse_rfc3339(&c.last_transition_time))
        .is_some_and(|since| now - since > time::Duration::MINUTE)
}

/// The Event when the Ready reason changes: bound, expired, scheduled, or unusable.
fn transition_event(ent: &Entitlement, status: &EntitlementStatus) -> Option<PlannedEvent> {
    let reason_of = |conditions: &[Condition]| {
        find_condition(conditions, READY).map(|c| (c.reason.clone(), c.message.clone()))
    };
    let before = ent.status.as_ref().and_then(|s| reason_of(&s.conditions));
    let (reason, message) = reason_of(&status.conditions)?;
    if before.as_ref().map(|(r, _)| r) == Some(&reason) {
        return None;
    }
    let (warning, event_reason) = match reason.as_str() {
        "Bound" => (false, "Bound"),
        "Expired" => (false, "Expired"),
        "NotYetActive" => (false, "Scheduled"),
        "Binding" => return None,
        other => (true, other),
    };
    let phase_note = match reason.as_str() {
        "NotYetActive" => format!(
            "grants apply from {}",
            ent.spec.not_before.clone().unwrap_or_default()
        ),
        _ => message,
    };
    Some(PlannedEvent {
        warning,
        reason: event_reason.to_string(),
        note: format!("{phase_note} (justification: {})", ent.spec.justification),
    })
}

/// The Event when the Kubernetes permissions are granted, change users, or are removed.
fn rbac_event(ent: &Entitlement, status: &EntitlementStatus) -> Option<PlannedEvent> {
    let of = |conditions: &[Condition]| {
        find_condition(conditions, KUBERNETES_RBAC).map(|c| (c.reason.clone(), c.message.clone()))
    };
    let before = ent.status.as_ref().and_then(|s| of(&s.conditions));
    let (reason, message) = of(&status.conditions)?;
    if before.as_ref() == Some(&(reason.clone(), message.clone())) {
        return None;
    }
    let event_reason = match reason.as_str() {
        "Bound" | "NoUsers" => "KubernetesAccessGranted",
        // Already reported as not Ready (RoleRefused).
        "RoleRefused" => return None,
        _ if before.is_none() => return None,
        _ => "KubernetesAccessRemoved",
    };
    Some(PlannedEvent {
        warning: false,
        reason: event_reason.to_string(),
        note: format!("{message} (justification: {})", ent.spec.justification),
    })
}
