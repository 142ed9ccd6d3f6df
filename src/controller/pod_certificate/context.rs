//! What the pod-certificate signer reads and writes through.

use kube::Client;
use time::Duration;

use super::record_queue::RecordQueues;
use crate::cache::IndexedStore;
use crate::controller::policy_watch::PolicyView;
use crate::controller::report::Reporter;
use crate::controller::signing_ca::SigningCa;
use nhi_api::{Entitlement, MachineIdentity};
use nhi_core::issue::inputs::IssuancePolicy;

/// The signer's context.
pub struct PodCertContext {
    /// The signer name answered for (`--pod-certificate-signer`).
    pub signer: String,
    /// Requests answered at once (`--concurrency`, as for identities).
    pub concurrency: u16,
    pub client: Client,
    /// The CA that signs (the current one, during a rotation too).
    pub ca: SigningCa,
    /// The MachineIdentity cache: which identity covers a pod.
    pub identities: IndexedStore<MachineIdentity>,
    /// The Entitlement cache: the grants a pod certificate carries.
    pub entitlements: IndexedStore<Entitlement>,
    /// The tenant policy.
    pub policies: PolicyView,
    pub issuance: IssuancePolicy,
    /// The review warning (an identity past its review is suspended).
    pub review_warning: Duration,
    pub reporter: Reporter,
    /// One writer of each identity's pod-certificate record at a time.
    pub record_queues: RecordQueues,
}
