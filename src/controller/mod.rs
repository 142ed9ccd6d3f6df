//! Controllers: wiring watches to reconcilers.

pub mod ca_rollout;
pub mod ca_rotation;
pub mod context;
pub mod entitlement;
pub mod entitlement_rbac;
pub mod entitlement_status;
pub mod entitlement_watch;
pub mod error;
pub mod events;
pub mod identity_secret;
pub mod kube_access;
pub mod lifecycle;
pub mod machine_identity;
pub mod secret_index;
pub mod status;
pub mod workload_watch;
pub mod written;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tracing::{info, warn};

use crate::api::{Entitlement, MachineIdentity};
use crate::health::Health;
use crate::kube_api::scoped_api;
use crate::labels;
use crate::revoke::service::{RevocationConfig, RevocationDeps};
use context::Context;
use entitlement::EntitlementContext;
use secret_index::SecretIndex;

/// The identity-Secret watch: metadata only (no keys or certificates in memory), and only the
/// operator's labelled Secrets, kept as a compact index of versions rather than a cache.
pub fn identity_secret_watch(
    client: Client,
    namespace: Option<&str>,
    health: Arc<Health>,
) -> (
    Arc<SecretIndex>,
    impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
) {
    let api: Api<PartialObjectMeta<Secret>> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let index = Arc::new(SecretIndex::default());
    let writer = index.clone();
    let cfg = watcher::Config::default().labels(&labels::identity_secret_selector());
    let stream = watcher(api, cfg)
        .default_backoff()
        .inspect(move |ev| {
            if let Ok(ev) = ev {
                writer.apply(ev);
                if let watcher::Event::InitDone = ev {
                    health.secrets_synced.store(true, Ordering::Relaxed);
                }
            }
        })
        .touched_objects();
    (index, stream)
}

/// The annotation `kubectl apply` (client-side) keeps the last applied manifest in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Runs the MachineIdentity and Entitlement controllers until shutdown. `secret_stream` must be
/// the stream whose index is in `ctx`, `entitlements` the writer of `ctx.entitlements`, and
/// `entitlement_requests` the receiving end of the channel `ctx` asks for Entitlement refreshes on.
#[allow(clippy::too_many_arguments)]
pub async fn run_controllers(
    ctx: Arc<Context>,
    (revocations, revocation_config): (crate::revoke::handle::Inbox, RevocationConfig),
    secret_stream: impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>>
    + Send
    + 'static,
    entitlements: reflector::store::Writer<Entitlement>,
    mut entitlement_requests: UnboundedReceiver<ObjectRef<Entitlement>>,
    namespace: Option<String>,
    concurrency: u16,
    health: Arc<Health>,
    rotation: ca_rotation::RotationSettings,
) {
    let (store, writer) = reflector::store();
    let (to_identities, mut identity_requests) = unbounded_channel();
    ctx.workloads.wire(store.clone(), to_identities.clone());
    tokio::spawn(ca_rotation::run(
        ctx.clone(),
        store.clone(),
        to_identities.clone(),
        rotation,
    ));
    tokio::spawn(crate::revoke::service::run(
        revocations,
        RevocationDeps {
            client: ctx.client.clone(),
            ca: ctx.ca_handle(),
            identities: store.clone(),
            health: health.clone(),
            metrics: ctx.metrics.clone(),
        },
        revocation_config,
    ));
    let entitlement_store = entitlements.as_reader();
    let entitlement_changes = entitlement_watch::entitlement_stream(
        ctx.client.clone(),
        namespace.as_deref(),
        entitlements,
        store.clone(),
        to_identities,
        health.clone(),
    );
    let entitlement_ctx = Arc::new(EntitlementContext {
        client: ctx.client.clone(),
        identities: store.clone(),
        events: ctx.events.clone(),
        metrics: ctx.metrics.clone(),
        kubernetes_access: ctx.kube_endpoint.is_some(),
        health: health.clone(),
        written: written::WrittenStatuses::default(),
    });
    // The Roles and RoleBindings of Entitlements: a change by someone else is put right.
    let ours =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::MANAGER));
    let roles: Api<Role> = scoped_api(ctx.client.clone(), namespace.as_deref());
    let role_bindings: Api<RoleBinding> = scoped_api(ctx.client.clone(), namespace.as_deref());
    let mut entitlement_controller = Controller::for_stream(entitlement_changes, entitlement_store);
    if ctx.kube_endpoint.is_some() {
        entitlement_controller = entitlement_controller
            .owns(roles, ours.clone())
            .owns(role_bindings, ours);
    }
    let entitlement_controller = entitlement_controller
        .reconcile_on(futures::stream::poll_fn(move |cx| {
            entitlement_requests.poll_recv(cx)
        }))
        .with_config(Config::default().concurrency(concurrency.clamp(1, 4)))
        .shutdown_on_signal()
        .run(
            entitlement::reconcile,
            entitlement::error_policy,
            entitlement_ctx,
        )
        .for_each(|res| async move {
            if let Err(e) = res {
                warn!(error = %e, "entitlement controller error");
            }
        });
    let identity_requests = futures::stream::poll_fn(move |cx| identity_requests.poll_recv(cx));
    let identity_controller = run_machine_identities(
        ctx,
        secret_stream,
        (store, writer),
        identity_requests,
        namespace,
        concurrency,
        health.clone(),
    );
    tokio::join!(identity_controller, entitlement_controller);
    info!("controllers stopped");
}

