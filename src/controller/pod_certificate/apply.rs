//! Writes the answer to a PodCertificateRequest: its status (Issued with the chain and times, or
//! Denied / Failed with a reason), a Warning Event on the pod for a denial, the counts.

use k8s_openapi::api::certificates::v1::PodCertificateRequest;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use time::OffsetDateTime;

use super::context::PodCertContext;
use super::plan::Issuance;
use nhi_core::podcert::decide::{Denial, begin_refresh_at};
use nhi_core::podcert::sign::sign_pod_certificate;
use nhi_identity::timestamp::rfc3339;

/// The condition types (and the reason of an issuance) the API defines.
const ISSUED: &str = "Issued";
const DENIED: &str = "Denied";
const FAILED: &str = "Failed";

/// Signs and writes the certificate; a CA that cannot sign it fails the request.
pub async fn issue(
    ctx: &PodCertContext,
    pcr: &PodCertificateRequest,
    issuance: &Issuance,
    now: OffsetDateTime,
) -> Result<(), kube::Error> {
    let ca = ctx.ca.current();
    let cert = match sign_pod_certificate(&ca, &issuance.request, &issuance.spki, now) {
        Ok(c) => c,
        Err(e) => {
            let denial = Denial::new("SigningFailed", e.to_string());
            return answer(ctx, pcr, FAILED, &denial).await;
        }
    };
    let info = &cert.leaf.info;
    let refresh = begin_refresh_at(
        info.not_before,
        info.not_after,
        issuance.renewal_fraction,
        &issuance.jitter_key,
    );
    let message = format!(
        "issued for MachineIdentity {} ({}), serial {}",
        issuance.identity, issuance.request.spiffe_id, info.serial_hex
    );
    let status = json!({"status": {
        "conditions": [condition(ISSUED, ISSUED, &message, now)],
        "certificateChain": cert.chain_pem,
        "notBefore": rfc3339(info.not_before),
        "notAfter": rfc3339(info.not_after),
        "beginRefreshAt": rfc3339(refresh),
    }});
    write_status(ctx, pcr, &status).await?;
    ctx.reporter.metrics.count_pod_certificate(ISSUED, ISSUED);
    tracing::info!(
        namespace = %pcr.namespace().unwrap_or_default(), pod = %pcr.spec.pod_name,
        identity = %issuance.identity, serial = %info.serial_hex,
        not_after = %rfc3339(info.not_after), begin_refresh_at = %rfc3339(refresh),
        "pod certificate issued"
    );
    Ok(())
}

/// Denies the request (final for the pod) with the denial's reason and message.
pub async fn deny(
    ctx: &PodCertContext,
    pcr: &PodCertificateRequest,
    denial: &Denial,
) -> Result<(), kube::Error> {
    answer(ctx, pcr, DENIED, denial).await
}

async fn answer(
    ctx: &PodCertContext,
    pcr: &PodCertificateRequest,
    kind: &str,
    denial: &Denial,
) -> Result<(), kube::Error> {
    let now = OffsetDateTime::now_utc();
    let status = json!({"status": {
        "conditions": [condition(kind, denial.reason, &denial.message, now)],
    }});
    write_status(ctx, pcr, &status).await?;
    ctx.reporter
        .metrics
        .count_pod_certificate(kind, denial.reason);
    // Shown with the pod (kubectl describe pod), where its author looks.
    let pod = Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(pcr.spec.pod_name.clone()),
            namespace: pcr.namespace(),
            uid: Some(pcr.spec.pod_uid.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let note = format!(
        "pod certificate for signer {} {}: {} ({})",
        pcr.spec.signer_name,
        kind.to_lowercase(),
        denial.message,
        denial.reason
    );
    ctx.reporter.publish(
        &pod,
        EventType::Warning,
        &format!("PodCertificate{kind}"),
        note,
    );
    Ok(())
}

fn condition(type_: &str, reason: &str, message: &str, now: OffsetDateTime) -> serde_json::Value {
    json!({
        "type": type_,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": rfc3339(now),
    })
}

async fn write_status(
    ctx: &PodCertContext,
    pcr: &PodCertificateRequest,
    status: &serde_json::Value,
) -> Result<(), kube::Error> {
    let api: Api<PodCertificateRequest> =
        Api::namespaced(ctx.client.clone(), &pcr.namespace().unwrap_or_default());
    api.patch_status(
        &pcr.name_any(),
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await
    .map(|_| ())
}
