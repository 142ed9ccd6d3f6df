//! State shared by every reconcile: the client, the CA, the policy, caches, events and metrics.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use kube::Client;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc::UnboundedSender;

use super::events::EventPublisher;
use super::secret_index::SecretIndex;
use super::workload_watch::WorkloadWatches;
use super::written::WrittenStatuses;
use crate::api::{Entitlement, MachineIdentity};
use crate::ca::CertificateAuthority;
use crate::health::Health;
use crate::issue::assess::KnownCertificate;
use crate::issue::inputs::IssuancePolicy;
use crate::issue::kube_client::KubeEndpoint;
use crate::metrics::Metrics;
use crate::revoke::Revoker;

/// An object uid as a map key: the 128 bits of the UUID the apiserver assigns, not its 36-byte
/// text (the maps below hold one entry per identity).
pub(crate) type UidKey = u128;

/// The key of `uid`; a uid that is not a UUID (never seen from an apiserver) is hashed.
pub(crate) fn uid_key(uid: &str) -> UidKey {
    let mut digits = uid.chars().filter(|c| *c != '-');
    let parsed = digits.clone().count() == 32;
    let key = digits.try_fold(0u128, |k, c| {
        c.to_digit(16).map(|d| (k << 4) | u128::from(d))
    });
    match key {
        Some(k) if parsed => k,
        _ => {
            let mut h = DefaultHasher::new();
            uid.hash(&mut h);
            u128::from(h.finish())
        }
    }
}

/// Shared reconcile state.
pub struct Context {
    pub client: Client,
    ca: Arc<ArcSwap<CertificateAuthority>>,
    pub policy: IssuancePolicy,
    pub metrics: Arc<Metrics>,
    /// Metadata cache of the operator's own (labelled) identity Secrets.
    pub secrets: Arc<SecretIndex>,
    /// Health flags, among them whether the Secret cache has synced.
    pub health: Arc<Health>,
    /// Fingerprint and time of the last status written per identity (by uid), so a reconcile
    /// that sees a cache not yet updated with our own write does not write the same status again.
    pub written: WrittenStatuses,
    /// Where identities' kubeconfigs point (the API server URL and its CA); None when Kubernetes
    /// access is disabled (`--kubernetes-access`).
    pub kube_endpoint: Option<KubeEndpoint>,
    /// Where Events go (shared with the Entitlement controller).
    pub events: Arc<EventPublisher>,
    /// The Entitlement cache: what the grants of each identity are resolved from.
    pub entitlements: Store<Entitlement>,
    /// Revokes certificates and publishes the CRL.
    pub revoker: Revoker,
    /// The watches of the objects identities serve.
    pub workloads: Arc<WorkloadWatches>,
    /// Grace periods and windows of lifecycle governance.
    pub lifecycle: LifecyclePolicy,
    /// How identities follow a CA rotation.
    pub rollout: super::ca_rollout::CaRollout,
    /// Asks the Entitlement controller to look at an Entitlement again (after an issuance changed
    /// which certificate carries its grants).
    entitlement_trigger: UnboundedSender<ObjectRef<Entitlement>>,
    /// The certificate in each identity's Secret (by identity uid), with the Secret's
    /// resourceVersion it was seen at: while that version is current, the Secret need not be read.
    known: Mutex<HashMap<UidKey, (String, KnownCertificate)>>,
    /// The last revocation made per identity (by uid): the status shows it even when the cache
    /// does not show our own status write yet.
    revocations: Mutex<HashMap<UidKey, crate::api::RevocationStatus>>,
    /// Hash of what may change an identity's certificate (generation, labels, annotations) when
    /// it last triggered a reconcile: status-only updates (our own writes) trigger nothing.
    triggered: Mutex<HashMap<UidKey, u64>>,
}

/// What the identity controller reads from its watches, and the channel that asks the Entitlement
/// controller to refresh an Entitlement.
pub struct Watches {
    /// Metadata index of the operator's identity Secrets.
    pub secrets: Arc<SecretIndex>,
    /// The Entitlement cache.
    pub entitlements: Store<Entitlement>,
    pub refresh_entitlement: UnboundedSender<ObjectRef<Entitlement>>,
    /// Where identities' kubeconfigs point; None when Kubernetes access is disabled.
    pub kube_endpoint: Option<KubeEndpoint>,
}

/// The operator's settings for lifecycle governance.
#[derive(Clone, Copy, Debug)]
pub struct LifecyclePolicy {
    /// How long a workload may be missing before its identity lapses (unless the identity sets
    /// its own).
    pub workload_grace: time::Duration,
    /// How long before the review lapses `ReviewDue` is shown.
    pub review_warning: time::Duration,
    /// How long a deletion waits for its revocation to be recorded.
    pub finalizer_timeout: time::Duration,
}

