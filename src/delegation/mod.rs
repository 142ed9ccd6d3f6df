//! The delegation endpoint: a parent identity (or a task) authenticated by its client
//! certificate asks for a short-lived child certificate for a task, over mTLS on a port of its
//! own. Served by the leader only: the per-identity rate limit is then exact, and one writer keeps
//! the parents' `status.delegation`. A standby does not listen; the chart's Service selects the
//! leader's pod by the label the leader sets on it.

pub mod audit;
pub mod handler;
pub mod parent;
pub mod rate;
pub mod server;
pub mod status;
pub mod tls;

use std::sync::Arc;

use kube::runtime::reflector::Store;
use time::Duration;

use crate::cache::IndexedStore;
use crate::controller::policy_watch::PolicyView;
use crate::controller::signing_ca::SigningCa;
use crate::metrics::Metrics;
use crate::revoke::Revoker;
use nhi_api::{Entitlement, MachineIdentity};

/// What the endpoint reads and signs with.
pub struct DelegationContext {
    pub ca: SigningCa,
    /// Which certificates are revoked (the leader's record, current to the write).
    pub revoker: Revoker,
    pub identities: Store<MachineIdentity>,
    pub entitlements: IndexedStore<Entitlement>,
    pub policies: PolicyView,
    /// The operator's trust domain: a parent of another is refused.
    pub trust_domain: String,
    /// The review warning (an identity past its review is suspended).
    pub review_warning: Duration,
    pub metrics: Arc<Metrics>,
    pub limits: rate::RateLimits,
    pub status: Arc<status::StatusQueue>,
    pub tls: tls::TlsSource,
}
