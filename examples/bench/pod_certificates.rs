//! `make bench MODE=pod-certificates`: N PodCertificateRequests created at once for the
//! operator's signer, timed from creation to Issued, against the Secret path (N identities to
//! Ready) in the same run.
//!
//! The requests are created directly, as kubelets would create them: each names one of a few
//! pods of ServiceAccount `bench` (covered by one MachineIdentity), with an ECDSA P-256 key
//! generated here beforehand and its stub PKCS#10 request. The pods are bound to a Node object
//! with no kubelet behind it (`bench-pc-<suffix>`), which they tolerate being unreachable: they
//! never run, and no kubelet makes requests of its own for them; the signer checks them like any
//! pod (uid, ServiceAccount, node, a `podCertificate` volume for its signer). The operator runs
//! scoped to a fresh namespace under a signer name of its own (`bench.nhi.dev/<namespace>`), so
//! an operator already on the cluster neither answers these requests nor loses its
//! ClusterTrustBundle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    ClusterTrustBundle, PodCertificateRequest, PodCertificateRequestSpec,
};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use nhi_operator::api::MachineIdentity;
use serde_json::json;

use crate::{namespace, proc_stats, start_operator};

/// Pods the requests are spread over (a Deployment's replicas, say).
const PODS: usize = 10;

/// One run of the pod-certificate path.
pub struct PodCertRun {
    pub rate: f64,
    pub latencies: Vec<f64>,
    pub issued: usize,
    /// Requests answered otherwise (Denied or Failed), with the first reason seen.
    pub refused: usize,
    pub first_refusal: Option<String>,
    pub peak_rss: u64,
    pub cpu: f64,
}

/// A key and its stub CSR (DER), made before the clock starts.
fn stub_requests(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
            rcgen::CertificateParams::default()
                .serialize_request(&key)
                .expect("stub CSR")
                .der()
                .to_vec()
        })
        .collect()
}

fn uid(meta: &ObjectMeta) -> String {
    meta.uid.clone().expect("a created object has a uid")
}

async fn create<K>(api: &Api<K>, value: serde_json::Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).expect("a valid object");
    api.create(&PostParams::default(), &object)
        .await
        .expect("create")
}

