//! Writes the answer to a PodCertificateRequest: its status (Issued with the chain and times, or
//! Denied / Failed with a reason), a Warning Event on the pod for a denial, the counts. Each
//! write names the resourceVersion it answers, so two answers to one request cannot both land.

use k8s_openapi::api::certificates::v1::PodCertificateRequest;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use serde_json::json;
use time::OffsetDateTime;

use super::SignerError;
use super::context::PodCertContext;
use super::plan::Issuance;
use super::record::record;
use super::record_queue::RecordError;
use nhi_api::PodCertificateRecord;
use nhi_core::podcert::decide::{CERTIFICATE_REJECTED, Denial, SIGNING_FAILED, begin_refresh_at};
use nhi_core::podcert::sign::{PodCertificate, sign_pod_certificate};
use nhi_identity::timestamp::rfc3339;

/// The condition types (and the reason of an issuance) the API defines.
const ISSUED: &str = "Issued";
const DENIED: &str = "Denied";
const FAILED: &str = "Failed";

/// Whether the request got its answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answered {
    Yes,
    /// Not now: the identity's record of pod certificates is full (look again later).
    RecordFull,
}

/// Signs (off the async runtime), records the certificate on its identity, then answers.
pub async fn issue(
    ctx: &PodCertContext,
    pcr: &PodCertificateRequest,
    issuance: &Issuance,
    now: OffsetDateTime,
) -> Result<Answered, SignerError> {
    let ca = ctx.ca.current();
    let (request, spki) = (issuance.request.clone(), issuance.spki.clone());
    let signed =
        tokio::task::spawn_blocking(move || sign_pod_certificate(&ca, &request, &spki, now))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
    let cert: PodCertificate = match signed {
        Ok(c) => c,
        Err(why) => {
            answer(ctx, pcr, FAILED, &Denial::new(SIGNING_FAILED, why)).await?;
            return Ok(Answered::Yes);
        }
    };
    let info = &cert.leaf.info;
    let namespace = pcr.namespace().unwrap_or_default();
    let entry = PodCertificateRecord {
        serial_number: info.serial_hex.clone(),
        not_after: rfc3339(info.not_after),
        pod: pcr.spec.pod_name.clone(),
        grants: issuance.grants.clone(),
    };
    match record(ctx, &namespace, &issuance.identity, entry, now).await {
        Ok(()) => {}
        Err(RecordError::Full(full)) => {
            tracing::warn!(identity = %issuance.identity, %namespace, error = %full, "pod certificate not issued yet");
            return Ok(Answered::RecordFull);
        }
        Err(RecordError::Write(why)) => return Err(SignerError::Record(why)),
    }
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
    let status = json!({
        "conditions": [condition(ISSUED, ISSUED, &message, now)],
        "certificateChain": cert.chain_pem,
        "notBefore": rfc3339(info.not_before),
        "notAfter": rfc3339(info.not_after),
        "beginRefreshAt": rfc3339(refresh),
    });
    match write_status(ctx, pcr, status).await? {
        Written::Yes => {}
        Written::AnsweredElsewhere => return Ok(Answered::Yes),
        // The apiserver's validation refuses this answer: writing it again would fail again.
        Written::Refused(why) => {
            answer(ctx, pcr, FAILED, &Denial::new(CERTIFICATE_REJECTED, why)).await?;
            return Ok(Answered::Yes);
        }
    }
    ctx.reporter.metrics.count_pod_certificate(ISSUED, ISSUED);
    observe_wait(ctx, pcr, ISSUED);
    tracing::info!(
        namespace = %pcr.namespace().unwrap_or_default(), pod = %pcr.spec.pod_name,
        identity = %issuance.identity, serial = %info.serial_hex,
        not_after = %rfc3339(info.not_after), begin_refresh_at = %rfc3339(refresh),
        "pod certificate issued"
    );
    Ok(Answered::Yes)
}

/// Denies the request (final for the pod) with the denial's reason and message.
pub async fn deny(
    ctx: &PodCertContext,
    pcr: &PodCertificateRequest,
    denial: &Denial,
) -> Result<(), kube::Error> {
    answer(ctx, pcr, DENIED, denial).await
}

/// Writes a Denied or Failed answer, counts it and tells the pod.
async fn answer(
    ctx: &PodCertContext,
    pcr: &PodCertificateRequest,
    kind: &str,
    denial: &Denial,
) -> Result<(), kube::Error> {
    let now = OffsetDateTime::now_utc();
    let status = json!({"conditions": [condition(kind, denial.reason, &denial.message, now)]});
    match write_status(ctx, pcr, status).await? {
        Written::Yes => {}
        Written::AnsweredElsewhere => return Ok(()),
        Written::Refused(why) => {
            tracing::error!(request = %pcr.name_any(), error = %why, "the apiserver refused a {kind} answer");
            return Ok(());
        }
    }
    ctx.reporter
        .metrics
        .count_pod_certificate(kind, denial.reason);
    observe_wait(ctx, pcr, kind);
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

/// Records how long the request waited for its answer (what the kubelet, and the pod, waited).
fn observe_wait(ctx: &PodCertContext, pcr: &PodCertificateRequest, outcome: &str) {
    if let Some(created) = &pcr.metadata.creation_timestamp {
        let now = k8s_openapi::jiff::Timestamp::now();
        let waited = now.duration_since(created.0).as_secs_f64().max(0.0);
        ctx.reporter
            .metrics
            .observe_pod_certificate_wait(outcome, waited);
    }
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

/// How a status write ended.
enum Written {
    Yes,
    /// The request changed since it was read and has its answer now (another reconcile).
    AnsweredElsewhere,
    /// The apiserver's validation refused it: the message.
    Refused(String),
}

/// Writes `status` onto the version of the request that was read.
async fn write_status(
    ctx: &PodCertContext,
    pcr: &PodCertificateRequest,
    status: serde_json::Value,
) -> Result<Written, kube::Error> {
    let api: Api<PodCertificateRequest> =
        Api::namespaced(ctx.client.clone(), &pcr.namespace().unwrap_or_default());
    let patch = json!({
        "metadata": {"resourceVersion": pcr.resource_version()},
        "status": status,
    });
    match api
        .patch_status(
            &pcr.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(Written::Yes),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 422 => {
            let now = api.get_opt(&pcr.name_any()).await?;
            if now.as_ref().is_none_or(super::answered) {
                return Ok(Written::AnsweredElsewhere);
            }
            match e.code {
                // Changed but unanswered (a label, an annotation): read again, answer again.
                409 => Err(kube::Error::Api(e)),
                _ => Ok(Written::Refused(e.message)),
            }
        }
        Err(e) => Err(e),
    }
}
