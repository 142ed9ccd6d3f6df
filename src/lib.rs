//! nhi-operator: short-lived, cryptographically bound identities for every non-human identity.
//!
//! The pure core (`issue`, `ca::authority`) builds and assesses certificates from plain data;
//! the controllers (`controller`) read from and write to the Kubernetes API around it.

pub mod agent;
pub mod api;
pub mod ca;
pub mod controller;
pub mod entitle;
pub mod health;
pub mod http;
pub mod issue;
pub mod kube_api;
pub mod labels;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod operator;
pub mod reload;
pub mod revoke;
pub mod settings;
pub mod telemetry;
pub mod token_bucket;
pub mod verify;
