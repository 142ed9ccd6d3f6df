//! The Entitlement controller: bind the grants to the certificates of the identities it selects,
//! record the thumbprints, materialise its Kubernetes rules as a Role and RoleBinding, report the
//! phase. Observe ([`facts`]) → plan ([`plan`], pure) → apply ([`apply`]): the RBAC writes'
//! outcome is turned into the status and Events by the pure [`plan::conclude`].

pub mod apply;
pub mod context;
pub mod error;
pub mod facts;
pub mod plan;
pub mod rbac;
pub mod status;
#[cfg(test)]
mod tests;
pub mod watch;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tracing::warn;

use super::report::report_failure;
use crate::cache::IndexedWriter;
use crate::kube_api::scoped_api;
use crate::shutdown::Shutdown;
pub use context::EntitlementContext;
pub use error::EntitlementError;
use nhi_api::{Entitlement, MachineIdentity};
use nhi_core::labels;

/// Reconciles one Entitlement.
pub async fn reconcile(
    ent: Arc<Entitlement>,
    ctx: Arc<EntitlementContext>,
) -> Result<Action, EntitlementError> {
    let _counted = ctx.reporter.metrics.count_reconcile("entitlement");
    let facts = facts::observe(ent, &ctx).await?;
    let plan = plan::plan(&facts);
    apply::apply(&ctx, &facts, plan).await
}

/// What to do after a failed reconcile: report it (see [`report_failure`]), retry soon.
pub fn error_policy(
    ent: Arc<Entitlement>,
    err: &EntitlementError,
    ctx: Arc<EntitlementContext>,
) -> Action {
    report_failure(&ctx.reporter, ent.as_ref(), err);
    let jitter = rand::random_range(0..2000);
    Action::requeue(std::time::Duration::from_millis(3000 + jitter))
}

/// Runs the Entitlement controller until shutdown: Entitlements from `cache`'s watch (their
/// changes also sent to `to_identities` as the identities they may affect), their Roles and
/// RoleBindings (a change by someone else is put right), and `requests` from the identity
/// controller; until `shutdown` is requested.
pub async fn run(
    ctx: Arc<EntitlementContext>,
    cache: IndexedWriter<Entitlement>,
    mut requests: UnboundedReceiver<ObjectRef<Entitlement>>,
    to_identities: UnboundedSender<ObjectRef<MachineIdentity>>,
    (namespace, concurrency): (Option<String>, u16),
    shutdown: Shutdown,
) {
    let store = cache.as_reader().store();
    let changes = watch::entitlement_stream(
        ctx.client.clone(),
        namespace.as_deref(),
        cache,
        ctx.identities.clone(),
        to_identities,
        ctx.health.clone(),
    );
    let ours =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let roles: Api<Role> = scoped_api(ctx.client.clone(), namespace.as_deref());
    let role_bindings: Api<RoleBinding> = scoped_api(ctx.client.clone(), namespace.as_deref());
    let mut controller = Controller::for_stream(changes, store.clone());
    if ctx.kubernetes_access {
        controller = controller
            .owns(roles, ours.clone())
            .owns(role_bindings, ours);
    }
    controller
        .reconcile_on(futures::stream::poll_fn(move |cx| requests.poll_recv(cx)))
        .with_config(Config::default().concurrency(concurrency.clamp(1, 4)))
        .graceful_shutdown_on(shutdown.requested_once_ready(store.clone()))
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "entitlement controller error");
            }
        })
        .await;
}
