//! Records each pod certificate on its identity (`status.podCertificates`) before the request is
//! answered, so that whatever later revokes the identity's certificates (a withdrawn grant, a
//! suspension, its deletion) knows it. One writer per identity at a time, writing every entry
//! that waited meanwhile in one patch (group commit: a burst of requests for one identity costs
//! a few writes, not one each); each write names the version it read.

use kube::Api;
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::oneshot;

use super::context::PodCertContext;
use super::record_queue::{RecordError, Waiting, lock};
use crate::controller::status_write::write_status_part;
use nhi_api::{MachineIdentity, PodCertificateRecord};
use nhi_core::podcert::record::{RecordFull, with_all_issued};

/// The field manager of the signer's status writes.
const FIELD_MANAGER: &str = "nhi-operator-signer";
/// Conflicting writes (the identity controller's) tried again this often.
const ATTEMPTS: usize = 8;

/// Adds `entry` to identity `name`'s record in `namespace`; returns once it is written (by this
/// call, or by the writer that took it with others).
pub async fn record(
    ctx: &PodCertContext,
    namespace: &str,
    name: &str,
    entry: PodCertificateRecord,
    now: OffsetDateTime,
) -> Result<(), RecordError> {
    let queue = ctx.record_queues.of(&format!("{namespace}/{name}"));
    let (done, mut outcome) = oneshot::channel();
    lock(&queue.waiting).push(Waiting { entry, done });
    // Whichever comes first: the entry written by the writer of the moment (with others), or
    // the turn to write (everything waiting, this entry included unless taken meanwhile).
    tokio::select! {
        biased;
        written = &mut outcome => return written.unwrap_or_else(|_| Err(stopped())),
        writer = queue.writer.clone().lock_owned() => {
            let batch = std::mem::take(&mut *lock(&queue.waiting));
            if !batch.is_empty() {
                // On a task of its own, holding the writer's turn: a reconcile dropped meanwhile
                // (shutdown) does not fail the others' entries it took.
                let (client, namespace, name) = (ctx.client.clone(), namespace.to_string(), name.to_string());
                tokio::spawn(async move {
                    write_batch(client, &namespace, &name, batch, now).await;
                    drop(writer);
                });
            }
        }
    }
    outcome.await.unwrap_or_else(|_| Err(stopped()))
}

fn stopped() -> RecordError {
    RecordError::Write("the writer of the batch stopped before writing it".into())
}

/// Writes `batch` in one patch and tells each entry's caller how it went.
async fn write_batch(
    client: kube::Client,
    namespace: &str,
    name: &str,
    batch: Vec<Waiting>,
    now: OffsetDateTime,
) {
    let entries: Vec<PodCertificateRecord> = batch.iter().map(|w| w.entry.clone()).collect();
    let started = std::time::Instant::now();
    let written = write(client, namespace, name, entries, now).await;
    tracing::debug!(
        %namespace, identity = %name, entries = batch.len(),
        took_ms = started.elapsed().as_millis() as u64, "pod certificates recorded"
    );
    for (i, waiting) in batch.into_iter().enumerate() {
        let outcome = match &written {
            Ok(outcomes) => outcomes[i].map_err(RecordError::from),
            Err(e) => Err(RecordError::Write(e.to_string())),
        };
        let _ = waiting.done.send(outcome);
    }
}

/// Reads the identity, adds `entries` and writes the record, again on a conflict.
async fn write(
    client: kube::Client,
    namespace: &str,
    name: &str,
    entries: Vec<PodCertificateRecord>,
    now: OffsetDateTime,
) -> Result<Vec<Result<(), RecordFull>>, kube::Error> {
    let api: Api<MachineIdentity> = Api::namespaced(client, namespace);
    write_status_part(
        &api,
        name,
        ("podCertificates", FIELD_MANAGER, ATTEMPTS),
        |mi| {
            let current = mi
                .status
                .as_ref()
                .and_then(|s| s.pod_certificates.as_deref());
            let (next, outcomes) = with_all_issued(current, entries.clone(), now);
            (next.map(|n| json!(n)), outcomes)
        },
    )
    .await
}
