//! Errors of a look at the CA Secret. Each variant's name is its stable reason;
//! [`crate::controller::report::report_failure`] turns them into Warning Events.

use crate::controller::report::Reportable;

/// Why a look at the CA Secret failed; the controller reports it and looks again.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("reading or writing the CA Secret failed: {0}")]
    KubeApiError(#[from] kube::Error),
    #[error("{0}")]
    RotationInvalid(String),
    #[error("generating the next CA failed")]
    NextRootNotGenerated(#[source] nhi_core::ca::CaError),
    #[error("generating the next CA failed: {0}")]
    GenerationInterrupted(#[from] tokio::task::JoinError),
}

impl Reportable for RotationError {
    fn reason(&self) -> &'static str {
        match self {
            RotationError::KubeApiError(_) => "KubeApiError",
            RotationError::RotationInvalid(_) => "RotationInvalid",
            RotationError::NextRootNotGenerated(_) => "NextRootNotGenerated",
            RotationError::GenerationInterrupted(_) => "GenerationInterrupted",
        }
    }

    /// Every failed look has always been counted under one name.
    fn counted_as(&self) -> &'static str {
        "CARotationFailed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::report::cause_chain;
    use nhi_core::ca::CaError;

    #[test]
    fn a_next_root_that_cannot_be_made_says_why_under_its_own_reason() {
        let err = RotationError::NextRootNotGenerated(CaError::NotACa);
        assert_eq!(err.reason(), "NextRootNotGenerated");
        assert_eq!(err.counted_as(), "CARotationFailed");
        assert_eq!(
            cause_chain(&err),
            "generating the next CA failed: the CA certificate is not a CA (basicConstraints cA is not true)"
        );
    }
}
