//! A status part written by a writer other than the identity controller (the pod-certificate
//! signer's record, the delegation counts): read the identity, compute the part from what was
//! read, merge-patch it conditional on the version read, and again on a conflict.

use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use nhi_api::MachineIdentity;

/// Writes `status.<field>` of identity `name` as `next` computes it from the identity read (None:
/// nothing to write), as `field_manager`, trying up to `attempts` times on a conflict (the last
/// conflict is returned). Returns what `next` returned with the part.
pub async fn write_status_part<T>(
    api: &Api<MachineIdentity>,
    name: &str,
    (field, field_manager, attempts): (&str, &str, usize),
    mut next: impl FnMut(&MachineIdentity) -> (Option<serde_json::Value>, T),
) -> Result<T, kube::Error> {
    let params = PatchParams {
        field_manager: Some(field_manager.into()),
        ..PatchParams::default()
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mi = api.get(name).await?;
        let (part, out) = next(&mi);
        let Some(part) = part else {
            return Ok(out);
        };
        let patch = json!({
            "metadata": {"resourceVersion": mi.resource_version()},
            "status": {field: part},
        });
        match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(out),
            Err(kube::Error::Api(e)) if e.code == 409 && attempt < attempts => {}
            Err(e) => return Err(e),
        }
    }
}
