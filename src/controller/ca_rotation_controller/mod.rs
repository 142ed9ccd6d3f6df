//! The CA rotation controller: follows the CA Secret, keeps the signing CA in memory in step with
//! it, and moves a rotation through its phases (decided in `ca::rotation`): publish the next root
//! next to the current one, wait until every bundle carries both, switch, re-issue, drop the old.
//! Each look at the CA Secret is observe ([`facts`]) → plan ([`plan`], pure) → apply ([`apply`]);
//! making the next root is an apply step whose result the pure [`plan::start`] turns into the
//! write that starts the rotation.

pub mod apply;
pub mod context;
pub mod error;
pub mod facts;
pub mod plan;
#[cfg(test)]
mod tests;

use std::time::Duration as StdDuration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc::UnboundedSender;

use super::report::report_failure;
pub use context::{RotationContext, RotationSettings, Rotator};
pub use error::RotationError;
use nhi_api::MachineIdentity;

/// How soon a look that failed is tried again.
const RETRY: StdDuration = StdDuration::from_secs(5);

/// Runs the rotation controller until the process stops: a look at the CA Secret on each of its
/// changes, and when the phase may call for a step.
pub async fn run(
    ctx: RotationContext,
    identities: Store<MachineIdentity>,
    to_identities: UnboundedSender<ObjectRef<MachineIdentity>>,
    settings: RotationSettings,
) {
    let loc = &settings.location;
    let mut changes = watcher(
        Api::<PartialObjectMeta<Secret>>::namespaced(ctx.client.clone(), &loc.namespace),
        watcher::Config::default().fields(&format!("metadata.name={}", loc.secret_name)),
    )
    .backoff(crate::kube_api::watch_backoff())
    .boxed();
    let mut rotator = Rotator {
        ctx,
        identities,
        to_identities,
        settings,
        reported: None,
        adopted: None,
    };
    let mut wait = StdDuration::ZERO;
    loop {
        tokio::select! {
            change = changes.next() => if change.is_none() { break },
            _ = tokio::time::sleep(wait) => {},
        }
        wait = match rotator.look_at_ca_secret().await {
            Ok(w) => w,
            Err(e) => {
                report_failure(&rotator.ctx.reporter, &rotator.ca_secret_ref(), &e);
                RETRY
            }
        };
    }
}

impl Rotator {
    /// One look at the CA Secret: adopts what it holds and takes the rotation's next step;
    /// returns when to look again.
    async fn look_at_ca_secret(&mut self) -> Result<StdDuration, RotationError> {
        let facts = facts::observe(
            &self.ctx,
            &self.identities,
            &self.settings.location,
            self.settings.scope.as_deref(),
            (self.adopted.as_deref(), self.reported.clone()),
        )
        .await?;
        let rate = self.ctx.pacing.per_second();
        let plan = plan::plan(&facts, &self.settings.policy, rate);
        apply::apply(self, &facts, plan).await
    }

    /// The CA Secret as an object to report about (it may be gone).
    fn ca_secret_ref(&self) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(self.settings.location.secret_name.clone()),
                namespace: Some(self.settings.location.namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        }
    }
}
