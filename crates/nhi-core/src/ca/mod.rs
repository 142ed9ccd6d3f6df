//! The certificate authority as data: a CA built from its PEM material, a new root, and the
//! steps of a CA rotation (the operator's `ca::store` reads and writes the CA Secret).

pub mod authority;
pub mod rotation;
pub mod rotation_state;

pub use authority::{CaError, CaMaterial, CertificateAuthority};

pub use nhi_identity::timestamp::{parse_rfc3339, rfc3339};
