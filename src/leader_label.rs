//! The leader's label on its own pod, `nhi.dev/leader`: the delegation Service selects the pod
//! labelled `"true"`. A replica labels itself `"false"` as it starts (a restarted leader's pod
//! keeps its labels), `"true"` once it leads and its endpoint listens, and `"false"` again when
//! it stops leading (shutdown, or the Lease lost). Outside a pod (no `POD_NAME` and
//! `POD_NAMESPACE`) there is nothing to label.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

/// The label.
pub const LEADER_LABEL: &str = "nhi.dev/leader";

/// Sets the label on this replica's pod, trying `attempts` times a second apart; a failure is
/// logged (the Service then routes by the last label, and a replica it reaches that does not
/// serve refuses the connection).
pub async fn label_own_pod(client: &Client, leader: bool, attempts: u32) {
    let (Ok(name), Ok(namespace)) = (std::env::var("POD_NAME"), std::env::var("POD_NAMESPACE"))
    else {
        return;
    };
    if name.is_empty() || namespace.is_empty() {
        return;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let value = if leader { "true" } else { "false" };
    let patch = serde_json::json!({"metadata": {"labels": {LEADER_LABEL: value}}});
    let params = PatchParams {
        field_manager: Some(nhi_core::labels::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    for attempt in 1..=attempts.max(1) {
        match pods.patch(&name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(pod = %name, "labelled {LEADER_LABEL}={value}");
                return;
            }
            Err(e) if attempt == attempts.max(1) => {
                tracing::warn!(pod = %name, error = %e, "cannot label the pod {LEADER_LABEL}={value}");
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
        }
    }
}
