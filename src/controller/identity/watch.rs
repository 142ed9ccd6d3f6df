//! The MachineIdentity controller's watches and loop: identities (reconciled when they change in
//! a way that may change their certificate, and all of them on a relist), their Secrets
//! (metadata only, into an index), and requests from the other controllers.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::context::IdentityContext;
use super::wakeup_timer::WakeupTimer;
use crate::cache::IndexedWriter;
use crate::controller::entitlement::watch as entitlement_watch;
use crate::controller::secret_index::SecretIndex;
use crate::controller::uid_key::{UidKey, uid_key};
use crate::health::Health;
use crate::kube_api::scoped_api;
use crate::revoke::Reason;
use crate::shutdown::Shutdown;
use nhi_api::MachineIdentity;
use nhi_core::labels::{self, REVOKE_FINALIZER};
use nhi_core::lifecycle::certificates::every_revocation;

/// The annotation `kubectl apply` (client-side) keeps the last applied manifest in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The identity-Secret watch: metadata only (no keys or certificates in memory), and only the
/// operator's labelled Secrets, kept as a compact index of versions rather than a cache. A
/// change to a Secret triggers its identity; a relisted Secret asks for it through the timer.
pub fn identity_secret_watch(
    client: Client,
    namespace: Option<&str>,
    health: Arc<Health>,
    wakeups: Arc<WakeupTimer>,
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
        .backoff(crate::kube_api::watch_backoff())
        .inspect(move |ev| {
            if let Ok(ev) = ev {
                writer.apply(ev);
                if let watcher::Event::InitDone = ev {
                    health.secrets_synced.store(true, Ordering::Relaxed);
                }
            }
        })
        .filter_map(move |ev| {
            // A relist's Secrets ask for their identity through the paced timer (see
            // `identity_stream`); changes seen as they happen go to the controller directly.
            let out = match ev {
                Ok(watcher::Event::Apply(s) | watcher::Event::Delete(s)) => Some(Ok(s)),
                Ok(watcher::Event::InitApply(s)) => {
                    wake_owner(&wakeups, &s);
                    None
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(out)
        });
    (index, stream)
}

/// Asks for the identity controlling Secret `s` to be reconciled (through the paced timer):
/// the one of that name in the Secret's namespace (an owner is always in its dependent's
/// namespace), whatever uid the reference claims.
fn wake_owner(wakeups: &WakeupTimer, s: &PartialObjectMeta<Secret>) {
    let namespace = s.metadata.namespace.as_deref().unwrap_or_default();
    let owner = (s.metadata.owner_references.iter().flatten()).find(|r| {
        r.controller == Some(true)
            && r.kind == "MachineIdentity"
            && r.api_version.starts_with("nhi.dev/")
    });
    if let Some(r) = owner {
        wakeups.wake_after(namespace, &r.name, Duration::ZERO);
    }
}

/// Where the MachineIdentity controller's work comes from.
pub struct IdentitySources<S, R> {
    /// The identity-Secret watch whose index is in the context.
    pub secrets: S,
    /// The writer of the identity cache (the other controllers read it).
    pub cache: IndexedWriter<MachineIdentity>,
    /// Identities other controllers ask to be looked at.
    pub requests: R,
    /// The one namespace watched, or None for all.
    pub namespace: Option<String>,
    pub concurrency: u16,
    /// The controller stops (gracefully) once it is requested.
    pub shutdown: Shutdown,
}

/// Runs the MachineIdentity controller until shutdown.
pub async fn run<S, R>(ctx: Arc<IdentityContext>, sources: IdentitySources<S, R>)
where
    S: futures::Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
    R: futures::Stream<Item = ObjectRef<MachineIdentity>> + Send + 'static,
{
    let store = sources.cache.as_reader().store();
    let identities = identity_stream(ctx.clone(), sources.namespace.as_deref(), sources.cache);
    let health = ctx.health.clone();
    let wakeups = ctx.wakeups.clone();
    health.controller_alive.store(true, Ordering::Relaxed);
    Controller::for_stream(identities, store.clone())
        .owns_stream(sources.secrets)
        .reconcile_on(sources.requests)
        .with_config(Config::default().concurrency(sources.concurrency))
        .graceful_shutdown_on(sources.shutdown.requested_once_ready(store.clone()))
        .run(super::reconcile, super::error_policy, ctx)
        .for_each(|res| async {
            wakeups.settled();
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

/// The identities to reconcile: changed ones go to the controller; during a relist all of them
/// do, through the paced timer (whatever happened to their Secrets while the watches were down
/// is found and put right). Status-only changes (our own writes) trigger nothing.
fn identity_stream(
    ctx: Arc<IdentityContext>,
    namespace: Option<&str>,
    mut cache: IndexedWriter<MachineIdentity>,
) -> impl futures::Stream<Item = Result<MachineIdentity, watcher::Error>> + Send + 'static {
    let api: Api<MachineIdentity> = scoped_api(ctx.client.clone(), namespace);
    let relisting = Arc::new(AtomicBool::new(false));
    let (seen_ctx, refresh_ctx, filter_ctx) = (ctx.clone(), ctx.clone(), ctx.clone());
    let relist_flag = relisting.clone();
    watcher(api, watcher::Config::default())
        .backoff(crate::kube_api::watch_backoff())
        .modify(strip_unread_fields)
        .inspect(move |ev| {
            if let Ok(ev) = ev {
                identity_event_seen(&seen_ctx, ev, &relist_flag);
            }
        })
        .map(move |ev| {
            if let Ok(ev) = &ev {
                cache.apply(ev);
                // The relist's requests wait in the timer until the cache shows the whole list;
                // then what is remembered of identities no longer in it is let go (deleted
                // while the watch was down, their deletion never seen).
                match ev {
                    watcher::Event::Init => ctx.wakeups.hold(true),
                    watcher::Event::InitDone => {
                        ctx.wakeups.hold(false);
                        forget_the_unlisted(&ctx, &cache);
                    }
                    _ => {}
                }
            }
            ev
        })
        .inspect(move |ev| {
            if let Ok(ev) = ev {
                refresh_entitlements(&refresh_ctx, ev);
            }
        })
        .applied_objects()
        .filter(move |mi| {
            // Errors pass through (the controller reports them); objects when they changed. A
            // relist's objects, every one, go through the paced timer: all of them at once (on
            // a start, 100,000) would wait in the controller's scheduler at 650 bytes each.
            futures::future::ready(mi.as_ref().map_or(true, |mi| {
                let changed = filter_ctx.memory.worth_reconciling(mi);
                if !relisting.load(Ordering::Relaxed) {
                    return changed;
                }
                let namespace = mi.metadata.namespace.as_deref().unwrap_or_default();
                (filter_ctx.wakeups).wake_after(namespace, &mi.name_any(), Duration::ZERO);
                false
            }))
        })
}

/// Managed fields are the bulk of a small object, and kubectl's client-side apply copy of the
/// whole manifest often the largest field: reconciles never read them.
fn strip_unread_fields(mi: &mut MachineIdentity) {
    mi.metadata.managed_fields = None;
    if let Some(a) = mi.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            mi.metadata.annotations = None;
        }
    }
}

/// Before the cache takes an event: a relist starts or ends (the first complete list marks the
/// identity cache as synced, for /readyz); an identity's namespace needs a trust ConfigMap; a
/// deletion starts revoking at once; a deleted identity leaves the metrics and the memory.
fn identity_event_seen(
    ctx: &IdentityContext,
    ev: &watcher::Event<MachineIdentity>,
    relisting: &AtomicBool,
) {
    match ev {
        watcher::Event::Init => relisting.store(true, Ordering::Relaxed),
        watcher::Event::InitDone => {
            relisting.store(false, Ordering::Relaxed);
            ctx.health.identities_synced.store(true, Ordering::Relaxed);
            ctx.revoker.identity_gone();
        }
        watcher::Event::Apply(mi) => {
            ctx.revoker
                .identity_seen(mi.metadata.namespace.as_deref().unwrap_or_default());
            revoke_early(ctx, mi);
        }
        watcher::Event::Delete(mi) => {
            ctx.revoker.identity_gone();
            let uid = mi.metadata.uid.as_deref().unwrap_or_default();
            let (namespace, name) = (mi.namespace().unwrap_or_default(), mi.name_any());
            ctx.reporter.metrics.forget(uid, &namespace, &name);
            ctx.memory.forget(uid);
            ctx.wakeups.forget(&namespace, &name);
        }
        watcher::Event::InitApply(_) => {}
    }
}

/// After a relist: the memories keyed by identity (certificates, revocations, expiry metrics)
/// keep only the identities the cache now holds.
fn forget_the_unlisted(ctx: &IdentityContext, cache: &IndexedWriter<MachineIdentity>) {
    let listed: HashSet<UidKey> = (cache.as_reader().state().iter())
        .filter_map(|mi| mi.metadata.uid.as_deref().map(uid_key))
        .collect();
    ctx.memory.retain(|uid| listed.contains(&uid));
    ctx.reporter
        .metrics
        .retain_expiries(|uid| listed.contains(&uid));
}

/// An identity's new certificate (in its status), new labels or deletion: the Entitlements that
/// select it or list it refresh their bindings, from the cache that now shows it. A complete
/// identity list: every Entitlement looks at its subjects again.
fn refresh_entitlements(ctx: &IdentityContext, ev: &watcher::Event<MachineIdentity>) {
    match ev {
        watcher::Event::InitDone => {
            for e in ctx.entitlements.state() {
                let namespace = e.metadata.namespace.as_deref().unwrap_or_default();
                ctx.refresh_entitlement(namespace, &e.name_any());
            }
        }
        watcher::Event::Apply(mi) | watcher::Event::Delete(mi) => {
            let entitlements = ctx
                .entitlements
                .in_namespace(mi.metadata.namespace.as_deref().unwrap_or_default());
            for e in entitlement_watch::entitlements_to_refresh(mi, &entitlements) {
                ctx.refresh_entitlement(e.namespace.as_deref().unwrap_or_default(), &e.name);
            }
        }
        _ => {}
    }
}

/// An identity's deletion was just seen: start revoking what its status and the operator's
/// memory name at once, without waiting for its turn in the reconcile queue (a burst of
/// deletions would otherwise publish the last revocation only after every reconcile before it).
/// The finalizer still revokes and waits for the record before it lets the identity go.
fn revoke_early(ctx: &IdentityContext, mi: &MachineIdentity) {
    let has_finalizer = mi.finalizers().iter().any(|f| f == REVOKE_FINALIZER);
    if mi.metadata.deletion_timestamp.is_none() || !has_finalizer {
        return;
    }
    let uid = mi.metadata.uid.as_deref().unwrap_or_default();
    let known = ctx.memory.any_known_certificate(uid);
    let now = OffsetDateTime::now_utc();
    let identity = format!("{}/{}", mi.namespace().unwrap_or_default(), mi.name_any());
    let revs = every_revocation(
        mi.status.as_ref(),
        known.as_ref(),
        Reason::CessationOfOperation,
        &identity,
        now,
    );
    let revoker = ctx.revoker.clone();
    tokio::spawn(async move {
        if let Err(e) = revoker.revoke(revs).await {
            tracing::debug!(error = %e, "early revocation failed; the finalizer retries");
        }
    });
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::ObjectMeta;

    use super::*;

    fn secret(namespace: &str, owners: Vec<OwnerReference>) -> PartialObjectMeta<Secret> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                name: Some("s".into()),
                namespace: Some(namespace.into()),
                owner_references: Some(owners),
                ..Default::default()
            },
            _phantom: Default::default(),
        }
    }

    fn owner(kind: &str, api_version: &str, name: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            // Whatever uid it claims (another namespace's identity's, say), it names an
            // identity of the Secret's own namespace.
            uid: "8e46a0dd-95cf-49e4-8190-10f6ca685590".into(),
            controller: Some(controller),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_relisted_secret_wakes_the_identity_of_its_namespace_that_controls_it() {
        let timer = Arc::new(WakeupTimer::default());
        let others = vec![
            owner("Deployment", "apps/v1", "web", true),
            owner(
                "MachineIdentity",
                "nhi.dev/v1alpha1",
                "not-controller",
                false,
            ),
            owner("MachineIdentity", "elsewhere.example/v1", "foreign", true),
        ];
        wake_owner(&timer, &secret("tenant-a", others.clone()));
        assert_eq!(timer.waiting(), 0);
        let mut ours = others;
        ours.push(owner("MachineIdentity", "nhi.dev/v1alpha1", "api", true));
        wake_owner(&timer, &secret("tenant-a", ours));
        let woken = Box::pin(timer.clone().due()).next().await.unwrap();
        assert_eq!(
            (woken.namespace.as_deref(), woken.name.as_str()),
            (Some("tenant-a"), "api")
        );
    }
}