/// Runs the MachineIdentity controller until shutdown.
async fn run_machine_identities(
    ctx: Arc<Context>,
    secret_stream: impl futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>>
    + Send
    + 'static,
    (store, writer): (
        reflector::Store<MachineIdentity>,
        reflector::store::Writer<MachineIdentity>,
    ),
    requests: impl futures::Stream<Item = ObjectRef<MachineIdentity>> + Send + 'static,
    namespace: Option<String>,
    concurrency: u16,
    health: Arc<Health>,
) {
    let api: Api<MachineIdentity> = scoped_api(ctx.client.clone(), namespace.as_deref());
    // Status-only changes (our own writes) do not trigger a reconcile.
    let forget_ctx = ctx.clone();
    let refresh_ctx = ctx.clone();
    let filter_ctx = ctx.clone();
    // Every identity a (re)list returns is reconciled, changed or not: whatever happened to its
    // Secret while the watches were down is found and put right.
    let relisting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relist_flag = relisting.clone();
    let forget_health = health.clone();
    let identities = watcher(api, watcher::Config::default())
        .default_backoff()
        // Managed fields are the bulk of a small object; reconciles never read them.
        .modify(|mi: &mut MachineIdentity| {
            mi.metadata.managed_fields = None;
            // kubectl's client-side apply copy of the whole manifest: never read, often the
            // largest field.
            if let Some(a) = mi.metadata.annotations.as_mut() {
                a.remove(LAST_APPLIED);
                if a.is_empty() {
                    mi.metadata.annotations = None;
                }
            }
        })
        // Deleted identities leave the metrics and the written-status memory; the first complete
        // list marks the identity cache as synced (for /readyz).
        .inspect(move |ev| {
            if let Ok(watcher::Event::Init) = ev {
                relist_flag.store(true, Ordering::Relaxed);
            }
            if let Ok(watcher::Event::InitDone) = ev {
                relist_flag.store(false, Ordering::Relaxed);
                forget_health
                    .identities_synced
                    .store(true, Ordering::Relaxed);
            }
            if let Ok(watcher::Event::Apply(mi)) = ev {
                forget_ctx
                    .revoker
                    .identity_seen(mi.metadata.namespace.as_deref().unwrap_or_default());
                lifecycle::revoke_early(&forget_ctx, mi);
            }
            if let Ok(watcher::Event::InitDone) = ev {
                forget_ctx.revoker.identity_gone();
            }
            if let Ok(watcher::Event::Delete(mi)) = ev {
                use kube::ResourceExt;
                forget_ctx.revoker.identity_gone();
                forget_ctx
                    .metrics
                    .forget(&mi.namespace().unwrap_or_default(), &mi.name_any());
                forget_ctx.forget(mi.metadata.uid.as_deref().unwrap_or_default());
            }
        })
        .reflect(writer)
        // An identity's new certificate (in its status), new labels or deletion: the Entitlements
        // that select it or list it refresh their bindings, from the cache that now shows it.
        .inspect(move |ev| {
            // A complete identity list: every Entitlement looks at its subjects again.
            if let Ok(watcher::Event::InitDone) = ev {
                for e in refresh_ctx.entitlements.state() {
                    refresh_ctx.refresh_entitlement(
                        e.metadata.namespace.as_deref().unwrap_or_default(),
                        &e.name_any(),
                    );
                }
            }
            if let Ok(watcher::Event::Apply(mi) | watcher::Event::Delete(mi)) = ev {
                let entitlements = refresh_ctx.entitlements.state();
                for e in entitlement_watch::entitlements_to_refresh(mi, &entitlements) {
                    refresh_ctx
                        .refresh_entitlement(e.namespace.as_deref().unwrap_or_default(), &e.name);
                }
            }
        })
        .applied_objects()
        .filter(move |mi| {
            // Errors pass through (the controller reports them); objects when they changed, and all
            // of them during a relist.
            futures::future::ready(mi.as_ref().map_or(true, |mi| {
                let changed = filter_ctx.worth_reconciling(mi);
                changed || relisting.load(Ordering::Relaxed)
            }))
        });
    health.controller_alive.store(true, Ordering::Relaxed);
    Controller::for_stream(identities, store)
        .owns_stream(secret_stream)
        .reconcile_on(requests)
        .with_config(Config::default().concurrency(concurrency))
        .shutdown_on_signal()
        .run(
            machine_identity::reconcile,
            machine_identity::error_policy,
            ctx,
        )
        .for_each(|res| async move {
            match res {
                // A trigger for an identity deleted meanwhile (its Secret collected after it).
                Err(kube::runtime::controller::Error::ObjectNotFound(o)) => {
                    tracing::debug!(object = %o, "identity gone before its reconcile")
                }
                Err(e) => warn!(error = %e, "controller error"),
                Ok(_) => {}
            }
        })
        .await;
    health.controller_alive.store(false, Ordering::Relaxed);
    info!("MachineIdentity controller stopped");
}