/// The node, ServiceAccount, identity and pods the requests name; returns (node name, node uid,
/// ServiceAccount uid, pods as (name, uid)).
async fn subjects(
    client: &Client,
    ns: &str,
    signer: &str,
) -> (String, String, String, Vec<(String, String)>) {
    let node_name = format!("bench-pc-{}", ns.rsplit('-').next().unwrap_or("node"));
    let node: Node = create(
        &Api::all(client.clone()),
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node_name,
               "labels": {"nhi.dev/bench": "pod-certificates"}}}),
    )
    .await;
    let sa: ServiceAccount = create(
        &Api::namespaced(client.clone(), ns),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "bench"}}),
    )
    .await;
    let mis: Api<MachineIdentity> = Api::namespaced(client.clone(), ns);
    create(
        &mis,
        json!({"apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
               "metadata": {"name": "pc"},
               "spec": {"owner": {"team": "bench"}, "secretName": "pc-id",
                        "podCertificates": {"serviceAccountName": "bench"},
                        "certificate": {"dnsNames": [format!("pc.{ns}.svc")]},
                        "attributes": {"project": "bench"}}}),
    )
    .await;
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut pods = vec![];
    for i in 0..PODS {
        let pod: Pod = create(
            &pods_api,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pc-{i}")},
                   "spec": {
                       "nodeName": node_name, "serviceAccountName": "bench",
                       "automountServiceAccountToken": false,
                       "tolerations": [{"operator": "Exists"}],
                       "containers": [{"name": "w", "image": "nhi.dev/none:bench",
                                       "volumeMounts": [{"name": "id", "mountPath": "/id"}]}],
                       "volumes": [{"name": "id", "projected": {"sources": [
                           {"podCertificate": {"signerName": signer, "keyType": "ECDSAP256",
                                               "credentialBundlePath": "bundle.pem"}}]}}]}}),
        )
        .await;
        pods.push((pod.name_any(), uid(&pod.metadata)));
    }
    // The identity is Ready (its own certificate issued) before the clock starts.
    let t = Instant::now();
    loop {
        let ready = mis
            .get("pc")
            .await
            .ok()
            .and_then(|mi| mi.status)
            .is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
        if ready {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the bench identity did not become Ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (node_name, uid(&node.metadata), uid(&sa.metadata), pods)
}

/// Runs the operator scoped to a fresh namespace with a signer of its own, creates N requests at
/// `concurrency`, and times each until it is answered.
pub async fn pod_certificate_run(
    client: &Client,
    operator: &str,
    n: usize,
    concurrency: usize,
) -> PodCertRun {
    let ns = namespace(client, "bench-pc", &[]).await;
    let signer = format!("bench.nhi.dev/{ns}");
    let mut child = start_operator(
        client,
        operator,
        &ns,
        concurrency,
        &["--pod-certificate-signer", &signer],
    )
    .await;
    let pid = child.id();
    let (node, node_uid, sa_uid, pods) = subjects(client, &ns, &signer).await;
    let csrs = tokio::task::spawn_blocking(move || stub_requests(n))
        .await
        .expect("keys");

    let pcrs: Api<PodCertificateRequest> = Api::namespaced(client.clone(), &ns);
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let answered: Arc<Mutex<HashMap<String, (Instant, String)>>> = Arc::default();
    let seen = answered.clone();
    let watch = tokio::spawn(
        watcher(pcrs.clone(), watcher::Config::default())
            .applied_objects()
            .try_for_each(move |pcr: PodCertificateRequest| {
                let seen = seen.clone();
                async move {
                    let outcome = pcr
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .and_then(|c| c.first())
                        .map(|c| format!("{} {}: {}", c.type_, c.reason, c.message));
                    if let Some(outcome) = outcome {
                        seen.lock()
                            .unwrap()
                            .entry(pcr.name_any())
                            .or_insert_with(|| (Instant::now(), outcome));
                    }
                    Ok(())
                }
            }),
    );
    let start = Instant::now();
    stream::iter(csrs.into_iter().enumerate())
        .for_each_concurrent(concurrency, |(i, csr)| {
            let (pcrs, created) = (pcrs.clone(), created.clone());
            let (pod, pod_uid) = pods[i % pods.len()].clone();
            let spec = PodCertificateRequestSpec {
                signer_name: signer.clone(),
                pod_name: pod,
                pod_uid,
                service_account_name: "bench".into(),
                service_account_uid: sa_uid.clone(),
                node_name: node.clone(),
                node_uid: node_uid.clone(),
                max_expiration_seconds: Some(86_400),
                stub_pkc_s10_request: ByteString(csr),
                unverified_user_annotations: None,
            };
            async move {
                let name = format!("pcr-{i}");
                let pcr = PodCertificateRequest {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        ..Default::default()
                    },
                    spec,
                    status: None,
                };
                created.lock().unwrap().insert(name, Instant::now());
                pcrs.create(&PostParams::default(), &pcr)
                    .await
                    .expect("create a PodCertificateRequest");
            }
        })
        .await;
    eprintln!(
        "created {n} requests in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut peak_rss = 0;
    loop {
        peak_rss = peak_rss.max(proc_stats(pid).0);
        if answered.lock().unwrap().len() >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (rss, cpu) = proc_stats(pid);
    watch.abort();
    let _ = child.kill();
    let _ = child.wait();

    let answered = answered.lock().unwrap().clone();
    let created = created.lock().unwrap().clone();
    let issued: Vec<&String> = answered
        .iter()
        .filter(|(_, (_, o))| o.starts_with("Issued"))
        .map(|(k, _)| k)
        .collect();
    let first_refusal = answered
        .values()
        .map(|(_, o)| o)
        .find(|o| !o.starts_with("Issued"))
        .cloned();
    let mut latencies: Vec<f64> = issued
        .iter()
        .filter_map(|k| {
            let (at, _) = answered.get(*k)?;
            Some(at.duration_since(*created.get(*k)?).as_secs_f64())
        })
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());

    crate::delete_namespace(client, &ns).await;
    let _ = Api::<Node>::all(client.clone())
        .delete(&node, &DeleteParams::default())
        .await;
    let bundle = nhi_operator::podcert::signer_name::trust_bundle_name(&signer);
    let _ = Api::<ClusterTrustBundle>::all(client.clone())
        .delete(&bundle, &DeleteParams::default())
        .await;
    PodCertRun {
        rate: issued.len() as f64 / elapsed,
        latencies,
        issued: issued.len(),
        refused: answered.len() - issued.len(),
        first_refusal,
        peak_rss: peak_rss.max(rss),
        cpu,
    }
}
