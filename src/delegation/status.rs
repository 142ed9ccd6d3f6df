//! Writes the parents' `status.delegation` in batches: delegations are gathered per identity in
//! memory and written at most every [`WRITE_EVERY`], one read and one conditional write per
//! identity, so thousands of children a minute cost a few writes, never one object per child.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::{Api, Client};
use serde_json::json;
use tokio::sync::Notify;

use crate::controller::status_write::write_status_part;
use nhi_api::{DelegationRecord, MachineIdentity};
use nhi_core::delegate::record::{Batch, with_batch};

/// How long delegations gather before they are written.
pub const WRITE_EVERY: Duration = Duration::from_secs(2);
/// The field manager of `status.delegation`.
const FIELD_MANAGER: &str = "nhi-operator-delegation";
/// Writes tried on a conflict before the batch is dropped (the audit log keeps it).
const ATTEMPTS: usize = 3;

/// Delegations not written yet, per identity (`namespace`, `name`).
#[derive(Default)]
pub struct StatusQueue {
    pending: Mutex<HashMap<(String, String), Batch>>,
    wake: Notify,
}

impl StatusQueue {
    /// A child was signed for an identity of `namespace` named `name`.
    pub fn signed(&self, namespace: &str, name: &str, record: DelegationRecord) {
        self.add(namespace, name, |b| b.add_signed(record));
    }

    /// A request of an identity's chain was refused.
    pub fn refused(&self, namespace: &str, name: &str) {
        self.add(namespace, name, Batch::add_refused);
    }

    fn add(&self, namespace: &str, name: &str, f: impl FnOnce(&mut Batch)) {
        if let Ok(mut pending) = self.pending.lock() {
            f(pending
                .entry((namespace.to_string(), name.to_string()))
                .or_default());
        }
        self.wake.notify_one();
    }

    fn take(&self) -> HashMap<(String, String), Batch> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }
}

/// Writes the batches until the process ends.
pub async fn run(queue: Arc<StatusQueue>, client: Client) {
    loop {
        queue.wake.notified().await;
        tokio::time::sleep(WRITE_EVERY).await;
        for ((namespace, name), batch) in queue.take() {
            if let Err(e) = write(&client, &namespace, &name, &batch).await {
                tracing::warn!(%namespace, %name, error = %e, delegated = batch.signed,
                    refused = batch.refused,
                    "cannot record delegations in status (the audit log has them)");
            }
        }
    }
}

/// Adds `batch` to the identity's status, reading again on a conflict.
async fn write(
    client: &Client,
    namespace: &str,
    name: &str,
    batch: &Batch,
) -> Result<(), kube::Error> {
    let api: Api<MachineIdentity> = Api::namespaced(client.clone(), namespace);
    let written = write_status_part(&api, name, ("delegation", FIELD_MANAGER, ATTEMPTS), |mi| {
        let current = mi.status.as_ref().and_then(|s| s.delegation.as_deref());
        (Some(json!(with_batch(current, batch))), ())
    })
    .await;
    match written {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    }
}
