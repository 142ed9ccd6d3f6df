//! Observe: everything a MachineIdentity reconcile decides from, gathered into plain data before
//! anything is written. Reads only: the caches, the operator's memory, the clock, and the
//! identity Secret's body when neither the index nor the memory tells what it holds.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};
use time::OffsetDateTime;

use super::context::IdentityContext;
use crate::ca::CertificateAuthority;
use crate::cache::IndexedStore;
use crate::controller::error::ReconcileError;
use crate::controller::secret_index::SecretVersion;
use nhi_api::{Entitlement, MachineIdentity, RevocationStatus};
use nhi_core::entitle::resolve::EntitlementFacts;
use nhi_core::issue::assess::KnownCertificate;
use nhi_core::labels::{REVOKE_FINALIZER, REVOKE_REQUESTED};
use nhi_core::lifecycle::workload::Presence;
use nhi_core::policy::EffectivePolicy;
use nhi_core::policy::entitlement::check_entitlement;

/// What a reconcile of one MachineIdentity decides from. (No `Debug`: the Secret's body may
/// hold a private key.)
pub struct Facts {
    /// The moment the reconcile decides at.
    pub now: OffsetDateTime,
    pub identity: Arc<MachineIdentity>,
    pub namespace: String,
    pub uid: String,
    /// Whether the Entitlement and policy caches have completed their first list (grants and
    /// what the identity may claim are resolved from them).
    pub entitlements_synced: bool,
    /// The policy of the identity's namespace.
    pub policy: EffectivePolicy,
    /// Whether the object `spec.workloadRef` names exists (None: none named, or not looked at).
    pub workload: Option<Presence>,
    /// The Entitlements of the identity's namespace.
    pub entitlements: Vec<EntitlementFacts>,
    pub secret: SecretFacts,
    /// The CA that signs (and whose bundle the Secret should carry).
    pub ca: Arc<CertificateAuthority>,
    /// When the signing CA took over from one still retiring, if one is.
    pub ca_switched_at: Option<OffsetDateTime>,
    /// The last revocation this operator made for the identity (the status may not show it).
    pub last_revocation: Option<RevocationStatus>,
    /// The fingerprint of the status this operator wrote for the identity moments ago (the
    /// cache may not show it yet).
    pub status_just_written: Option<u64>,
}

/// What is known of the identity's Secret.
pub struct SecretFacts {
    /// The Secret as the metadata index last saw it.
    pub indexed: Option<SecretVersion>,
    /// Whether the index has completed its first list.
    pub index_synced: bool,
    /// The certificate the operator wrote or verified in the Secret at the indexed version.
    pub known: Option<KnownCertificate>,
    /// Whether the operator knows any certificate of the identity (whatever the version).
    pub any_known: bool,
    /// The Secret read from the API, when the index and the memory did not tell enough.
    pub read: SecretRead,
}

/// The result of reading the identity Secret.
pub enum SecretRead {
    /// Not read: not needed.
    NotRead,
    /// Read: the Secret, or None when there is none.
    Read(Option<Box<Secret>>),
    /// The read failed.
    Unreadable(Arc<kube::Error>),
}

impl SecretFacts {
    /// Known to be absent without a read: not among the operator's labelled Secrets once the
    /// index is complete, and nothing written by the operator since.
    pub fn known_absent(&self) -> bool {
        self.indexed.is_none() && self.index_synced && !self.any_known
    }

    /// The indexed Secret, when it is controlled by identity `uid`.
    pub fn indexed_ours(&self, uid: &str) -> Option<&SecretVersion> {
        self.indexed
            .as_ref()
            .filter(|s| s.controller_uid.as_deref() == Some(uid) && !uid.is_empty())
    }
}

/// A `kubectl nhi revoke` request (the `nhi.dev/revoke-requested` annotation), as far as it is
/// answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeRequest<'a> {
    /// None, or one the status shows answered.
    None,
    /// Answered by this operator, though the status may not show it yet.
    Answered(&'a RevocationStatus),
    /// Not answered yet.
    New(&'a str),
}

/// Where the identity's revoke request stands, given the last revocation this operator made.
pub fn revoke_request<'a>(
    mi: &'a MachineIdentity,
    last_revocation: Option<&'a RevocationStatus>,
) -> RevokeRequest<'a> {
    let Some(request) = mi.annotations().get(REVOKE_REQUESTED) else {
        return RevokeRequest::None;
    };
    let shown = mi
        .status
        .as_ref()
        .and_then(|s| s.last_revocation.as_ref())
        .and_then(|r| r.request.as_ref());
    let refused = mi
        .status
        .as_ref()
        .and_then(|s| s.refused_revocation.as_ref())
        .map(|r| &r.request);
    if shown == Some(request) || refused == Some(request) {
        return RevokeRequest::None;
    }
    match last_revocation.filter(|r| r.request.as_ref() == Some(request)) {
        Some(answered) => RevokeRequest::Answered(answered),
        None => RevokeRequest::New(request),
    }
}

