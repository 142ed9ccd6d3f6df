//! End-to-end tests against the local control plane (`make cluster-up`, or run by `make test`).

mod agent;
mod chaos;
mod continuity;
mod delegation;
mod delegation_policy;
mod entitlements;
mod gitops;
mod issuance;
mod kubernetes_access;
mod leader;
mod lifecycle;
mod plugin;
mod pod_certificates;
mod policy_fixtures;
mod relying;
mod safety;
mod support;
mod tenancy;
mod tenant_setup;
mod validation;
