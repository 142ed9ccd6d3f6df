//! The tenant policy every end-to-end test runs under, applied once per test process: the
//! default IdentityPolicy and the admission policies of `config/policy/` as a cluster gets them,
//! and the IdentityPolicy `nhi-e2e` that governs test namespaces (labelled
//! `nhi.dev/identity-policy=e2e`) with what the tests ask for. Namespaces labelled `e2e.nhi.dev/admission=off` are left out of the admission
//! bindings (in this harness only): there, what admission would refuse reaches the operator, as in
//! a cluster without the admission policies.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{ApiResource, Discovery, Scope};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::OnceCell;

/// The label value that puts a test namespace under `nhi-e2e`.
pub const E2E_POLICY: &str = "e2e";
/// The label that takes a test namespace out of admission.
pub const ADMISSION_OFF_LABEL: &str = "e2e.nhi.dev/admission";

static APPLIED: OnceCell<()> = OnceCell::const_new();

/// Applies the tenant policy once (later calls wait for the first).
pub async fn ensure_tenant_policy(client: &Client) {
    APPLIED
        .get_or_init(|| async { apply_tenant_policy(client).await })
        .await;
}

async fn apply_tenant_policy(client: &Client) {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("API discovery");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/policy");
    let mut documents = vec![e2e_policy()];
    let files = [
        "identitypolicy-default.yaml",
        "admission-identity-policy.yaml",
        "admission-tenant-floor.yaml",
        "policy-reader.yaml",
    ];
    for file in files {
        let text = std::fs::read_to_string(dir.join(file)).expect("config/policy file");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc).expect("a YAML document");
            documents.push(value);
        }
    }
    for mut doc in documents {
        if doc["kind"] == "ValidatingAdmissionPolicyBinding" {
            doc["spec"]["matchResources"] = json!({"namespaceSelector": {"matchExpressions": [
                {"key": ADMISSION_OFF_LABEL, "operator": "NotIn", "values": ["off"]}
            ]}});
        }
        let obj: DynamicObject = serde_json::from_value(doc).expect("a Kubernetes object");
        let types = obj.types.clone().expect("apiVersion and kind");
        let (group, version) = match types.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), types.api_version.clone()),
        };
        let gvk = kube::api::GroupVersionKind::gvk(&group, &version, &types.kind);
        let (resource, caps): (ApiResource, _) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("{} is served", types.kind));
        assert!(matches!(caps.scope, Scope::Cluster), "cluster-scoped");
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        api.patch(
            &obj.name_any(),
            &PatchParams::apply("nhi-e2e").force(),
            &Patch::Apply(&obj),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {} {}: {e}", types.kind, obj.name_any()));
    }
    // The apiserver picks admission policies and bindings up asynchronously: wait until one
    // refuses where admission is on, and admits where the harness turned it off.
    let off = admission_off_probe_namespace(client).await;
    crate::support::wait_for(
        std::time::Duration::from_secs(30),
        "the admission policies to be in force (and off where the harness turns them off)",
        || async {
            let on = !admitted(client, "default").await;
            (on && admitted(client, &off).await).then_some(())
        },
    )
    .await;
}

/// A namespace out of admission, kept for probing (created once per cluster).
async fn admission_off_probe_namespace(client: &Client) -> String {
    let name = "nhi-e2e-admission-off-probe";
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {ADMISSION_OFF_LABEL: "off"}}
    }))
    .expect("a namespace");
    api.patch(
        name,
        &PatchParams::apply("nhi-e2e").force(),
        &Patch::Apply(&ns),
    )
    .await
    .expect("the admission probe namespace");
    name.to_string()
}

/// What the test namespaces may claim.
fn e2e_policy() -> serde_json::Value {
    json!({
        "apiVersion": "nhi.dev/v1alpha1",
        "kind": "IdentityPolicy",
        "metadata": {"name": "nhi-e2e"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"nhi.dev/identity-policy": E2E_POLICY}},
            "dnsNames": {"allowed": ["*.nhi.test", "*.example.internal", "*.payments.example", "api.payments.svc"]},
            "grants": {"allowed": ["*"]},
            "kubernetesAccess": true,
            "kubernetesRules": [
                {"apiGroups": [""], "resources": ["configmaps", "pods"], "verbs": ["get", "list", "watch"]}
            ],
            "delegation": {}
        }
    })
}

/// Whether admission lets an Entitlement that selects by an unprotected label through (a dry
/// run in `namespace`).
async fn admitted(client: &Client, namespace: &str) -> bool {
    let api: Api<nhi_operator::api::Entitlement> = Api::namespaced(client.clone(), namespace);
    let probe: nhi_operator::api::Entitlement = serde_json::from_value(json!({
        "apiVersion": "nhi.dev/v1alpha1", "kind": "Entitlement",
        "metadata": {"name": "admission-probe"},
        "spec": {"subjects": {"selector": {"matchLabels": {"tier": "x"}}}, "grants": ["a.b"], "justification": "probe"}
    }))
    .expect("probe");
    let dry = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&dry, &probe).await.is_ok()
}