/// Gathers the facts of a reconcile of `mi`.
pub async fn observe(
    mi: Arc<MachineIdentity>,
    ctx: &IdentityContext,
) -> Result<Facts, ReconcileError> {
    let namespace = mi.namespace().ok_or(ReconcileError::NotNamespaced)?;
    let uid = mi.metadata.uid.clone().unwrap_or_default();
    let deleting = mi.metadata.deletion_timestamp.is_some();
    let (policy, namespace_known) = ctx.policies.effective(&namespace);
    let entitlements_synced = ctx.health.entitlements_synced.load(Ordering::Relaxed)
        && ctx.policies.is_synced()
        && namespace_known;
    // The lifecycle and the grants are looked at only for an identity that stays; its Secret
    // also when a deletion is to revoke what it holds.
    let governed = !deleting && entitlements_synced;
    let finalizing = deleting && mi.finalizers().iter().any(|f| f == REVOKE_FINALIZER);
    let last_revocation = ctx.memory.last_revocation(&uid);
    let workload = match (governed, mi.spec.workload_ref.as_ref()) {
        (true, Some(w)) => Some(ctx.workloads.presence(&namespace, w)),
        _ => None,
    };
    let entitlements = match governed {
        true => namespace_entitlements(ctx, &namespace, &policy),
        false => vec![],
    };
    let answering = matches!(
        revoke_request(&mi, last_revocation.as_ref()),
        RevokeRequest::New(_)
    );
    let secret = observe_secret(
        ctx,
        &mi,
        &namespace,
        &uid,
        governed || finalizing,
        answering,
    )
    .await;
    Ok(Facts {
        now: OffsetDateTime::now_utc(),
        ca: ctx.ca.current(),
        ca_switched_at: ctx.pacing.switched_at(),
        status_just_written: ctx.memory.statuses.recent(&uid),
        identity: mi,
        namespace,
        uid,
        entitlements_synced,
        policy,
        workload,
        entitlements,
        secret,
        last_revocation,
    })
}

/// What is known of the identity's Secret; its body is read only when `needed` and neither the
/// index nor the memory tells what it holds, or when a revoke request is being `answered` (the
/// certificate it names is to be forgotten and the Secret looked at afresh).
async fn observe_secret(
    ctx: &IdentityContext,
    mi: &MachineIdentity,
    namespace: &str,
    uid: &str,
    needed: bool,
    answering: bool,
) -> SecretFacts {
    let indexed = ctx.secrets.get(namespace, &mi.spec.secret_name);
    let known = indexed
        .as_ref()
        .and_then(|s| ctx.memory.known_certificate(uid, &s.resource_version));
    let mut facts = SecretFacts {
        index_synced: ctx.health.secrets_synced.load(Ordering::Relaxed),
        any_known: ctx.memory.has_known_certificate(uid),
        indexed,
        known,
        read: SecretRead::NotRead,
    };
    let trusted = facts.known.is_some() && facts.indexed_ours(uid).is_some() && !answering;
    if needed && !trusted && !facts.known_absent() {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
        facts.read = match api.get_opt(&mi.spec.secret_name).await {
            Ok(secret) => SecretRead::Read(secret.map(Box::new)),
            Err(e) => SecretRead::Unreadable(Arc::new(e)),
        };
    }
    facts
}

/// The Entitlements of a namespace, as plain data. One whose timestamps do not parse, or that
/// the namespace's policy refuses, is left out (it grants nothing; its own status says why).
fn namespace_entitlements(
    ctx: &IdentityContext,
    namespace: &str,
    policy: &EffectivePolicy,
) -> Vec<EntitlementFacts> {
    entitlement_facts(&ctx.entitlements, namespace, policy)
}

/// The Entitlements of `namespace` in `store` that its `policy` allows, as plain data (what
/// grants resolve from, for Secrets and pod certificates alike).
pub fn entitlement_facts(
    store: &IndexedStore<Entitlement>,
    namespace: &str,
    policy: &EffectivePolicy,
) -> Vec<EntitlementFacts> {
    store
        .in_namespace(namespace)
        .iter()
        .filter(|e| check_entitlement(&e.spec, policy).is_empty())
        .filter_map(|e| EntitlementFacts::from_resource(e).ok())
        .collect()
}
