//! Records each pod certificate on its identity (`status.podCertificates`) before the request is
//! answered, so that whatever later revokes the identity's certificates (a withdrawn grant, a
//! suspension, its deletion) knows it. One writer per identity at a time; each write names the
//! version it read.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use time::OffsetDateTime;

use super::context::PodCertContext;
use nhi_api::{MachineIdentity, PodCertificateRecord};
use nhi_core::podcert::record::{RecordFull, with_issued};

/// The field manager of the signer's status writes.
const FIELD_MANAGER: &str = "nhi-operator-signer";
/// Conflicting writes (the identity controller's, another request's) tried again this often.
const ATTEMPTS: usize = 8;

/// Why a certificate could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Full(#[from] RecordFull),
    #[error("recording the pod certificate on its identity failed: {0}")]
    Kube(#[from] kube::Error),
}

/// Adds `entry` to identity `name`'s record in `namespace`.
pub async fn record(
    ctx: &PodCertContext,
    namespace: &str,
    name: &str,
    entry: PodCertificateRecord,
    now: OffsetDateTime,
) -> Result<(), RecordError> {
    let lock = ctx.record_locks.of(&format!("{namespace}/{name}"));
    let _held = lock.lock().await;
    let api: Api<MachineIdentity> = Api::namespaced(ctx.client.clone(), namespace);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mi = api.get(name).await?;
        let current = mi.status.as_ref().and_then(|s| s.pod_certificates.as_ref());
        let next = with_issued(current, entry.clone(), now)?;
        let patch = json!({
            "metadata": {"resourceVersion": mi.resource_version()},
            "status": {"podCertificates": next},
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            // Another write came between: read again (the last attempt's conflict is returned).
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < ATTEMPTS => {}
            Err(e) => return Err(e.into()),
        }
    }
}
