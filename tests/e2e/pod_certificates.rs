//! The pod-certificate signer on the control plane alone (the node's test, e2e/
//! test-pod-certificates.sh, has the kubelet make the requests): requests created as a kubelet
//! creates them, for a pod bound to a Node object with no kubelet behind it. A namespace-scoped
//! operator signs only under a signer name of its own and publishes its roots in that name's
//! ClusterTrustBundle; with the default name it leaves the signer off (that name, and its
//! bundle, belong to the cluster's operator).

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    ClusterTrustBundle, PodCertificateRequest, PodCertificateRequestSpec,
};
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::support::*;

/// A Node object nobody runs (deleted on drop): pods bound to it never start, and no kubelet
/// makes requests for them.
struct IdleNode {
    name: String,
    uid: String,
}

impl IdleNode {
    async fn create(client: &Client, name: &str) -> Self {
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))
        .unwrap();
        let node = Api::<Node>::all(client.clone())
            .create(&PostParams::default(), &node)
            .await
            .expect("create a Node object");
        IdleNode {
            name: name.into(),
            uid: node.metadata.uid.unwrap(),
        }
    }
}

impl Drop for IdleNode {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        clean_up_from_drop(move |client| async move {
            let _ = Api::<Node>::all(client)
                .delete(&name, &DeleteParams::default())
                .await;
        });
    }
}

/// Deletes a ClusterTrustBundle on drop (cluster-scoped: it outlives the test's namespace).
struct BundleCleanup(String);

impl Drop for BundleCleanup {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.0);
        clean_up_from_drop(move |client| async move {
            let _ = Api::<ClusterTrustBundle>::all(client)
                .delete(&name, &DeleteParams::default())
                .await;
        });
    }
}

/// A request as the kubelet makes it for `pod` (on `node`, ServiceAccount `sa`), for a fresh
/// ECDSA P-256 key (dropped: only its stub CSR is sent).
fn kubelet_request(
    name: &str,
    signer: &str,
    pod: &Pod,
    sa_uid: &str,
    node: &IdleNode,
) -> PodCertificateRequest {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let spec = pod.spec.as_ref().unwrap();
    PodCertificateRequest {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: PodCertificateRequestSpec {
            signer_name: signer.into(),
            pod_name: pod.metadata.name.clone().unwrap(),
            pod_uid: pod.metadata.uid.clone().unwrap(),
            service_account_name: spec.service_account_name.clone().unwrap(),
            service_account_uid: sa_uid.into(),
            node_name: node.name.clone(),
            node_uid: node.uid.clone(),
            max_expiration_seconds: Some(3600),
            stub_pkc_s10_request: ByteString(csr.der().to_vec()),
            unverified_user_annotations: None,
        },
        status: None,
    }
}

/// The pod `web` of ServiceAccount `web` on `node`, with a podCertificate volume for `signer`.
async fn pod_for(api: &Api<Pod>, node: &IdleNode, signer: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"nodeName": node.name, "serviceAccountName": "web",
                 "automountServiceAccountToken": false,
                 "tolerations": [{"operator": "Exists"}],
                 "containers": [{"name": "w", "image": "nhi.dev/none:e2e",
                                 "volumeMounts": [{"name": "id", "mountPath": "/id"}]}],
                 "volumes": [{"name": "id", "projected": {"sources": [
                     {"podCertificate": {"signerName": signer, "keyType": "ECDSAP256",
                                         "credentialBundlePath": "bundle.pem"}}]}}]}}))
    .unwrap();
    api.create(&PostParams::default(), &pod)
        .await
        .expect("create the pod")
}

fn answer(pcr: &PodCertificateRequest) -> Option<String> {
    let c = pcr.status.as_ref()?.conditions.as_ref()?.first()?;
    Some(format!("{} {}", c.type_, c.reason))
}

