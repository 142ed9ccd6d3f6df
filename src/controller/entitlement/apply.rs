//! Apply: carries out an Entitlement plan, and nothing else: the RBAC writes, then what
//! [`plan::conclude`] makes of their outcome (Events, the status, the requeue).

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::context::EntitlementContext;
use super::error::EntitlementError;
use super::facts::Facts;
use super::plan::{self, Plan, RbacDecision, Requeue};
use super::rbac::write_rbac;
use super::status::comparable_entitlement_status;
use nhi_api::Entitlement;
use nhi_core::labels::FIELD_MANAGER;

/// Carries out `plan` for the Entitlement of `facts`.
pub async fn apply(
    ctx: &EntitlementContext,
    facts: &Facts,
    plan: Plan,
) -> Result<Action, EntitlementError> {
    let binding = match plan {
        Plan::AwaitChange => return Ok(Action::await_change()),
        Plan::WaitForIdentities(wait) => return Ok(Action::requeue(wait)),
        Plan::Bind(binding) => binding,
    };
    let ent = facts.entitlement.as_ref();
    let rbac = match binding.rbac.clone() {
        None => None,
        Some(RbacDecision::Known(outcome)) => Some(outcome),
        Some(RbacDecision::Write(writes)) => {
            Some(write_rbac(&ctx.client, &facts.namespace, &ent.name_any(), writes).await?)
        }
    };
    let conclusion = plan::conclude(facts, &binding, rbac.as_ref());
    for e in conclusion.events {
        let type_ = match e.warning {
            true => EventType::Warning,
            false => EventType::Normal,
        };
        ctx.reporter.publish(ent, type_, &e.reason, e.note);
    }
    if let Some(status) = conclusion.status {
        write_status(ctx, facts, &status).await?;
    }
    Ok(match conclusion.requeue {
        Requeue::After(d) => Action::requeue(d),
        Requeue::AwaitChange => Action::await_change(),
    })
}

/// Writes the status (server-side apply) and remembers it was written.
async fn write_status(
    ctx: &EntitlementContext,
    facts: &Facts,
    status: &nhi_api::EntitlementStatus,
) -> Result<(), EntitlementError> {
    let ent = facts.entitlement.as_ref();
    let api: Api<Entitlement> = Api::namespaced(ctx.client.clone(), &facts.namespace);
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
    let uid = ent.metadata.uid.clone().unwrap_or_default();
    ctx.recent_statuses
        .remember(&uid, &comparable_entitlement_status(status));
    Ok(())
}
