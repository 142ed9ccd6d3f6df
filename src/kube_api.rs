//! Kubernetes API handles scoped the way the operator runs (a leaf: it imports nothing of the
//! crate).

use kube::{Api, Client};

/// An `Api` over all namespaces, or one when the operator is namespace-scoped.
pub fn scoped_api<K>(client: Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    <K as kube::Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}
