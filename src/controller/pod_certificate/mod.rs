//! The pod-certificate signer `nhi.dev/identity`: answers the PodCertificateRequests kubelets
//! create for `podCertificate` volumes, and publishes its roots as a ClusterTrustBundle. Each is bound to the MachineIdentity covering the pod's
//! ServiceAccount (`spec.podCertificates`) and answered once: Issued with the identity's leaf for
//! the pod's own key (generated on the node, never seen here), or Denied with a stable reason
//! (observe → plan → apply).

pub mod apply;
pub mod context;
pub mod facts;
pub mod plan;
pub mod record;
pub mod record_queue;
#[cfg(test)]
mod tests;
pub mod trust_bundle;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::certificates::v1::PodCertificateRequest;
use kube::runtime::controller::{Action, Config, Controller};
use kube::runtime::watcher;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::shutdown::Shutdown;
use context::PodCertContext;
use plan::Plan;

/// Whether the cluster serves PodCertificateRequests (certificates.k8s.io/v1, Kubernetes 1.37).
pub async fn api_available(client: &Client) -> bool {
    let api: Api<PodCertificateRequest> = Api::all(client.clone());
    match api.list(&kube::api::ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(kube::Error::Api(e)) if e.code == 404 => false,
        // Forbidden or otherwise: the API exists; the watch reports the rest.
        Err(_) => true,
    }
}

/// Starts the signer once the caches it decides from have synced (a request denied for want of
/// a cached identity would stay denied for its pod), unless the cluster lacks the API.
pub async fn start(
    ctx: Arc<PodCertContext>,
    namespace: Option<String>,
    shutdown: Shutdown,
    health: Arc<crate::health::Health>,
) {
    if !api_available(&ctx.client).await {
        warn!(
            "this cluster does not serve certificates.k8s.io/v1 PodCertificateRequests \
             (Kubernetes 1.37 and later): the pod-certificate signer {} is off",
            ctx.signer
        );
        return;
    }
    let synced =
        |flag: &std::sync::atomic::AtomicBool| flag.load(std::sync::atomic::Ordering::Relaxed);
    let ready = async {
        while !(ctx.policies.is_synced()
            && synced(&health.identities_synced)
            && synced(&health.entitlements_synced))
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::spawn(trust_bundle::run(
        ctx.client.clone(),
        ctx.signer.clone(),
        ctx.ca.clone(),
        shutdown.clone(),
    ));
    tokio::select! {
        _ = ready => run(ctx, namespace, shutdown).await,
        _ = shutdown.clone().requested() => {},
    }
}

/// Runs the signer until shutdown. `namespace` limits it like the other controllers.
pub async fn run(ctx: Arc<PodCertContext>, namespace: Option<String>, shutdown: Shutdown) {
    let api: Api<PodCertificateRequest> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let selector = watcher::Config::default().fields(&format!("spec.signerName={}", ctx.signer));
    info!(signer = %ctx.signer, "pod-certificate signer started");
    Controller::new(api, selector)
        .with_config(Config::default().concurrency(ctx.concurrency))
        .graceful_shutdown_on(shutdown.requested())
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "pod-certificate signer error");
            }
        })
        .await;
}

/// Why a request could not be answered this time (it stays pending and is looked at again: a
/// denial is final for the pod, so a passing failure never becomes one).
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("reading or answering the request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Record(String),
}

async fn reconcile(
    pcr: Arc<PodCertificateRequest>,
    ctx: Arc<PodCertContext>,
) -> Result<Action, SignerError> {
    if pcr.spec.signer_name != ctx.signer || answered(&pcr) {
        return Ok(Action::await_change());
    }
    let mut facts = facts::observe(&pcr, &ctx).await?;
    let mut decided = plan::plan(&facts, &ctx.issuance, ctx.review_warning);
    if let Plan::Deny(d) = &decided
        && plan::about_identities(d)
    {
        // Final for the pod: made again with the identities listed from the API.
        facts.claimants = facts::live_claimants(&ctx, &facts.namespace).await?;
        decided = plan::plan(&facts, &ctx.issuance, ctx.review_warning);
    }
    match decided {
        Plan::Wait(after) => Ok(Action::requeue(after)),
        Plan::Deny(denial) => {
            apply::deny(&ctx, &pcr, &denial).await?;
            Ok(Action::await_change())
        }
        Plan::Issue(issuance) => match apply::issue(&ctx, &pcr, &issuance, facts.now).await? {
            apply::Answered::Yes => Ok(Action::await_change()),
            apply::Answered::RecordFull => Ok(Action::requeue(Duration::from_secs(60))),
        },
    }
}

/// Whether the request already has its answer (Issued, Denied or Failed).
pub fn answered(pcr: &PodCertificateRequest) -> bool {
    pcr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| matches!(c.type_.as_str(), "Issued" | "Denied" | "Failed"))
        })
}

fn error_policy(
    pcr: Arc<PodCertificateRequest>,
    err: &SignerError,
    ctx: Arc<PodCertContext>,
) -> Action {
    ctx.reporter.metrics.count_failure("PodCertificateRetry");
    warn!(
        request = %kube::ResourceExt::name_any(pcr.as_ref()),
        error = %err, "pod certificate request not answered; retrying"
    );
    Action::requeue(Duration::from_secs(2))
}
