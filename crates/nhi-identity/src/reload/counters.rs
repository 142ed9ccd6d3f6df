//! The reloading identity's counters: prometheus-client metrics with the `metrics` feature, plain
//! atomics with the same methods without it.

#[cfg(feature = "metrics")]
pub use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

#[cfg(not(feature = "metrics"))]
pub use plain::{Counter, Gauge};

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
