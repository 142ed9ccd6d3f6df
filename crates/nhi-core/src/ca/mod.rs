//! The operator's certificate authority: loading, bootstrapping and its PEM helpers.

pub mod authority;
pub mod rotation;
pub mod rotation_state;

pub use authority::{CaError, CaMaterial, CertificateAuthority};

pub use nhi_identity::pem_chain as pem_util;
pub use nhi_identity::timestamp::{parse_rfc3339, rfc3339};
