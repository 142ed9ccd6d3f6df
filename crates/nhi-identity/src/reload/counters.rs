//! The reloading identity's counters: prometheus-client metrics with the `metrics` feature, plain
//! atomics with the same methods without it.

#[cfg(feature = "metrics")]
use prometheus_client::registry::Registry;

#[cfg(feature = "metrics")]
pub use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

#[cfg(not(feature = "metrics"))]
pub use plain::{Counter, Gauge};

/// What a reloading identity counts.
#[derive(Debug, Default)]
pub struct Counters {
    /// New identities swapped in.
    pub reloads: Counter,
    /// Identity updates refused.
    pub refused: Counter,
    /// notAfter of the identity being served (Unix seconds).
    pub expiry: Gauge,
    /// New `crl.pem` contents accepted.
    pub crl_reloads: Counter,
    /// `crl.pem` contents refused (missing, unreadable, unparsable, foreign, stale).
    pub crl_refused: Counter,
    /// Earliest nextUpdate of the CRLs in use (Unix seconds); 0 when none is in use.
    pub crl_next_update: Gauge,
}

#[cfg(feature = "metrics")]
impl Counters {
    /// Registers every counter in `registry` (names under the registry's prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "identity_reloads",
            "New identities swapped in from the identity directory",
            self.reloads.clone(),
        );
        registry.register(
            "identity_reloads_refused",
            "Identity updates refused (unreadable, key not matching, not chaining, expired); the previous identity was kept",
            self.refused.clone(),
        );
        registry.register(
            "identity_expiry_timestamp_seconds",
            "notAfter of the identity being served",
            self.expiry.clone(),
        );
        registry.register(
            "identity_crl_reloads",
            "New crl.pem contents accepted for checking peers' revocation",
            self.crl_reloads.clone(),
        );
        registry.register(
            "identity_crl_reloads_refused",
            "crl.pem contents refused (missing, unreadable, unparsable, not from the trust bundle's CAs, stale); the previous CRLs were kept, or every peer is refused when there are none",
            self.crl_refused.clone(),
        );
        registry.register(
            "identity_crl_next_update_timestamp_seconds",
            "Earliest nextUpdate of the CRLs checked (0: none usable); past it every peer is refused",
            self.crl_next_update.clone(),
        );
    }
}

#[cfg(not(feature = "metrics"))]
mod plain {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

    /// A monotonic counter.
    #[derive(Clone, Debug, Default)]
    pub struct Counter(Arc<AtomicU64>);

    impl Counter {
        /// Adds one; returns the value before.
        pub fn inc(&self) -> u64 {
            self.0.fetch_add(1, Ordering::Relaxed)
        }

        pub fn get(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    /// A value that goes up and down.
    #[derive(Clone, Debug, Default)]
    pub struct Gauge(Arc<AtomicI64>);

    impl Gauge {
        /// Sets the value; returns the one before.
        pub fn set(&self, value: i64) -> i64 {
            self.0.swap(value, Ordering::Relaxed)
        }
    }
}
