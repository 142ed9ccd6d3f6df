//! Writes each IdentityPolicy's status (how many namespaces it selects, whether it is in force as
//! written) shortly after a policy or a namespace changes. Only an operator watching every
//! namespace writes it: a namespace-scoped one sees one namespace.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tracing::warn;

use super::policy_watch::PolicyView;
use nhi_api::condition::{merge_conditions, without_transition_times};
use nhi_api::{IdentityPolicy, IdentityPolicyStatus};
use nhi_core::labels::FIELD_MANAGER;
use nhi_core::policy::status::policy_status;
use nhi_identity::timestamp::rfc3339;

/// How long changes are gathered before the statuses are written.
const DEBOUNCE: Duration = Duration::from_secs(1);

/// Writes the statuses each time `changed` is notified, until shutdown.
pub async fn run(client: Client, view: PolicyView, changed: Arc<Notify>) {
    loop {
        changed.notified().await;
        tokio::time::sleep(DEBOUNCE).await;
        write_statuses(&client, &view).await;
    }
}

async fn write_statuses(client: &Client, view: &PolicyView) {
    let namespaces = view.namespaces.state();
    let labels: Vec<_> = namespaces.iter().map(|ns| ns.labels()).collect();
    let api: Api<IdentityPolicy> = Api::all(client.clone());
    let now = rfc3339(OffsetDateTime::now_utc());
    for policy in view.policies.state() {
        let (selected, ready) = policy_status(&policy.spec, &labels);
        let previous = policy.status.clone().unwrap_or_default();
        let generation = policy.metadata.generation;
        let status = IdentityPolicyStatus {
            conditions: merge_conditions(&previous.conditions, vec![ready], generation, &now),
            observed_generation: generation,
            selected_namespaces: selected,
        };
        let same = |s: &IdentityPolicyStatus| IdentityPolicyStatus {
            conditions: without_transition_times(&s.conditions),
            ..s.clone()
        };
        if same(&status) == same(&previous) {
            continue;
        }
        let patch = serde_json::json!({
            "apiVersion": IdentityPolicy::api_version(&()),
            "kind": IdentityPolicy::kind(&()),
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if let Err(e) = api
            .patch_status(&policy.name_any(), &params, &Patch::Apply(&patch))
            .await
        {
            warn!(policy = %policy.name_any(), error = %e, "cannot write the IdentityPolicy's status");
        }
    }
}
