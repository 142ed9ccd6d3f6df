//! Plan: what a MachineIdentity reconcile does, decided from its [`Facts`] alone. Pure: no
//! client, no async, no clock (the moment is a fact).
//!
//! A plan is a list of [`Step`]s that apply carries out in order. Two kinds of step have an
//! answer that later steps depend on, and the plan lays out what follows each answer:
//! - [`Step::Revoke`]: whether certificates were newly revoked picks one of two branches, and a
//!   failure either fails the reconcile or, for a deletion, is answered by
//!   [`deletion_not_recorded`];
//! - [`Step::Issue`]: what became of the issuance ([`IssueReport`]) is turned into the rest of the
//!   plan by [`settle`], with the same rules that conclude a plan without issuance.

mod conclude;
mod governance;
mod keep;
mod settle;
mod steps;
#[cfg(test)]
pub(crate) mod tests;

use kube::ResourceExt;

use super::facts::Facts;
pub use super::settings::{LifecyclePolicy, Settings};
use crate::settings::parse_go_duration;
use nhi_api::Condition;
use nhi_core::labels::REVOKE_FINALIZER;
use nhi_core::lifecycle::review::{parse_review_date, review_state};
use nhi_core::lifecycle::verdict::{
    Lifecycle, LifecycleAction, WORKLOAD_FOUND, WORKLOAD_MISSING, carry_while_starting, decide,
    lifecycle_conditions, transition_events,
};
use nhi_core::lifecycle::workload::workload_state;

pub use governance::{deletion_not_recorded, revoke_request_refused};
pub use settle::settle;
pub use steps::*;

/// How soon an identity is looked at again while the Entitlement cache is incomplete.
const ENTITLEMENTS_SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The plan for the reconcile whose facts are `facts`.
pub fn plan(facts: &Facts, settings: &Settings) -> Plan {
    let mi = &facts.identity;
    if mi.metadata.deletion_timestamp.is_some() {
        return Plan::of(governance::deletion(facts));
    }
    if !facts.entitlements_synced {
        // Grants are resolved from the Entitlement cache: issuing before it is complete would
        // issue certificates without grants, then issue them again.
        return Plan::of(vec![Step::Finish(Requeue::After(ENTITLEMENTS_SYNC_WAIT))]);
    }
    let mut steps = vec![];
    // Every identity that may hold a certificate carries the finalizer that revokes it.
    if !mi.finalizers().iter().any(|f| f == REVOKE_FINALIZER) {
        steps.push(Step::AddFinalizer);
    }
    let lifecycle = assess_lifecycle(facts, settings);
    let previous = previous_conditions(facts);
    let conditions = carry_while_starting(
        lifecycle_conditions(&lifecycle, mi.spec.workload_ref.as_deref()),
        &lifecycle,
        previous,
    );
    for e in transition_events(previous, &conditions) {
        steps.push(Step::Publish(PlannedEvent::new(
            e.warning, &e.reason, e.message,
        )));
    }
    match lifecycle.action {
        LifecycleAction::Retire(cause) => {
            steps.extend(governance::retire(facts, &lifecycle, cause));
        }
        LifecycleAction::Suspend => {
            steps.extend(trust_bundle_refresh(facts));
            steps.extend(governance::suspend(facts, &lifecycle, conditions));
        }
        LifecycleAction::Keep => {
            steps.extend(trust_bundle_refresh(facts));
            steps.extend(keep::keep(facts, settings, &lifecycle, conditions));
        }
    }
    Plan::of(steps)
}

fn previous_conditions(facts: &Facts) -> &[Condition] {
    facts
        .identity
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default()
}

/// The lifecycle verdict: the review state, the workload's, and what they ask for.
fn assess_lifecycle(facts: &Facts, settings: &Settings) -> Lifecycle {
    let mi = &facts.identity;
    let warning = settings.lifecycle.review_warning;
    let review_by = mi.spec.review_by.as_deref().and_then(parse_review_date);
    let review = review_state(review_by, warning, facts.now);
    // The clock of a missing workload starts when it was first seen missing: the transition time
    // of the WorkloadFound condition, which survives restarts.
    let missing_since = previous_conditions(facts)
        .iter()
        .find(|c| c.type_ == WORKLOAD_FOUND)
        .filter(|c| c.status == "False" && c.reason == WORKLOAD_MISSING)
        .and_then(|c| nhi_identity::timestamp::parse_rfc3339(&c.last_transition_time));
    let grace = mi
        .spec
        .workload_ref
        .as_ref()
        .and_then(|w| w.grace_period.as_deref())
        .and_then(|g| parse_go_duration(g).ok())
        .unwrap_or(settings.lifecycle.workload_grace);
    let workload = workload_state(facts.workload.clone(), missing_since, grace, facts.now);
    decide(
        review,
        workload,
        mi.spec.on_review_lapse.unwrap_or_default(),
        warning,
    )
}

/// The Secret's trust bundle follows the CA's (a rotation publishes the next root in it),
/// whatever else happens to the identity, unless it is going away: a merge patch of `ca.crt` at
/// the indexed version, and the certificate known there is known at the new one too.
fn trust_bundle_refresh(facts: &Facts) -> Vec<Step> {
    let Some(seen) = facts.secret.indexed_ours(&facts.uid) else {
        return vec![];
    };
    if seen.trust_bundle.as_deref() == Some(facts.ca.bundle_fingerprint()) {
        return vec![];
    }
    let version = seen.resource_version.clone();
    let mut steps = vec![Step::RefreshTrustBundle {
        version: version.clone(),
    }];
    if let Some(known) = &facts.secret.known {
        steps.push(Step::RememberCertificate {
            version: Some(version),
            certificate: known.clone(),
        });
    }
    steps
}
