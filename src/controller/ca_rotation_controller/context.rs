//! What the CA rotation controller reads and writes through, and its state between looks.

use std::sync::Arc;

use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::mpsc::UnboundedSender;

use crate::ca::rotation::RotationPolicy;
use crate::ca::store::CaLocation;
use crate::controller::reissue_pacing::ReissuePacing;
use crate::controller::report::Reporter;
use crate::controller::secret_index::SecretIndex;
use crate::controller::signing_ca::SigningCa;
use nhi_api::MachineIdentity;

/// What the CA rotation controller reads and writes through.
pub struct RotationContext {
    pub client: kube::Client,
    /// The CA that signs, replaced when the CA Secret holds another.
    pub ca: SigningCa,
    /// The pacing of identities' re-issues after a switch.
    pub pacing: Arc<ReissuePacing>,
    /// Signs and publishes the CRL again when the CA changes.
    pub revoker: crate::revoke::Revoker,
    /// The identity-Secret index: which bundles are behind.
    pub secrets: Arc<SecretIndex>,
    pub health: Arc<crate::health::Health>,
    pub reporter: Reporter,
}

/// Where the rotation controller acts, and how.
pub struct RotationSettings {
    pub policy: RotationPolicy,
    pub location: CaLocation,
    /// The one namespace watched, or None for all (where trust ConfigMaps are).
    pub scope: Option<String>,
}

/// The rotation controller's state between looks.
pub struct Rotator {
    pub(super) ctx: RotationContext,
    pub(super) identities: Store<MachineIdentity>,
    pub(super) to_identities: UnboundedSender<ObjectRef<MachineIdentity>>,
    pub(super) settings: RotationSettings,
    /// The last problem reported by a Warning Event, so it is reported once.
    pub(super) reported: Option<String>,
    /// The resourceVersion of the CA Secret last looked at: a look at the same version loads
    /// nothing.
    pub(super) adopted: Option<String>,
}
