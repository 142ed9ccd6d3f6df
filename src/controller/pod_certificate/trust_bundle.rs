//! Publishes the CA's roots as the signer's ClusterTrustBundle (`nhi.dev:identity:roots`,
//! `spec.signerName: nhi.dev/identity`): pods mount them with a `clusterTrustBundle` projection
//! by signer name. During a CA rotation the bundle holds both roots, as `ca.crt` does.

use std::time::Duration;

use k8s_openapi::api::certificates::v1::ClusterTrustBundle;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use tracing::{info, warn};

use crate::controller::signing_ca::SigningCa;
use crate::shutdown::Shutdown;
use nhi_core::labels::{FIELD_MANAGER, MANAGED_BY, MANAGER};
use nhi_core::podcert::SIGNER_NAME;

/// The bundle's name: the signer name with `/` as `:`, then a suffix (the API requires the prefix).
pub const BUNDLE_NAME: &str = "nhi.dev:identity:roots";

/// How often the CA is compared with what was published (an in-memory comparison; the API is
/// written only when the roots changed).
const CHECK_EVERY: Duration = Duration::from_secs(5);

/// Keeps the bundle at the CA's roots until shutdown.
pub async fn run(client: Client, ca: SigningCa, shutdown: Shutdown) {
    let api: Api<ClusterTrustBundle> = Api::all(client);
    let mut published: Option<String> = None;
    loop {
        let roots = ca.current().trust_bundle_pem().to_string();
        if published.as_deref() != Some(roots.as_str()) {
            match apply(&api, &roots).await {
                Ok(()) => {
                    info!(bundle = BUNDLE_NAME, "ClusterTrustBundle published");
                    published = Some(roots);
                }
                Err(e) => {
                    warn!(bundle = BUNDLE_NAME, error = %e, "publishing the ClusterTrustBundle failed; retrying")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {},
            _ = shutdown.clone().requested() => return,
        }
    }
}

async fn apply(api: &Api<ClusterTrustBundle>, roots: &str) -> Result<(), kube::Error> {
    let bundle = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "ClusterTrustBundle",
        "metadata": {"name": BUNDLE_NAME, "labels": {MANAGED_BY: MANAGER}},
        "spec": {"signerName": SIGNER_NAME, "trustBundle": roots},
    });
    api.patch(
        BUNDLE_NAME,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&bundle),
    )
    .await
    .map(|_| ())
}
