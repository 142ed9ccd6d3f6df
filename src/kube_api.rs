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

/// Names this replica in the apiserver's audit log and request logs:
/// `nhi-operator/<version> (<POD_NAME>)` (the host name out of a pod), as kubectl and
/// controllers name themselves.
pub fn identify(config: &mut kube::Config) {
    let instance = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "local".into());
    let agent = format!("nhi-operator/{} ({instance})", env!("CARGO_PKG_VERSION"));
    if let Ok(value) = hyper::http::HeaderValue::from_str(&agent) {
        config
            .headers
            .push((hyper::http::header::USER_AGENT, value));
    }
}
