//! What one PodCertificateRequest's decision is made from, read from the caches and the pod.

use std::sync::Arc;

use k8s_openapi::api::certificates::v1::PodCertificateRequest;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use time::{Duration, OffsetDateTime};

use super::context::PodCertContext;
use crate::controller::identity::facts::entitlement_facts;
use nhi_api::MachineIdentity;
use nhi_core::entitle::resolve::EntitlementFacts;
use nhi_core::podcert::decide::Claimant;
use nhi_core::podcert::key_type::{KubeletKeyType, requested_key};
use nhi_core::podcert::pod_check::{NamedPod, PodCheck, pod_check};
use nhi_core::policy::EffectivePolicy;

/// The facts of one decision.
pub struct Facts {
    pub now: OffsetDateTime,
    /// How long ago the request was created.
    pub age: Duration,
    pub namespace: String,
    pub pod_uid: String,
    pub service_account: String,
    pub max_expiration: Duration,
    /// The keys of `spec.unverifiedUserAnnotations` (the signer recognises none).
    pub user_annotations: Vec<String>,
    /// The key the kubelet generated (its type and SubjectPublicKeyInfo), or why it is unusable.
    pub key: Result<(KubeletKeyType, Vec<u8>), String>,
    pub pod: PodCheck,
    /// The namespace's identities that cover a ServiceAccount, and the objects themselves.
    pub claimants: Vec<(Claimant, Arc<MachineIdentity>)>,
    pub policy: EffectivePolicy,
    pub entitlements: Vec<EntitlementFacts>,
    /// When the signing CA expires (no certificate may outlive it).
    pub ca_not_after: OffsetDateTime,
}

/// Reads the facts of `pcr`, the identities from the cache.
pub async fn observe(
    pcr: &PodCertificateRequest,
    ctx: &PodCertContext,
) -> Result<Facts, kube::Error> {
    let now = OffsetDateTime::now_utc();
    let namespace = pcr.namespace().unwrap_or_default();
    let spec = &pcr.spec;
    let created = pcr
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok())
        .unwrap_or(now);
    let (policy, _) = ctx.policies.effective(&namespace);
    let entitlements = entitlement_facts(&ctx.entitlements, &namespace, &policy);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pod = pods.get_opt(&spec.pod_name).await?;
    let named = NamedPod {
        name: &spec.pod_name,
        uid: &spec.pod_uid,
        service_account: &spec.service_account_name,
        node: &spec.node_name,
    };
    Ok(Facts {
        now,
        age: now - created,
        pod: pod_check(pod.as_ref(), &named, &ctx.signer),
        pod_uid: spec.pod_uid.clone(),
        service_account: spec.service_account_name.clone(),
        max_expiration: Duration::seconds(i64::from(spec.max_expiration_seconds.unwrap_or(86_400))),
        user_annotations: spec
            .unverified_user_annotations
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .collect(),
        key: requested_key(&spec.stub_pkc_s10_request.0).map_err(|e| e.to_string()),
        claimants: claimants(&ctx.identities.in_namespace(&namespace), &namespace),
        policy,
        entitlements,
        ca_not_after: ctx.ca.current().not_after(),
        namespace,
    })
}

/// The claimants of `namespace` listed from the API: a denial that is final for the pod (no
/// identity, or two) is never made from a cache that may lag.
pub async fn live_claimants(
    ctx: &PodCertContext,
    namespace: &str,
) -> Result<Vec<(Claimant, Arc<MachineIdentity>)>, kube::Error> {
    let api: Api<MachineIdentity> = Api::namespaced(ctx.client.clone(), namespace);
    let list = api.list(&ListParams::default()).await?;
    let identities: Vec<Arc<MachineIdentity>> = list.items.into_iter().map(Arc::new).collect();
    Ok(claimants(&identities, namespace))
}

/// The identities of `namespace` naming a ServiceAccount. One being deleted is left out when
/// another names the same ServiceAccount: a replaced identity, still held by its revoking
/// finalizer, must not make its successor's pods ambiguous.
fn claimants(
    identities: &[Arc<MachineIdentity>],
    namespace: &str,
) -> Vec<(Claimant, Arc<MachineIdentity>)> {
    let naming: Vec<(Claimant, Arc<MachineIdentity>)> = identities
        .iter()
        .filter(|mi| mi.metadata.namespace.as_deref() == Some(namespace))
        .filter_map(|mi| {
            let sa = mi
                .spec
                .pod_certificates
                .as_ref()?
                .service_account_name
                .clone();
            let claimant = Claimant {
                name: mi.name_any(),
                service_account: sa,
            };
            Some((claimant, mi.clone()))
        })
        .collect();
    let live = |sa: &str| {
        naming
            .iter()
            .any(|(c, mi)| c.service_account == sa && mi.metadata.deletion_timestamp.is_none())
    };
    naming
        .iter()
        .filter(|(c, mi)| mi.metadata.deletion_timestamp.is_none() || !live(&c.service_account))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mi(name: &str, sa: &str, deleting: bool) -> Arc<MachineIdentity> {
        let mut m: MachineIdentity = serde_json::from_value(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"owner": {"team": "t"}, "secretName": name,
                     "podCertificates": {"serviceAccountName": sa}}
        }))
        .unwrap();
        if deleting {
            m.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now(),
                ));
        }
        Arc::new(m)
    }

    #[test]
    fn a_replaced_identity_being_deleted_does_not_make_its_successor_ambiguous() {
        let names = |v: Vec<(Claimant, Arc<MachineIdentity>)>| -> Vec<String> {
            v.into_iter().map(|(c, _)| c.name).collect()
        };
        let all = [
            mi("old", "web", true),
            mi("new", "web", false),
            mi("gone", "api", true),
        ];
        assert_eq!(names(claimants(&all, "shop")), ["new", "gone"]);
        assert!(claimants(&all, "other").is_empty());
    }
}
