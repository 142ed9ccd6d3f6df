//! The steps of a plan, and what an issuance reports back.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::revoke::{Revocation, RevokeError};
use nhi_api::RevocationStatus;
use nhi_api::{Condition, KeyAlgorithm, KubernetesAccessStatus, MachineIdentityStatus};
use nhi_core::issue::assess::{KnownCertificate, ReissueReason};
use nhi_core::issue::leaf::LeafRequest;
use nhi_identity::certificate::CertificateInfo;

/// What a reconcile does, in order.
#[derive(Clone, Debug)]
pub struct Plan {
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn of(steps: Vec<Step>) -> Self {
        Plan { steps }
    }
}

/// One thing a reconcile does.
#[derive(Clone, Debug)]
pub enum Step {
    /// Add the revoking finalizer (a merge patch of the finalizer list at the version seen).
    AddFinalizer,
    /// Remove it: the identity may go.
    RemoveFinalizer,
    /// Replace the trust bundle of the identity Secret at `version` with the CA's.
    RefreshTrustBundle {
        version: String,
    },
    /// Revoke certificates, then go on as the answer says.
    Revoke(Box<Revoke>),
    /// Remove the certificate, key, identity file and kubeconfig from the Secret at `version`.
    StripKeyMaterial {
        version: String,
    },
    /// Issue a certificate and write the Secret; [`super::settle`] plans the rest from the
    /// report.
    Issue(Box<Issuance>),
    /// Delete the identity (it is retired).
    DeleteIdentity,
    /// Write the identity's status (server-side apply) and remember it was written.
    WriteStatus(Box<MachineIdentityStatus>),
    /// Show in status that a deletion waits for its revocation (best effort: a failure is
    /// logged, the Event says it too).
    RecordRevocationFailure(Box<MachineIdentityStatus>),
    Publish(PlannedEvent),
    /// Count a failure under its reason.
    CountFailure(String),
    /// Count an issuance under its reason.
    CountIssued(&'static str),
    /// Record the certificate's expiry in the metrics.
    SetExpiry {
        not_after_unix: i64,
    },
    /// The identity is going away: its metric series go.
    ForgetMetrics,
    /// Remember the certificate in the Secret at `version` (a version a trust bundle refresh of
    /// this reconcile moved on stands for the one it wrote).
    RememberCertificate {
        version: Option<String>,
        certificate: KnownCertificate,
    },
    /// The certificate in the Secret is no longer known.
    ForgetCertificate,
    RememberRevocation(RevocationStatus),
    /// Forget everything remembered about the identity.
    ForgetIdentity,
    /// Log a line about the identity.
    Log(String),
    /// The reconcile fails (and is retried).
    Fail(Failure),
    /// Done: come back as said.
    Finish(Requeue),
}

/// A revocation and what follows it.
#[derive(Clone, Debug)]
pub struct Revoke {
    /// The certificates to revoke, or why they cannot be known (the Secret could not be read).
    pub revocations: Result<Vec<Revocation>, RevokeError>,
    pub on_failure: OnRevokeFailure,
    /// Carried out next when some certificate was newly revoked.
    pub if_fresh: Vec<Step>,
    /// Carried out next when none was.
    pub if_none_fresh: Vec<Step>,
}

impl Revoke {
    /// A revocation whose failure fails the reconcile, with nothing depending on its answer.
    pub fn plain(revocations: Result<Vec<Revocation>, RevokeError>) -> Step {
        Step::Revoke(Box::new(Revoke {
            revocations,
            on_failure: OnRevokeFailure::FailReconcile,
            if_fresh: vec![],
            if_none_fresh: vec![],
        }))
    }
}

/// What a failed revocation means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnRevokeFailure {
    /// The reconcile fails and is retried.
    FailReconcile,
    /// A deletion waits for it (see [`super::deletion_not_recorded`]).
    HoldDeletion,
    /// A revoke request refused over a quota is answered as refused (see
    /// [`super::revoke_request_refused`]); other failures fail the reconcile.
    RefuseRequest,
}

/// Why a plan fails the reconcile.
#[derive(Clone, Debug)]
pub enum Failure {
    /// The identity Secret could not be read.
    SecretUnreadable(Arc<kube::Error>),
    /// A Secret of ours exists that the caches do not show yet.
    SecretAppeared,
}

/// An Event to publish about the identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

impl PlannedEvent {
    pub fn new(warning: bool, reason: &str, note: String) -> Self {
        PlannedEvent {
            warning,
            reason: reason.to_string(),
            note,
        }
    }

    pub fn warning(reason: &str, note: String) -> Self {
        Self::new(true, reason, note)
    }

