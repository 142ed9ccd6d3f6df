//! The queue of pod-certificate records waiting for their identity's writer (see `record`):
//! one per identity, dropped once nobody holds it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use nhi_api::PodCertificateRecord;
use nhi_core::podcert::record::RecordFull;

/// Queues kept before those nobody holds are dropped.
const PRUNE_ABOVE: usize = 1024;

/// Why a certificate could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Full(#[from] RecordFull),
    #[error("recording the pod certificate on its identity failed: {0}")]
    Write(String),
}

/// An entry waiting for the identity's writer, and where its outcome goes.
pub struct Waiting {
    pub entry: PodCertificateRecord,
    pub done: oneshot::Sender<Result<(), RecordError>>,
}

/// One identity's entries waiting to be written, and the lock of the one writing.
#[derive(Default)]
pub struct RecordQueue {
    pub waiting: Mutex<Vec<Waiting>>,
    /// Held by the one writing (across its spawned write).
    pub writer: Arc<tokio::sync::Mutex<()>>,
}

/// The queue of each identity (`namespace/name`).
#[derive(Default)]
pub struct RecordQueues(Mutex<HashMap<String, Arc<RecordQueue>>>);

impl RecordQueues {
    pub fn of(&self, key: &str) -> Arc<RecordQueue> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, q| Arc::strong_count(q) > 1);
        }
        map.entry(key.to_string()).or_default().clone()
    }
}

/// Locks `m`, also after a panic elsewhere left it poisoned (its data is a plain queue).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
