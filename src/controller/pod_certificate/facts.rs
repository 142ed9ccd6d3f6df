//! What one PodCertificateRequest's decision is made from, read from the caches and the pod.

use std::sync::Arc;

use k8s_openapi::api::certificates::v1::PodCertificateRequest;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, ResourceExt};
use time::{Duration, OffsetDateTime};

use super::context::PodCertContext;
use crate::controller::identity::facts::entitlement_facts;
use nhi_api::MachineIdentity;
use nhi_core::entitle::resolve::EntitlementFacts;
use nhi_core::podcert::decide::Claimant;
use nhi_core::podcert::key_type::{KubeletKeyType, requested_key};
use nhi_core::policy::EffectivePolicy;

/// Whether the pod the request names is the one running: the node's admission checks this for
/// kubelets, but anyone allowed to create requests could name any pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodCheck {
    Matches,
    /// The pod is gone, or is not the one named (uid, ServiceAccount or node differ): why.
    Differs(String),
}

/// The facts of one decision.
pub struct Facts {
    pub now: OffsetDateTime,
    /// How long ago the request was created.
    pub age: Duration,
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub service_account: String,
    pub max_expiration: Duration,
    /// The key the kubelet generated (its type and SubjectPublicKeyInfo), or why it is unusable.
    pub key: Result<(KubeletKeyType, Vec<u8>), String>,
    pub pod: PodCheck,
    /// The namespace's identities that cover a ServiceAccount, and the objects themselves.
    pub claimants: Vec<(Claimant, Arc<MachineIdentity>)>,
    pub policy: EffectivePolicy,
    pub entitlements: Vec<EntitlementFacts>,
}

/// Reads the facts of `pcr`.
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
    let claimants = ctx
        .identities
        .state()
        .into_iter()
        .filter(|mi| mi.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter_map(|mi| {
            let sa = mi
                .spec
                .pod_certificates
                .as_ref()?
                .service_account_name
                .clone();
            Some((
                Claimant {
                    name: mi.name_any(),
                    service_account: sa,
                },
                mi,
            ))
        })
        .collect();
    let (policy, _) = ctx.policies.effective(&namespace);
    let entitlements = entitlement_facts(&ctx.entitlements, &namespace, &policy);
    let pod = check_pod(ctx, &namespace, pcr).await?;
    Ok(Facts {
        now,
        age: now - created,
        pod_name: spec.pod_name.clone(),
        pod_uid: spec.pod_uid.clone(),
        service_account: spec.service_account_name.clone(),
        max_expiration: Duration::seconds(i64::from(spec.max_expiration_seconds.unwrap_or(86_400))),
        key: requested_key(&spec.stub_pkc_s10_request.0).map_err(|e| e.to_string()),
        pod,
        claimants,
        policy,
        entitlements,
        namespace,
    })
}

async fn check_pod(
    ctx: &PodCertContext,
    namespace: &str,
    pcr: &PodCertificateRequest,
) -> Result<PodCheck, kube::Error> {
    let spec = &pcr.spec;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(pod) = pods.get_opt(&spec.pod_name).await? else {
        return Ok(PodCheck::Differs(format!(
            "pod {} does not exist",
            spec.pod_name
        )));
    };
    let pod_spec = pod.spec.as_ref();
    let actual = (
        pod.metadata.uid.as_deref().unwrap_or_default(),
        pod_spec
            .and_then(|s| s.service_account_name.as_deref())
            .unwrap_or("default"),
        pod_spec
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default(),
    );
    let named = (
        spec.pod_uid.as_str(),
        spec.service_account_name.as_str(),
        spec.node_name.as_str(),
    );
    Ok(match actual == named {
        true => PodCheck::Matches,
        false => PodCheck::Differs(format!(
            "pod {} is (uid {}, ServiceAccount {}, node {}), the request names (uid {}, \
             ServiceAccount {}, node {})",
            spec.pod_name, actual.0, actual.1, actual.2, named.0, named.1, named.2
        )),
    })
}
