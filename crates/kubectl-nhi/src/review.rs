//! `kubectl nhi review <name> --until <date>`: re-attests an identity, recording who and when.

use clap::Args;
use kube::Api;
use kube::api::{Patch, PatchParams};
use nhi_api::MachineIdentity;
use nhi_core::labels::{REVIEWED_AT, REVIEWED_BY};
use nhi_identity::timestamp::rfc3339;
use time::{Date, OffsetDateTime};

use crate::cluster::{GlobalArgs, connect, who_am_i};
use crate::dates::{format_date, validate_review_date};
use crate::error::{PluginError, Target, from_kube};

/// The field manager the plugin's patches are recorded under.
pub const FIELD_MANAGER: &str = "kubectl-nhi";

/// `kubectl nhi review <name> --until <YYYY-MM-DD>`.
#[derive(Args, Debug)]
pub struct ReviewArgs {
    /// The MachineIdentity to re-attest.
    pub name: String,
    /// The new review date (YYYY-MM-DD, today or later): the identity lapses at 00:00 UTC the
    /// day after.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub until: String,
}

/// The JSON merge patch that moves `spec.reviewBy` and records the reviewer and the time.
pub fn review_patch(until: Date, reviewer: &str, now: OffsetDateTime) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"annotations": {
            REVIEWED_BY: reviewer,
            REVIEWED_AT: rfc3339(now),
        }},
        "spec": {"reviewBy": format_date(until)},
    })
}

/// Runs `review`.
pub async fn run(global: &GlobalArgs, args: &ReviewArgs) -> Result<String, PluginError> {
    let now = OffsetDateTime::now_utc();
    let until = validate_review_date(&args.until, now).map_err(PluginError::Invalid)?;
    let cluster = connect(global).await?;
    let ns = cluster.namespace.clone();
    let target = Target::Identity {
        namespace: &ns,
        name: &args.name,
    };
    let api: Api<MachineIdentity> = Api::namespaced(cluster.client.clone(), &ns);
    let before = api
        .get(&args.name)
        .await
        .map_err(|e| from_kube(e, target))?;
    let reviewer = who_am_i(&cluster, global).await?;
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    };
    api.patch(
        &args.name,
        &params,
        &Patch::Merge(review_patch(until, &reviewer, now)),
    )
    .await
    .map_err(|e| from_kube(e, target))?;
    let previous = before.spec.review_by.as_deref().unwrap_or("none");
    Ok(format!(
        "machineidentity {ns}/{} reviewed by {reviewer}: reviewBy {previous} -> {}\n",
        args.name,
        format_date(until)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn the_patch_moves_the_date_and_records_who_and_when() {
        let patch = review_patch(
            date!(2026 - 09 - 30),
            "alice@example.com",
            datetime!(2026-03-01 12:00:00.5 UTC),
        );
        assert_eq!(
            patch,
            serde_json::json!({
                "metadata": {"annotations": {
                    "nhi.dev/reviewed-by": "alice@example.com",
                    "nhi.dev/reviewed-at": "2026-03-01T12:00:00Z",
                }},
                "spec": {"reviewBy": "2026-09-30"},
            })
        );
    }
}
