//! Publishes the CA's roots as the signer's ClusterTrustBundle (`nhi.dev:identity:roots`,
//! `spec.signerName: nhi.dev/identity`, for the default signer name): pods mount them with a `clusterTrustBundle` projection
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
use nhi_core::podcert::signer_name::trust_bundle_name;
use nhi_core::podcert::trust_bundle::cluster_trust_bundle;

/// How often the CA is compared with what was published (in memory).
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How often the bundle is applied even when the roots did not change (an edited or deleted
/// bundle is restored).
const REAPPLY_EVERY: Duration = Duration::from_secs(300);

/// Keeps the bundle at the CA's roots until shutdown.
pub async fn run(client: Client, signer: String, ca: SigningCa, shutdown: Shutdown) {
    let api: Api<ClusterTrustBundle> = Api::all(client);
    let name = trust_bundle_name(&signer);
    let mut published: Option<(String, tokio::time::Instant)> = None;
    let mut refused: Option<String> = None;
    loop {
        let source = ca.current().trust_bundle_pem().to_string();
        let changed = published.as_ref().is_none_or(|(pem, _)| *pem != source);
        let stale = published
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= REAPPLY_EVERY);
        if changed || stale {
            match cluster_trust_bundle(&source) {
                Ok(roots) => match apply(&api, &name, &signer, &roots).await {
                    Ok(()) => {
                        if changed {
                            info!(bundle = %name, "ClusterTrustBundle published");
                        }
                        published = Some((source, tokio::time::Instant::now()));
                    }
                    Err(e) => warn!(
                        bundle = %name, error = %e,
                        "publishing the ClusterTrustBundle failed; retrying"
                    ),
                },
                // Said once per CA bundle, not every few seconds.
                Err(why) if refused.as_deref() != Some(source.as_str()) => {
                    warn!(
                        bundle = %name, error = %why,
                        "the CA bundle cannot be published as a ClusterTrustBundle"
                    );
                    refused = Some(source);
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {},
            _ = shutdown.clone().requested() => return,
        }
    }
}

async fn apply(
    api: &Api<ClusterTrustBundle>,
    name: &str,
    signer: &str,
    roots: &str,
) -> Result<(), kube::Error> {
    let bundle = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "ClusterTrustBundle",
        "metadata": {"name": name, "labels": {MANAGED_BY: MANAGER}},
        "spec": {"signerName": signer, "trustBundle": roots},
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&bundle),
    )
    .await
    .map(|_| ())
}
