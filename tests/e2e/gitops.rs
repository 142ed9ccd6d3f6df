//! GitOps: after the operator has reconciled a manifest applied the way Argo CD and Flux apply it
//! (server-side apply with their own field manager), applying the same manifest again changes
//! nothing, and `kubectl diff --server-side` reports no drift.

use std::io::Write;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::support::*;

const GITOPS_MANAGER: &str = "argocd-controller";

#[tokio::test]
async fn a_synced_manifest_shows_no_drift_after_reconcile() {
    let env = OperatorNamespace::start("gitops", &[]).await;
    let api = env.identities();

    let manifest = json!({
        "apiVersion": "nhi.dev/v1alpha1",
        "kind": "MachineIdentity",
        "metadata": {"name": "synced", "namespace": env.ns, "labels": {"app": "synced"}},
        "spec": {
            "owner": {"team": "platform", "contact": "platform@example.com"},
            "secretName": "synced-identity",
            "reviewBy": "2027-06-30",
            "certificate": {"ttl": "30m", "dnsNames": ["synced.example.internal"]}
        }
    });
    let params = PatchParams::apply(GITOPS_MANAGER);
    api.patch("synced", &params, &Patch::Apply(&manifest))
        .await
        .expect("first sync");
    wait_ready(&api, "synced", Duration::from_secs(10)).await;
    // Once every reconcile the sync started has ended, take the object as it stands.
    env.op.settle(Controller::Identities).await;
    let live = api.get("synced").await.unwrap();

    // The operator owns only status and its own finalizer: the manifest's fields are still the
    // GitOps manager's alone.
    for entry in live.metadata.managed_fields.iter().flatten() {
        if entry.manager.as_deref() == Some("nhi-operator") && entry.subresource.is_none() {
            let fields = serde_json::to_value(&entry.fields_v1).unwrap();
            let metadata = fields
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>());
            assert_eq!(metadata, Some(vec!["f:metadata".to_string()]), "{fields}");
            let owned = fields["f:metadata"]
                .as_object()
                .map(|o| o.keys().cloned().collect::<Vec<_>>());
            assert_eq!(
                owned,
                Some(vec!["f:finalizers".to_string()]),
                "the operator owns more than finalizers: {fields}"
            );
            assert!(
                fields.to_string().contains("nhi.dev/revoke-certificates"),
                "{fields}"
            );
            continue;
        }
        if entry.manager.as_deref() != Some(GITOPS_MANAGER) {
            assert_eq!(
                entry.subresource.as_deref(),
                Some("status"),
                "{:?} owns fields outside status: {entry:?}",
                entry.manager
            );
        }
    }

    // A second sync (server-side dry run) changes nothing: same resourceVersion and generation.
    let again = api
        .patch(
            "synced",
            &params.clone().dry_run(),
            &Patch::Apply(&manifest),
        )
        .await
        .expect("dry-run sync");
    assert_eq!(
        again.metadata.resource_version, live.metadata.resource_version,
        "re-applying the synced manifest would change the object"
    );
    assert_eq!(again.metadata.generation, live.metadata.generation);
    assert_eq!(
        serde_json::to_value(&again.spec).unwrap(),
        serde_json::to_value(&live.spec).unwrap()
    );

    // What a GitOps user runs: no diff (exit code 0).
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(serde_json::to_string(&manifest).unwrap().as_bytes())
        .unwrap();
    let out = kubectl()
        .args([
            "diff",
            "--server-side",
            "--field-manager",
            GITOPS_MANAGER,
            "-f",
        ])
        .arg(file.path())
        .output()
        .expect("kubectl diff");
    assert!(
        out.status.success(),
        "kubectl diff shows drift (exit {:?}):\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
