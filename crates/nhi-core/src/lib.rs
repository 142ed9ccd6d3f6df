//! nhi-core: the operator's pure decisions, over plain data, with no Kubernetes client and no
//! async: certificate contents ([`issue`]), the CA and its rotation steps ([`ca`]), entitlement
//! resolution ([`entitle`]), lifecycle verdicts ([`lifecycle`]), the revocation record
//! ([`revocation`]), the pod-certificate signer's decisions ([`podcert`]) and delegated task
//! identities ([`delegate`]). The controllers in `nhi-operator` read, call these, and write.

pub mod ca;
pub mod delegate;
pub mod duration;
pub mod entitle;
pub mod issue;
pub mod labels;
pub mod lifecycle;
pub mod podcert;
pub mod policy;
pub mod revocation;
pub mod serial;
