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
    // The apiserver compiles admission policies asynchronously: wait until one refuses.
    crate::support::wait_for(
        std::time::Duration::from_secs(20),
        "the admission policies to be in force",
        || async { admission_in_force(client).await.then_some(()) },
    )
    .await;
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
            ]
        }
    })
}

/// Whether admission refuses an Entitlement that selects by an unprotected label (a dry run in
/// the default namespace).
async fn admission_in_force(client: &Client) -> bool {
    let api: Api<nhi_operator::api::Entitlement> = Api::namespaced(client.clone(), "default");
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
    matches!(api.create(&dry, &probe).await, Err(kube::Error::Api(e)) if e.code == 403)
}
