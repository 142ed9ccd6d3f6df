//! Revocation in the cluster: the service that records revocations (persisted in a ConfigMap;
//! the record and its CRL are `nhi_core::revocation`) and publishes the trust documents (the
//! `nhi-trust` ConfigMaps and HTTP).

pub mod capacity_warning;
pub mod handle;
pub mod persist;
pub mod publication_task;
pub mod service;
pub mod trust;
pub mod trust_configmaps;

pub use handle::{RevokeError, Revoker, channel};
pub use nhi_core::revocation::{Reason, Revocation};
