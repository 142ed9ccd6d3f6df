//! State shared by every reconcile: the client, the CA, the policy, caches, events and metrics.

use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::Resource;
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::Store;

use super::machine_identity::event;
use crate::api::MachineIdentity;
use crate::ca::CertificateAuthority;
use crate::issue::inputs::IssuancePolicy;
use crate::metrics::Metrics;

/// Shared reconcile state.
pub struct Context {
    pub client: Client,
    ca: ArcSwap<CertificateAuthority>,
    pub policy: IssuancePolicy,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Cache of the operator's own (labelled) identity Secrets.
    pub secrets: Store<Secret>,
}

impl Context {
    pub fn new(
        client: Client,
        ca: CertificateAuthority,
        policy: IssuancePolicy,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        secrets: Store<Secret>,
    ) -> Self {
        Context {
            client,
            ca: ArcSwap::from_pointee(ca),
            policy,
            recorder,
            metrics,
            secrets,
        }
    }

    /// The CA currently signing.
    pub fn ca(&self) -> Arc<CertificateAuthority> {
        self.ca.load_full()
    }

    /// Publishes an Event about an identity in the background: Events are reports, and a slow
    /// Events API must not slow issuance.
    pub fn publish(&self, mi: &MachineIdentity, type_: EventType, reason: &str, note: String) {
        let recorder = self.recorder.clone();
        let reference = mi.object_ref(&());
        let ev = event(type_, reason, truncate(note), "Reconcile");
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &reference).await {
                tracing::debug!(error = %e, "publishing an Event failed");
            }
        });
    }

    /// Publishes a Warning Event.
    pub fn warn(&self, mi: &MachineIdentity, reason: &str, note: &str) {
        self.publish(mi, EventType::Warning, reason, note.to_string());
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > 1000 {
        let mut cut = 1000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