#[tokio::test]
async fn a_namespace_scoped_operator_signs_under_its_own_name_and_publishes_its_roots_there() {
    let client = client().await;
    let namespace = TestNamespace::create(&client, "podcert").await;
    let signer = format!("e2e.nhi.dev/{}", namespace.name);
    let bundle_name = format!("e2e.nhi.dev:{}:roots", namespace.name);
    let _bundle = BundleCleanup(bundle_name.clone());
    let node = IdleNode::create(&client, &format!("idle-{}", namespace.name)).await;
    let env = OperatorNamespace::start_in(namespace, &["--pod-certificate-signer", &signer]).await;
    let sa: ServiceAccount = env
        .api::<ServiceAccount>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "web"}})).unwrap(),
        )
        .await
        .unwrap();
    env.create_identity(
        "web",
        json!({"owner": {"team": "t"}, "secretName": "web-identity",
               "podCertificates": {"serviceAccountName": "web"}}),
    )
    .await;
    wait_ready(&env.identities(), "web", Duration::from_secs(20)).await;
    let pod = pod_for(&env.api(), &node, &signer).await;
    let sa_uid = sa.metadata.uid.unwrap();

    let requests: Api<PodCertificateRequest> = env.api();
    // A request for the default signer first: the cluster's operator's, never this one's.
    requests
        .create(
            &PostParams::default(),
            &kubelet_request("for-default", DEFAULT_SIGNER, &pod, &sa_uid, &node),
        )
        .await
        .unwrap();
    requests
        .create(
            &PostParams::default(),
            &kubelet_request("for-us", &signer, &pod, &sa_uid, &node),
        )
        .await
        .unwrap();
    let issued = wait_for(Duration::from_secs(20), "the request answered", || async {
        let pcr = requests.get("for-us").await.ok()?;
        answer(&pcr).map(|a| (a, pcr))
    })
    .await;
    assert_eq!(issued.0, "Issued Issued", "{:?}", issued.1.status);
    assert_eq!(
        answer(&requests.get("for-default").await.unwrap()),
        None,
        "a request for another signer name is not this operator's to answer"
    );

    // Its roots, under its own name: the chain verifies against them (OpenSSL).
    let bundle = wait_for(Duration::from_secs(20), "the signer's bundle", || async {
        Api::<ClusterTrustBundle>::all(client.clone())
            .get_opt(&bundle_name)
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(bundle.spec.signer_name.as_deref(), Some(signer.as_str()));
    let dir = tempfile::tempdir().unwrap();
    let (roots, chain) = (dir.path().join("roots.pem"), dir.path().join("chain.pem"));
    std::fs::write(&roots, &bundle.spec.trust_bundle).unwrap();
    let status = issued.1.status.unwrap();
    std::fs::write(&chain, status.certificate_chain.unwrap()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&roots)
        .arg(&chain)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ca, _) = wait_for(Duration::from_secs(20), "nhi-trust", || {
        trust_documents(&client, &env.ns)
    })
    .await;
    let ders = |text: &str| -> Vec<Vec<u8>> {
        pem::parse_many(text)
            .unwrap()
            .into_iter()
            .map(|p| p.into_contents())
            .collect()
    };
    assert_eq!(
        ders(&bundle.spec.trust_bundle),
        ders(&ca),
        "the bundle holds this operator's CA"
    );
}

#[tokio::test]
async fn a_namespace_scoped_operator_leaves_the_default_signer_name_to_the_cluster() {
    let env = OperatorNamespace::start("podcert-default", &[]).await;
    let said = wait_for(Duration::from_secs(20), "the signer's verdict", || async {
        let log = std::fs::read_to_string(&env.op.log).ok()?;
        log.lines()
            .find(|l| l.contains("the pod-certificate signer is off"))
            .map(str::to_string)
    })
    .await;
    assert!(
        said.contains(DEFAULT_SIGNER) && said.contains("--pod-certificate-signer"),
        "{said}"
    );
    let log = std::fs::read_to_string(&env.op.log).unwrap();
    assert!(
        !log.contains("pod-certificate signer started")
            && !log.contains("ClusterTrustBundle published"),
        "{log}"
    );
}

const DEFAULT_SIGNER: &str = "nhi.dev/identity";
