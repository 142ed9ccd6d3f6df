//! The operator's settings the MachineIdentity controller plans with.

use nhi_core::issue::inputs::IssuancePolicy;

/// The operator's settings that plans are made with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What certificates look like and how long they live.
    pub issuance: IssuancePolicy,
    pub lifecycle: LifecyclePolicy,
    /// Whether Kubernetes access is enabled (`--kubernetes-access`).
    pub kubernetes_access: bool,
    /// How long after a CA switch re-issues are spread.
    pub reissue_spread: time::Duration,
}

/// The operator's settings for lifecycle governance.
#[derive(Clone, Copy, Debug)]
pub struct LifecyclePolicy {
    /// How long a workload may be missing before its identity lapses (unless the identity sets
    /// its own).
    pub workload_grace: time::Duration,
    /// How long before the review lapses `ReviewDue` is shown.
    pub review_warning: time::Duration,
    /// How long a deletion waits for its revocation to be recorded before it is let go (None:
    /// it waits until the revocation is recorded or its certificates expire).
    pub finalizer_timeout: Option<time::Duration>,
}
