//! What the Entitlement controller reads and writes through (and nothing more).

use std::sync::Arc;

use kube::Client;

use crate::cache::IndexedStore;
use crate::controller::policy_watch::PolicyView;
use crate::controller::report::Reporter;
use crate::controller::status_memory::RecentStatusWrites;
use crate::health::Health;
use nhi_api::MachineIdentity;

/// The Entitlement controller's context.
pub struct EntitlementContext {
    pub client: Client,
    /// The MachineIdentity cache of the identity controller (subjects and their certificates).
    pub identities: IndexedStore<MachineIdentity>,
    /// The tenant policy: what each namespace's Entitlements may give.
    pub policies: PolicyView,
    pub reporter: Reporter,
    /// Health flags: reconciles wait for the identity cache.
    pub health: Arc<Health>,
    /// Whether Kubernetes access is enabled (`--kubernetes-access`): Roles are only written then.
    pub kubernetes_access: bool,
    /// The statuses written moments ago.
    pub recent_statuses: RecentStatusWrites,
    /// Which serials are revoked: their Kubernetes users are bound no more.
    pub revoker: crate::revoke::Revoker,
}
