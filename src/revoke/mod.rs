//! Revocation: the persisted record of revoked certificates, the CRL signed from it, and its
//! publication (the `nhi-trust` ConfigMaps and HTTP).

pub mod handle;
pub mod persist;
pub mod publish;
pub mod publishing;
pub mod service;
pub mod trust;

pub use handle::{RevokeError, Revoker, channel};
pub use nhi_core::revocation as record;
pub use record::{Reason, Revocation};
