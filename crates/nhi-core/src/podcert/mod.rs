//! Pod certificates (pure): which MachineIdentity a PodCertificateRequest is for, whether it may
//! be issued, with what lifetime and refresh time ([`decide`]), the key the kubelet generated
//! ([`key_type`]), and the certificate for that key ([`sign`]). The kubelet keeps the private key
//! on the node; the operator sees only the public key in the request's stub CSR.

pub mod decide;
pub mod identity;
pub mod key_type;
pub mod pod_check;
pub mod record;
pub mod sign;
pub mod signer_name;
pub mod trust_bundle;

pub use signer_name::DEFAULT_SIGNER_NAME;

/// The shortest certificate Kubernetes lets a pod-certificate signer issue.
pub const MIN_LIFETIME: time::Duration = time::Duration::hours(1);
