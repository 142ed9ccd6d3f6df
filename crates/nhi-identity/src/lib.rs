//! nhi-identity: what a workload links to use an nhi-operator identity, with no Kubernetes client.
//!
//! - [`verify`]: offline verification of a caller's certificate chain against the trust bundle
//!   and CRL, returning its SPIFFE ID, grants and attributes;
//! - [`reload`]: a rustls identity that follows a mounted identity directory as it rotates;
//! - [`extension`]: the identity extension codec (grants and attributes in a certificate);
//! - [`delegation`]: the delegation extension codec (a task certificate's chain and task);
//! - [`certificate`], [`pem_chain`], [`timestamp`], [`grant`]: the small helpers those share.
//!
//! The `metrics` feature adds Prometheus metrics to the reloading identity; the `delegate`
//! feature adds [`delegate`]: the client of the operator's delegation endpoint.

pub mod certificate;
#[cfg(feature = "delegate")]
pub mod delegate;
pub mod delegation;
pub mod extension;
pub mod grant;
pub mod pem_chain;
pub mod reload;
pub mod timestamp;
pub mod verify;

#[cfg(test)]
pub(crate) mod test_pki;
