//! The reconcilers' side of revocation: ask for certificates to be revoked and wait until the
//! revocation is persisted; read the trust documents last published.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use tokio::sync::{Notify, mpsc, oneshot};

use super::trust::TrustDocuments;
use nhi_core::revocation::quota::Refusal;
use nhi_core::revocation::{Revocation, RevocationRecord};

/// How long a revocation may wait for the service's answer.
pub const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a revocation was not recorded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RevokeError {
    #[error("the revocation could not be recorded: {0}")]
    NotRecorded(String),
    #[error("the revocation was refused: {0}")]
    Refused(Refusal),
    #[error("the revocation service has stopped (the operator is shutting down)")]
    Stopped,
}

/// One request: revoke these, then say whether it is persisted.
pub(super) struct Request {
    pub revocations: Vec<Revocation>,
    /// The identity is being deleted: its last certificates are revoked whatever its own quota
    /// (they are few, and an identity whose quota a revoke loop spent must still be deletable);
    /// the namespace's quota and the capacity still apply.
    pub deleting: bool,
    /// Answered with how many of the certificates were newly revoked.
    pub done: oneshot::Sender<Result<usize, RevokeError>>,
}

/// State shared between the handle and the service.
#[derive(Default)]
pub(super) struct Shared {
    pub documents: ArcSwapOption<TrustDocuments>,
    /// Something changed which namespaces need a trust ConfigMap.
    pub namespaces_changed: Notify,
    /// The namespaces that have one (as far as the service knows).
    pub published: Mutex<HashSet<String>>,
    /// The CA or its bundle changed: sign and publish again.
    pub ca_changed: Notify,
    /// The record as last loaded or written; None before the service has loaded it.
    pub record: ArcSwapOption<RecordSummary>,
}

/// What the rest of the operator reads of the revocation record.
pub(super) struct RecordSummary {
    /// The record (the serials on it are what RoleBindings leave out), shared with the service.
    pub record: Arc<RevocationRecord>,
    /// PEM bytes its entries add to one CRL (whether a CA rotation may switch).
    pub crl_bytes: usize,
}

/// Cloneable handle on the revocation service.
#[derive(Clone)]
pub struct Revoker {
    tx: mpsc::UnboundedSender<Request>,
    shared: Arc<Shared>,
}

/// The service's end: requests in, shared state.
pub struct Inbox {
    pub(super) rx: mpsc::UnboundedReceiver<Request>,
    pub(super) shared: Arc<Shared>,
}

/// A handle and the inbox for the service that answers it.
pub fn channel() -> (Revoker, Inbox) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::default());
    (
        Revoker {
            tx,
            shared: shared.clone(),
        },
        Inbox { rx, shared },
    )
}

impl RevokeError {
    /// A stable CamelCase word for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            RevokeError::Refused(r) => r.reason(),
            RevokeError::NotRecorded(_) | RevokeError::Stopped => "RevocationFailed",
        }
    }
}

impl Revoker {
    /// Says the CA or its trust bundle changed: the CRL is signed again and the trust documents
    /// republished with the new bundle.
    pub fn ca_changed(&self) {
        self.shared.ca_changed.notify_one();
    }

    /// Revokes `revocations` and returns once they are persisted in the revocation record (the
    /// CRL is signed and published right after), with how many were not revoked before. Already
    /// revoked or expired certificates are fine: nothing to do. Gives up after
    /// [`ANSWER_TIMEOUT`].
    pub async fn revoke(&self, revocations: Vec<Revocation>) -> Result<usize, RevokeError> {
        self.request(revocations, false).await
    }

    /// [`Self::revoke`] for an identity being deleted: not held to its own quota.
    pub async fn revoke_on_deletion(
        &self,
        revocations: Vec<Revocation>,
    ) -> Result<usize, RevokeError> {
        self.request(revocations, true).await
    }

    async fn request(
        &self,
        revocations: Vec<Revocation>,
        deleting: bool,
    ) -> Result<usize, RevokeError> {
        if revocations.is_empty() {
            return Ok(0);
        }
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Request {
                revocations,
                deleting,
                done,
            })
            .map_err(|_| RevokeError::Stopped)?;
        match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
            Ok(answer) => answer.map_err(|_| RevokeError::Stopped)?,
            Err(_) => Err(RevokeError::NotRecorded(format!(
                "no answer from the revocation service within {}s",
                ANSWER_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Stores documents as if the service had signed them (tests of what serves them).
    #[cfg(test)]
    pub fn publish_for_test(&self, documents: TrustDocuments) {
        self.shared.documents.store(Some(Arc::new(documents)));
    }

    /// The trust documents last published, once the first CRL is signed.
    pub fn documents(&self) -> Option<Arc<TrustDocuments>> {
        self.shared.documents.load_full()
    }

    /// Whether the record holds `serial_hex` (as far as this replica's service knows: nothing
    /// before it has loaded the record).
    pub fn is_revoked(&self, serial_hex: &str) -> bool {
        (self.shared.record.load().as_ref()).is_some_and(|r| r.record.contains(serial_hex))
    }

    /// PEM bytes the record's entries add to one CRL; None before the service has loaded the
    /// record.
    pub fn record_crl_bytes(&self) -> Option<usize> {
        self.shared.record.load().as_ref().map(|r| r.crl_bytes)
    }

    /// An identity exists in `namespace`: make sure it has a trust ConfigMap.
    pub fn identity_seen(&self, namespace: &str) {
        let known = self
            .shared
            .published
            .lock()
            .map(|p| p.contains(namespace))
            .unwrap_or(false);
        if !known {
            self.shared.namespaces_changed.notify_one();
        }
    }

    /// An identity is gone: a namespace may have no identities left.
    pub fn identity_gone(&self) {
        self.shared.namespaces_changed.notify_one();
    }
}
