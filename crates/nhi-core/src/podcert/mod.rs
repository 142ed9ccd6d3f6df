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
pub mod trust_bundle;

/// The signer name the operator serves (`spec.signerName` of the PodCertificateRequests it
/// answers, and of the ClusterTrustBundle it publishes).
pub const SIGNER_NAME: &str = "nhi.dev/identity";

/// The shortest certificate Kubernetes lets a pod-certificate signer issue.
pub const MIN_LIFETIME: time::Duration = time::Duration::hours(1);
