//! The operator's certificate authority: the pure CA of `nhi-core` and its Kubernetes store.

pub mod store;

pub use nhi_core::ca::*;
