//! Errors of an Entitlement reconcile. Each variant's name is its stable reason (Events,
//! metrics); [`crate::controller::report::report_failure`] turns them into Warning Events.

use crate::controller::report::Reportable;

/// Why an Entitlement reconcile failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum EntitlementError {
    #[error("Kubernetes API request failed: {0}")]
    KubeApiError(#[from] kube::Error),
    #[error("the object has no namespace")]
    NotNamespaced,
}

impl Reportable for EntitlementError {
    fn reason(&self) -> &'static str {
        match self {
            EntitlementError::KubeApiError(_) => "KubeApiError",
            EntitlementError::NotNamespaced => "NotNamespaced",
        }
    }
}
