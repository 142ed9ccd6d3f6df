//! The MachineIdentity controller: observe → plan → apply.
//!
//! - [`facts::observe`] gathers what a reconcile decides from (the identity, what is known of its
//!   Secret, the Entitlements of its namespace, its workload, the CA, the operator's memory of
//!   revocations and status writes, the moment) into plain [`facts::Facts`]. It only reads.
//! - [`plan::plan`] decides, purely, every step: finalizer, lifecycle Events, trust bundle,
//!   revocations, the Secret write or key stripping, the status, Events, metrics and when to look
//!   again.
//! - [`apply::apply`] carries the steps out, and nothing else.
//!
//! Signing is an apply step driven by the plan: the plan says "issue a certificate for this
//! `LeafRequest`" ([`plan::Step::Issue`]); apply generates the key and signs in `spawn_blocking`,
//! obtains the Kubernetes client credential, writes the Secret, and reports what became of it
//! to the pure [`plan::settle`], which plans the rest by the same rules that conclude a plan
//! without issuance. A revocation's answer likewise picks between branches the plan laid out.

pub mod apply;
pub mod context;
pub mod facts;
mod issuance;
pub mod memory;
pub mod plan;
mod remembered_certificate;
pub mod settings;
pub mod wakeup_timer;
mod wakeups;
pub mod watch;

use std::sync::Arc;

use kube::runtime::controller::Action;

use crate::controller::error::ReconcileError;
use crate::controller::report::{Reportable, report_failure};
use context::IdentityContext;
use nhi_api::MachineIdentity;

/// Reconciles one MachineIdentity.
pub async fn reconcile(
    mi: Arc<MachineIdentity>,
    ctx: Arc<IdentityContext>,
) -> Result<Action, ReconcileError> {
    let _timer = ctx.reporter.metrics.time_reconcile();
    let _counted = ctx.reporter.metrics.count_reconcile("machineidentity");
    let facts = facts::observe(mi, &ctx).await?;
    let plan = plan::plan(&facts, &ctx.settings);
    apply::apply(&ctx, &facts, plan).await
}

/// What to do after a failed reconcile: report it (see [`report_failure`]) and retry; soon when
/// the cache is about to show what it missed.
pub fn error_policy(
    mi: Arc<MachineIdentity>,
    err: &ReconcileError,
    ctx: Arc<IdentityContext>,
) -> Action {
    report_failure(&ctx.reporter, mi.as_ref(), err);
    if err.transient() {
        return Action::requeue(std::time::Duration::from_millis(500));
    }
    let jitter = rand::random_range(0..2000);
    Action::requeue(std::time::Duration::from_millis(3000 + jitter))
}
