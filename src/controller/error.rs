//! Errors of a MachineIdentity reconcile. Each variant's name is its stable reason (Events,
//! metrics); [`super::report::report_failure`] turns them into Warning Events.

use std::sync::Arc;

use super::report::Reportable;

/// Why a MachineIdentity reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API request failed: {0}")]
    KubeApiError(#[source] Arc<kube::Error>),
    #[error("certificate work was interrupted: {0}")]
    IssuanceInterrupted(#[from] tokio::task::JoinError),
    #[error("the identity's Secret appeared while it was being created; checking who owns it")]
    SecretAppeared,
    #[error("the object has no namespace")]
    NotNamespaced,
    #[error("{0}")]
    RevocationFailed(#[from] crate::revoke::RevokeError),
    #[error("the identity changed while it was being updated; looking again")]
    Conflict,
}

impl From<kube::Error> for ReconcileError {
    fn from(e: kube::Error) -> Self {
        ReconcileError::KubeApiError(Arc::new(e))
    }
}

impl Reportable for ReconcileError {
    fn reason(&self) -> &'static str {
        match self {
            ReconcileError::KubeApiError(_) => "KubeApiError",
            ReconcileError::IssuanceInterrupted(_) => "IssuanceInterrupted",
            ReconcileError::SecretAppeared => "SecretAppeared",
            ReconcileError::NotNamespaced => "NotNamespaced",
            ReconcileError::RevocationFailed(_) => "RevocationFailed",
            ReconcileError::Conflict => "Conflict",
        }
    }

    /// Our own Secret not in the cache yet, or the identity changed under us: the cache shows
    /// it in a moment, and nobody needs to be told.
    fn transient(&self) -> bool {
        matches!(
            self,
            ReconcileError::SecretAppeared | ReconcileError::Conflict
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revoke::RevokeError;

    #[test]
    fn reasons_are_the_variant_names() {
        let errors = [
            ReconcileError::SecretAppeared,
            ReconcileError::NotNamespaced,
            ReconcileError::Conflict,
            ReconcileError::RevocationFailed(RevokeError::Stopped),
            ReconcileError::from(kube::Error::LinesCodecMaxLineLengthExceeded),
        ];
        for e in &errors {
            let debug = format!("{e:?}");
            let variant = debug.split(['(', ' ', '{']).next().unwrap_or_default();
            assert_eq!(e.reason(), variant);
        }
        assert!(errors[0].transient() && errors[2].transient());
        assert!(!errors[3].transient() && !errors[4].transient());
    }
}
