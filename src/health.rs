//! Health flags the operator flips as it starts and runs, read by `/readyz` and `/livez` and by
//! the controllers that wait for a cache (a leaf: it imports nothing of the crate).

use std::sync::atomic::{AtomicBool, Ordering};

/// Health flags flipped by the operator as it starts and runs.
#[derive(Default)]
pub struct Health {
    /// The CA is loaded.
    pub ca_loaded: AtomicBool,
    /// The MachineIdentity cache has completed its first list.
    pub identities_synced: AtomicBool,
    /// The identity-Secret cache has completed its first list.
    pub secrets_synced: AtomicBool,
    /// The Entitlement cache has completed its first list.
    pub entitlements_synced: AtomicBool,
    /// The IdentityPolicy and Namespace caches have completed their first list.
    pub policies_synced: AtomicBool,
    /// A standby waiting for the leader Lease: ready, but not reconciling.
    pub standby: AtomicBool,
    /// The controller loop is running (false once it has stopped).
    pub controller_alive: AtomicBool,
}

impl Health {
    /// Ready to serve: a standby, or the CA loaded and caches synced.
    pub fn ready(&self) -> bool {
        self.standby.load(Ordering::Relaxed)
            || self.ca_loaded.load(Ordering::Relaxed)
                && self.identities_synced.load(Ordering::Relaxed)
                && self.secrets_synced.load(Ordering::Relaxed)
                && self.entitlements_synced.load(Ordering::Relaxed)
                && self.policies_synced.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_ca_and_every_cache() {
        let h = Health::default();
        assert!(!h.ready());
        h.ca_loaded.store(true, Ordering::Relaxed);
        h.identities_synced.store(true, Ordering::Relaxed);
        h.entitlements_synced.store(true, Ordering::Relaxed);
        h.policies_synced.store(true, Ordering::Relaxed);
        assert!(!h.ready(), "the Secret cache has not synced yet");
        h.secrets_synced.store(true, Ordering::Relaxed);
        assert!(h.ready());
        let standby = Health::default();
        standby.standby.store(true, Ordering::Relaxed);
        assert!(
            standby.ready(),
            "a standby is ready (it serves metrics and takes over)"
        );
    }
}
