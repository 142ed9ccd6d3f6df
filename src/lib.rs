//! nhi-operator: the controllers, HTTP endpoints, leader election and agent of the operator that
//! gives every non-human identity a short-lived, cryptographically bound identity.
//!
//! The crate graph is the architecture: `nhi-api` (the CRD types) and `nhi-identity` (what
//! workloads link: verification, the identity extension, the reloading identity; no Kubernetes
//! client) at the bottom, `nhi-core` (pure decisions) above them, and this crate on top: it
//! observes the cluster, asks `nhi-core` what to do, and writes. The lower crates are re-exported
//! here under their module names (`api`, `issue`, `verify`, ...) for programs that link the
//! operator crate.

pub use nhi_api as api;
pub use nhi_core::{duration, entitle, issue, labels, lifecycle, podcert, revocation};
pub use nhi_identity::{reload, verify};

pub mod agent;
pub mod allocator;
pub mod ca;
pub mod cache;
pub mod controller;
pub mod delegate_cli;
pub mod delegation;
pub mod fence;
pub mod health;
pub mod http;
pub mod http_trust;
pub mod kube_api;
pub mod leader;
pub mod leader_label;
pub mod metrics;
pub mod operator;
pub mod request_retry;
pub mod revoke;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod token_bucket;
