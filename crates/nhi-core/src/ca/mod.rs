//! The certificate authority as data: a CA built from its PEM material, a new root, and the
//! steps of a CA rotation (the operator's `ca::store` reads and writes the CA Secret).

pub mod authority;
pub mod rotation;
pub mod rotation_state;

pub use authority::{CaError, CaMaterial, CertificateAuthority};
