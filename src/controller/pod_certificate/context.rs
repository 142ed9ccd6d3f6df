//! What the pod-certificate signer reads and writes through.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::Client;
use kube::runtime::reflector::Store;
use time::Duration;

use crate::controller::policy_watch::PolicyView;
use crate::controller::report::Reporter;
use crate::controller::signing_ca::SigningCa;
use nhi_api::{Entitlement, MachineIdentity};
use nhi_core::issue::inputs::IssuancePolicy;

/// The signer's context.
pub struct PodCertContext {
    pub client: Client,
    /// The CA that signs (the current one, during a rotation too).
    pub ca: SigningCa,
    /// The MachineIdentity cache: which identity covers a pod.
    pub identities: Store<MachineIdentity>,
    /// The Entitlement cache: the grants a pod certificate carries.
    pub entitlements: Store<Entitlement>,
    /// The tenant policy.
    pub policies: PolicyView,
    pub issuance: IssuancePolicy,
    /// The review warning (an identity past its review is suspended).
    pub review_warning: Duration,
    pub reporter: Reporter,
    /// One writer of each identity's pod-certificate record at a time.
    pub record_locks: RecordLocks,
}

/// One lock per identity (`namespace/name`), so its requests' records do not race.
#[derive(Default)]
pub struct RecordLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl RecordLocks {
    pub fn of(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(key.to_string()).or_default().clone()
    }
}
