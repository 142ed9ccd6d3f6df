//! Controllers: the MachineIdentity controller (`identity`), the Entitlement controller
//! (`entitlement`), the CA rotation controller, and what they share (events, reporting, the
//! Secret index, the workload watches, the signing CA). This module only wires their watches
//! together; each controller's context is built by the operator's entry point.

pub mod ca_rotation_controller;
pub mod compact_text;
pub mod entitlement;
pub mod error;
pub mod events;
pub mod identity;
pub mod identity_secret;
pub mod kube_access;
pub mod pod_certificate;
pub mod policy_status;
pub mod policy_watch;
pub mod reissue_pacing;
pub mod report;
pub mod secret_index;
pub mod signing_ca;
pub mod status;
pub mod status_memory;
pub mod status_write;
pub mod uid_key;
pub mod warning_limits;
pub mod workload_watch;

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tracing::info;

use crate::cache::IndexedWriter;
use crate::shutdown::Shutdown;
use ca_rotation_controller::{RotationContext, RotationSettings};
use entitlement::EntitlementContext;
use identity::context::IdentityContext;
use identity::watch::IdentitySources;
use nhi_api::{Entitlement, MachineIdentity};

/// What the controllers run on, besides their contexts.
pub struct Wiring<S> {
    /// The identity-Secret watch whose index is in the identity context.
    pub secret_stream: S,
    /// The writer of the identity cache whose reader the other contexts hold.
    pub identity_cache: IndexedWriter<MachineIdentity>,
    /// The writer of the Entitlement cache whose reader the identity context holds.
    pub entitlement_cache: IndexedWriter<Entitlement>,
    /// The receiving end of the channel the identity context asks for Entitlement refreshes on.
    pub entitlement_requests: UnboundedReceiver<ObjectRef<Entitlement>>,
    /// The watch filling the policy caches whose view the contexts hold.
    pub policy_watch: policy_watch::PolicyWatch,
    /// The controllers stop (gracefully) once it is requested.
    pub shutdown: Shutdown,
    /// The one namespace watched, or None for all.
    pub namespace: Option<String>,
    pub concurrency: u16,
}

/// Runs the MachineIdentity, Entitlement and CA rotation controllers until shutdown.
pub async fn run_controllers<S>(
    identity_ctx: Arc<IdentityContext>,
    entitlement_ctx: Arc<EntitlementContext>,
    (rotation_ctx, rotation): (RotationContext, RotationSettings),
    wiring: Wiring<S>,
) where
    S: futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
{
    let store = wiring.identity_cache.as_reader();
    let (to_identities, mut identity_requests) = unbounded_channel();
    if wiring.namespace.is_none() {
        let changes = wiring.policy_watch.changes();
        let (client, view) = (identity_ctx.client.clone(), identity_ctx.policies.clone());
        tokio::spawn(policy_status::run(client, view, changes));
    }
    tokio::spawn(wiring.policy_watch.run(policy_watch::Recheck {
        identities: store.clone(),
        entitlements: identity_ctx.entitlements.clone(),
        to_identities: to_identities.clone(),
        to_entitlements: identity_ctx.entitlement_trigger.clone(),
    }));
    identity_ctx
        .workloads
        .wire(store.clone(), to_identities.clone());
    tokio::spawn(ca_rotation_controller::run(
        rotation_ctx,
        store.store(),
        to_identities.clone(),
        rotation,
    ));
    let entitlement_controller = entitlement::run(
        entitlement_ctx,
        wiring.entitlement_cache,
        wiring.entitlement_requests,
        to_identities,
        (wiring.namespace.clone(), wiring.concurrency),
        wiring.shutdown.clone(),
    );
    // What the other controllers ask for (a CA rotation or a policy change asks for every
    // identity) goes through the identity controller's timer, due at once, paced with the rest.
    let wakeups = identity_ctx.wakeups.clone();
    tokio::spawn(async move {
        while let Some(obj) = identity_requests.recv().await {
            let namespace = obj.namespace.as_deref().unwrap_or_default();
            wakeups.wake_after(namespace, &obj.name, std::time::Duration::ZERO);
        }
    });
    let requests = identity_ctx.wakeups.clone().due();
    let identity_controller = identity::watch::run(
        identity_ctx,
        IdentitySources {
            secrets: wiring.secret_stream,
            cache: wiring.identity_cache,
            requests,
            namespace: wiring.namespace,
            concurrency: wiring.concurrency,
            shutdown: wiring.shutdown,
        },
    );
    tokio::join!(identity_controller, entitlement_controller);
    info!("controllers stopped");
}
