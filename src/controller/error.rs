//! Errors of a reconcile; each has a stable CamelCase reason used in Events and metrics.

/// Why a reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("certificate work was interrupted: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("the identity's Secret appeared while it was being created; checking who owns it")]
    SecretAppeared,
    #[error("the object has no namespace")]
    NotNamespaced,
    #[error("{0}")]
    Revocation(#[from] crate::revoke::RevokeError),
    #[error("the identity changed while it was being updated; looking again")]
    Conflict,
}

impl ReconcileError {
    /// Stable CamelCase reason (the variant name).
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::Kube(_) => "KubeApiError",
            ReconcileError::Join(_) => "IssuanceInterrupted",
            ReconcileError::SecretAppeared => "SecretAppeared",
            ReconcileError::NotNamespaced => "NotNamespaced",
            ReconcileError::Revocation(_) => "RevocationFailed",
            ReconcileError::Conflict => "Conflict",
        }
    }
}