/// Revocation and workload watches: what lifecycle governance acts through.
pub struct Governance {
    pub revoker: Revoker,
    pub workloads: Arc<WorkloadWatches>,
    pub policy: LifecyclePolicy,
    pub rollout: super::ca_rollout::CaRollout,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        ca: CertificateAuthority,
        policy: IssuancePolicy,
        events: EventPublisher,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
        watches: Watches,
        governance: Governance,
    ) -> Self {
        Context {
            client,
            ca: Arc::new(ArcSwap::from_pointee(ca)),
            revoker: governance.revoker,
            workloads: governance.workloads,
            lifecycle: governance.policy,
            rollout: governance.rollout,
            policy,
            metrics,
            secrets: watches.secrets,
            health,
            written: WrittenStatuses::default(),
            known: Mutex::default(),
            triggered: Mutex::default(),
            revocations: Mutex::default(),
            events: Arc::new(events),
            entitlements: watches.entitlements,
            entitlement_trigger: watches.refresh_entitlement,
            kube_endpoint: watches.kube_endpoint,
        }
    }

    /// Whether the identity changed in a way that needs a reconcile since it last triggered one:
    /// its generation (spec), labels or annotations. Records the change.
    pub fn worth_reconciling(&self, mi: &MachineIdentity) -> bool {
        let Some(uid) = mi.metadata.uid.as_deref() else {
            return true;
        };
        let mut h = DefaultHasher::new();
        mi.metadata.generation.hash(&mut h);
        mi.metadata.labels.hash(&mut h);
        mi.metadata.annotations.hash(&mut h);
        mi.metadata.deletion_timestamp.is_some().hash(&mut h);
        let hash = h.finish();
        match self.triggered.lock() {
            Ok(mut t) => t.insert(uid_key(uid), hash) != Some(hash),
            Err(_) => true,
        }
    }

    /// The last revocation made for identity `uid` by this operator, if any.
    pub fn last_revocation(&self, uid: &str) -> Option<crate::api::RevocationStatus> {
        self.revocations.lock().ok()?.get(&uid_key(uid)).cloned()
    }

    /// Remembers a revocation made for identity `uid`.
    pub fn remember_revocation(&self, uid: &str, revocation: &crate::api::RevocationStatus) {
        if let Ok(mut r) = self.revocations.lock() {
            r.insert(uid_key(uid), revocation.clone());
        }
    }

    /// Forgets an identity that is going away.
    pub fn forget(&self, uid: &str) {
        self.written.forget(uid);
        if let Ok(mut r) = self.revocations.lock() {
            r.remove(&uid_key(uid));
        }
        if let Ok(mut t) = self.triggered.lock() {
            t.remove(&uid_key(uid));
        }
        self.forget_certificate(uid);
    }

    /// The certificate known for identity `uid` if its Secret is still at `resource_version`.
    pub fn known_certificate(
        &self,
        uid: &str,
        resource_version: Option<&str>,
    ) -> Option<KnownCertificate> {
        let known = self.known.lock().ok()?;
        let (rv, cert) = known.get(&uid_key(uid))?;
        (Some(rv.as_str()) == resource_version).then(|| cert.clone())
    }

    /// The certificate last known for identity `uid`, whatever the Secret's version.
    pub fn any_known_certificate(&self, uid: &str) -> Option<crate::issue::leaf::CertificateInfo> {
        let known = self.known.lock().ok()?;
        known.get(&uid_key(uid)).map(|(_, c)| c.info.clone())
    }

    /// Whether any certificate is known for identity `uid` (its Secret was seen or written).
    pub fn has_known_certificate(&self, uid: &str) -> bool {
        self.known
            .lock()
            .map(|k| k.contains_key(&uid_key(uid)))
            .unwrap_or(false)
    }

    /// Remembers the certificate in identity `uid`'s Secret at `resource_version`.
    pub fn remember_certificate(
        &self,
        uid: &str,
        resource_version: Option<String>,
        cert: KnownCertificate,
    ) {
        if let (Ok(mut known), Some(rv)) = (self.known.lock(), resource_version) {
            known.insert(uid_key(uid), (rv, cert));
        }
    }

    /// Forgets the certificate of identity `uid` (its Secret is gone or unknown).
    pub fn forget_certificate(&self, uid: &str) {
        if let Ok(mut known) = self.known.lock() {
            known.remove(&uid_key(uid));
        }
    }

    /// Asks the Entitlement controller to refresh the bindings of Entitlement `name` in
    /// `namespace`.
    pub fn refresh_entitlement(&self, namespace: &str, name: &str) {
        // A closed channel means the Entitlement controller has stopped: shutting down.
        let _ = self
            .entitlement_trigger
            .send(ObjectRef::new(name).within(namespace));
    }

    /// The CA currently signing.
    pub fn ca(&self) -> Arc<CertificateAuthority> {
        self.ca.load_full()
    }

    /// Replaces the signing CA (a rotation moved on, or the CA Secret was replaced).
    pub fn swap_ca(&self, ca: CertificateAuthority) {
        self.ca.store(Arc::new(ca));
    }

    /// The CA slot itself, for services that sign with whatever CA is current.
    pub fn ca_handle(&self) -> Arc<ArcSwap<CertificateAuthority>> {
        self.ca.clone()
    }

    /// Publishes an Event about an identity (see [`EventPublisher::publish`]).
    pub fn publish(&self, mi: &MachineIdentity, type_: EventType, reason: &str, note: String) {
        self.events.publish(&self.metrics, mi, type_, reason, note);
    }

    /// Publishes a Warning Event.
    pub fn warn(&self, mi: &MachineIdentity, reason: &str, note: &str) {
        self.publish(mi, EventType::Warning, reason, note.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::uid_key;

    #[test]
    fn uids_key_by_their_128_bits_and_stay_distinct() {
        let a = uid_key("e1bf1523-c16a-45de-b47b-0eb795b56dfa");
        assert_eq!(a, 0xe1bf1523_c16a_45de_b47b_0eb795b56dfa);
        assert_ne!(a, uid_key("e1bf1523-c16a-45de-b47b-0eb795b56dfb"));
        // Not a UUID: hashed, still stable and distinct.
        assert_eq!(uid_key("uid-1"), uid_key("uid-1"));
        assert_ne!(uid_key("uid-1"), uid_key("uid-2"));
    }
}