    pub fn normal(reason: &str, note: String) -> Self {
        Self::new(false, reason, note)
    }
}

/// When to look at the identity again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    After(std::time::Duration),
    /// Only when something changes.
    AwaitChange,
}

/// A certificate to issue, and what settles the outcome.
#[derive(Clone, Debug)]
pub struct Issuance {
    /// What goes into the certificate.
    pub request: LeafRequest,
    pub key_algorithm: KeyAlgorithm,
    /// The hash of what shapes the certificate (annotated on the Secret).
    pub inputs_hash: String,
    pub reason: ReissueReason,
    /// The first certificate of the identity (the Event says `Issued`).
    pub first: bool,
    /// The current certificate and its renewal time, when it can be used meanwhile.
    pub still_valid: Option<(CertificateInfo, OffsetDateTime)>,
    pub credential: CredentialPlan,
    /// The Secret version judged ours (the write is an apply at it), or None: the Secret is
    /// created.
    pub secret_version: Option<String>,
    /// A re-issue under a new CA, taken only when the re-issue rate admits it: the still valid
    /// certificate kept otherwise.
    pub paced: Option<CertificateInfo>,
    /// When the Kubernetes client certificate in the Secret expires, if it holds one.
    pub kube_client_not_after: Option<String>,
    /// When the new certificate renews.
    pub renewal: RenewalInputs,
    pub conclusion: Conclusion,
}

/// The identity's Kubernetes client credential, renewed with its certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialPlan {
    NotWanted,
    /// Wanted, but Kubernetes access is disabled.
    Disabled,
    /// Obtained through a CertificateSigningRequest.
    Obtain,
}

/// What the renewal time of a new certificate depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct RenewalInputs {
    pub fraction: f64,
    pub identity_key: String,
    pub not_after_cap: Option<OffsetDateTime>,
}

/// What concludes every plan that looked at the identity's certificate: withdrawn grants,
/// requeue time, metrics and status.
#[derive(Clone, Debug, PartialEq)]
pub struct Conclusion {
    /// The grants the identity's certificate carries.
    pub grants: Vec<String>,
    /// When the grants change next (an Entitlement starts or ends).
    pub grants_change_at: Option<OffsetDateTime>,
    /// When the lifecycle verdict changes by time alone.
    pub lifecycle_check_at: Option<OffsetDateTime>,
    pub spiffe_id: Option<String>,
    /// The lifecycle conditions (`WorkloadFound`, `ReviewDue`).
    pub lifecycle_conditions: Vec<Condition>,
    /// A revocation made by this reconcile, to show in status.
    pub revocation: Option<RevocationStatus>,
    /// What the namespace's policy refuses of the spec (the certificate is issued without it;
    /// `Ready` is false with reason `PolicyDenied` while it stays in the spec).
    pub policy_denial: Option<String>,
    /// Whether the identity has Kubernetes access as its policy allows it.
    pub kubernetes_access: bool,
}

/// What became of an issuance.
#[derive(Clone, Debug)]
pub enum IssueReport {
    /// The re-issue rate did not admit it: the certificate `kept` stays until `until`.
    Paced {
        kept: CertificateInfo,
        until: OffsetDateTime,
    },
    /// Signing failed.
    SigningFailed {
        ca_expires_too_soon: bool,
        message: String,
    },
    /// Signed, but the identity wants Kubernetes access and it is disabled: nothing written.
    KubeAccessDisabled,
    /// The Kubernetes credential failed while the current certificate is still valid: nothing
    /// written.
    CredentialFailed {
        reason: &'static str,
        message: String,
    },
    /// Creating the Secret found one that is not ours.
    SecretTaken {
        credential_failure: Option<CredentialFailure>,
    },
    /// The Secret write conflicted (it was `created`, or applied at the judged version).
    WriteConflicted {
        created: bool,
        credential_failure: Option<CredentialFailure>,
    },
    /// The Secret holds the new certificate at `version`.
    Written {
        info: CertificateInfo,
        version: Option<String>,
        credential: Option<KubernetesAccessStatus>,
        /// Why there is no credential although one is wanted (the certificate was written
        /// without a kubeconfig).
        credential_failure: Option<CredentialFailure>,
    },
}

/// Why the Kubernetes client credential could not be obtained: its stable reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialFailure {
    pub reason: &'static str,
    pub message: String,
}

/// Come back at `at` (at least a second from `now`).
pub fn requeue_at(at: OffsetDateTime, now: OffsetDateTime) -> Requeue {
    let secs = (at - now).as_seconds_f64().max(1.0);
    Requeue::After(std::time::Duration::from_secs_f64(secs))
}
