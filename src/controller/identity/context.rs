//! What the MachineIdentity controller reads and writes through (and nothing more).

use std::sync::Arc;

use kube::Client;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc::UnboundedSender;

use super::memory::IdentityMemory;
use super::settings::Settings;
use super::wakeup_timer::WakeupTimer;
use crate::cache::IndexedStore;
use crate::controller::policy_watch::PolicyView;
use crate::controller::reissue_pacing::ReissuePacing;
use crate::controller::report::Reporter;
use crate::controller::secret_index::SecretIndex;
use crate::controller::signing_ca::SigningCa;
use crate::controller::workload_watch::WorkloadWatches;
use crate::health::Health;
use crate::revoke::Revoker;
use nhi_api::Entitlement;
use nhi_core::issue::kube_client::KubeEndpoint;

/// The MachineIdentity controller's context.
pub struct IdentityContext {
    pub client: Client,
    /// The CA that signs.
    pub ca: SigningCa,
    /// What plans are made with: the issuance policy, lifecycle settings, re-issue spread.
    pub settings: Settings,
    /// Where identities' kubeconfigs point (the API server URL and its CA); None when
    /// Kubernetes access is disabled (`--kubernetes-access`).
    pub kube_endpoint: Option<KubeEndpoint>,
    /// Metadata index of the operator's own (labelled) identity Secrets.
    pub secrets: Arc<SecretIndex>,
    /// The Entitlement cache: what the grants of each identity are resolved from.
    pub entitlements: IndexedStore<Entitlement>,
    /// The tenant policy: what each namespace's identities may claim.
    pub policies: PolicyView,
    /// Whether the caches have synced.
    pub health: Arc<Health>,
    pub memory: IdentityMemory,
    /// When each identity is to be reconciled again (its renewal, mostly), and every other
    /// request to reconcile one, paced.
    pub wakeups: Arc<WakeupTimer>,
    /// Revokes certificates and publishes the CRL.
    pub revoker: Revoker,
    /// The watches of the objects identities serve.
    pub workloads: Arc<WorkloadWatches>,
    /// The rate of re-issues after a CA switch.
    pub pacing: Arc<ReissuePacing>,
    pub reporter: Reporter,
    /// Asks the Entitlement controller to look at an Entitlement again (after an issuance
    /// changed which certificate carries its grants).
    pub entitlement_trigger: UnboundedSender<ObjectRef<Entitlement>>,
}

impl IdentityContext {
    /// Asks the Entitlement controller to refresh the bindings of Entitlement `name` in
    /// `namespace`.
    pub fn refresh_entitlement(&self, namespace: &str, name: &str) {
        // A closed channel means the Entitlement controller has stopped: shutting down.
        let _ = self
            .entitlement_trigger
            .send(ObjectRef::new(name).within(namespace));
    }
}
