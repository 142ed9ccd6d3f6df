//! Apply: carries out a plan's steps in order, and nothing else. Where a step's answer decides
//! what follows (a revocation, an issuance), the plan's own branches or its pure continuations
//! ([`plan::settle`], [`plan::deletion_not_recorded`]) say what.

use std::collections::VecDeque;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};

use super::context::IdentityContext;
use super::facts::Facts;
use super::issuance::issue;
use super::plan::{self, Failure, OnRevokeFailure, Plan, Requeue, Revoke, Step};
use crate::controller::error::ReconcileError;
use crate::controller::identity_secret::{keys, trust_bundle_patch};
use crate::controller::status::comparable;
use crate::revoke::RevokeError;
use nhi_api::{MachineIdentity, MachineIdentityStatus};
use nhi_core::labels::{FIELD_MANAGER, REVOKE_FINALIZER};

/// What comes after a step.
enum Next {
    Continue,
    /// These steps first, then the rest.
    Then(Vec<Step>),
    /// These steps instead of the rest.
    Instead(Vec<Step>),
    Finish(Action),
}

/// Carries out `plan` for the identity of `facts`.
pub async fn apply(
    ctx: &IdentityContext,
    facts: &Facts,
    plan: Plan,
) -> Result<Action, ReconcileError> {
    let mut run = Run {
        ctx,
        facts,
        refreshed: None,
    };
    let mut queue: VecDeque<Step> = plan.steps.into();
    while let Some(step) = queue.pop_front() {
        match run.step(step).await? {
            Next::Continue => {}
            Next::Then(steps) => {
                for s in steps.into_iter().rev() {
                    queue.push_front(s);
                }
            }
            Next::Instead(steps) => queue = steps.into(),
            Next::Finish(action) => return Ok(action),
        }
    }
    Ok(Action::await_change())
}

/// One reconcile's apply.
struct Run<'a> {
    ctx: &'a IdentityContext,
    facts: &'a Facts,
    /// The Secret version a trust bundle refresh started from, and the one it wrote.
    refreshed: Option<(String, String)>,
}

impl Run<'_> {
    fn mi(&self) -> &MachineIdentity {
        &self.facts.identity
    }

    /// A planned Secret version, or the one this reconcile's trust bundle refresh wrote on top
    /// of it.
    fn version(&self, planned: &str) -> String {
        match &self.refreshed {
            Some((from, to)) if from == planned => to.clone(),
            _ => planned.to_string(),
        }
    }

    async fn step(&mut self, step: Step) -> Result<Next, ReconcileError> {
        let (ctx, uid) = (self.ctx, self.facts.uid.as_str());
        match step {
            Step::AddFinalizer => self.set_finalizer(true).await?,
            Step::RemoveFinalizer => self.set_finalizer(false).await?,
            Step::RefreshTrustBundle { version } => self.refresh_trust_bundle(version).await?,
            Step::Revoke(r) => return self.revoke(*r).await,
            Step::StripKeyMaterial { version } => self.strip_key_material(&version).await?,
            Step::Issue(issuance) => {
                let version = issuance.secret_version.as_deref().map(|v| self.version(v));
                let report = issue(ctx, self.facts, &issuance, version).await?;
                return Ok(Next::Then(plan::settle(self.facts, &issuance, report)));
            }
            Step::DeleteIdentity => self.delete_identity().await?,
            Step::WriteStatus(status) => self.write_status(&status).await?,
            Step::RecordRevocationFailure(status) => self.record_revocation_failure(&status).await,
            Step::Publish(e) => {
                let type_ = match e.warning {
                    true => EventType::Warning,
                    false => EventType::Normal,
                };
                ctx.reporter.publish(self.mi(), type_, &e.reason, e.note);
            }
            Step::CountFailure(reason) => ctx.reporter.metrics.count_failure(&reason),
            Step::CountIssued(reason) => ctx.reporter.metrics.count_issued(reason),
            Step::SetExpiry { not_after_unix } => {
                let name = self.mi().name_any();
                let metrics = &ctx.reporter.metrics;
                let uid = self.mi().metadata.uid.as_deref().unwrap_or_default();
                metrics.set_expiry(uid, &self.facts.namespace, &name, not_after_unix);
            }
            Step::ForgetMetrics => {
                let name = self.mi().name_any();
                let uid = self.mi().metadata.uid.as_deref().unwrap_or_default();
                (ctx.reporter.metrics).forget(uid, &self.facts.namespace, &name);
            }
            Step::RememberCertificate {
                version,
                certificate,
            } => {
                let version = version.map(|v| self.version(&v));
                ctx.memory.remember_certificate(uid, version, certificate);
            }
            Step::ForgetCertificate => ctx.memory.forget_certificate(uid),
            Step::RememberRevocation(r) => ctx.memory.remember_revocation(uid, &r),
            Step::ForgetIdentity => ctx.memory.forget(uid),
            Step::Log(line) => {
                tracing::info!(namespace = %self.facts.namespace, name = %self.mi().name_any(), "{line}");
            }
            Step::Fail(Failure::SecretUnreadable(e)) => {
                return Err(ReconcileError::KubeApiError(e));
            }
            Step::Fail(Failure::SecretAppeared) => return Err(ReconcileError::SecretAppeared),
            Step::Finish(requeue) => return Ok(Next::Finish(self.look_again(requeue))),
        }
        Ok(Next::Continue)
    }

    /// The identity is to be looked at again later: the controller's own timer keeps that, and
    /// the controller itself waits for a change.
    fn look_again(&self, requeue: Requeue) -> Action {
        if let Requeue::After(after) = requeue {
            let name = self.mi().name_any();
            (self.ctx.wakeups).wake_after(&self.facts.namespace, &name, after);
        }
        Action::await_change()
    }

    /// Revokes, then follows the branch the answer picks; a failure fails the reconcile or, for
    /// a deletion, is answered by [`plan::deletion_not_recorded`].
    async fn revoke(&self, r: Revoke) -> Result<Next, ReconcileError> {
        let answer = match (r.revocations, r.on_failure) {
            (Ok(revocations), OnRevokeFailure::HoldDeletion) => {
                self.ctx.revoker.revoke_on_deletion(revocations).await
            }
            (Ok(revocations), _) => self.ctx.revoker.revoke(revocations).await,
            (Err(e), _) => Err(e),
        };
        match (answer, r.on_failure) {
            (Ok(0), _) => Ok(Next::Then(r.if_none_fresh)),
            (Ok(_), _) => Ok(Next::Then(r.if_fresh)),
            (Err(RevokeError::Refused(refusal)), OnRevokeFailure::RefuseRequest) => Ok(
                Next::Instead(plan::revoke_request_refused(self.facts, &refusal)),
            ),
            (Err(e), OnRevokeFailure::FailReconcile | OnRevokeFailure::RefuseRequest) => {
                Err(ReconcileError::RevocationFailed(e))
            }
            (Err(e), OnRevokeFailure::HoldDeletion) => Ok(Next::Instead(
                plan::deletion_not_recorded(self.facts, &self.ctx.settings, &e),
            )),
        }
    }

    fn identities(&self) -> Api<MachineIdentity> {
        Api::namespaced(self.ctx.client.clone(), &self.facts.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.ctx.client.clone(), &self.facts.namespace)
    }

    /// Adds or removes the finalizer with a merge patch of the finalizer list at the version
    /// seen (a conflict if anything changed since: never someone else's finalizer lost). A merge
    /// patch is the cheapest write for the apiserver; it touches no other field.
    async fn set_finalizer(&self, on: bool) -> Result<(), ReconcileError> {
        let mi = self.mi();
        let finalizers: Vec<String> = match on {
            true => mi
                .finalizers()
                .iter()
                .cloned()
                .chain([REVOKE_FINALIZER.to_string()])
                .collect(),
            false => mi
                .finalizers()
                .iter()
                .filter(|f| *f != REVOKE_FINALIZER)
                .cloned()
                .collect(),
        };
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": mi.metadata.resource_version,
                "finalizers": finalizers,
            },
        });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self
            .identities()
            .patch(&mi.name_any(), &pp, &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // Gone already: nothing to hold.
            Err(kube::Error::Api(s)) if !on && s.code == 404 => Ok(()),
            // Changed since the cache saw it: look again at the new version.
            Err(kube::Error::Api(s)) if s.code == 409 => Err(ReconcileError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Brings the trust bundle (`ca.crt`) of the identity's Secret at `version` up to date with
    /// the CA's. The certificate and key are not touched; nothing is read. A failure other than
    /// a conflict does not hold up the identity's own work (renewal, revocation): the next
    /// issuance writes the bundle anyway, and a stalled rotation is reported.
    async fn refresh_trust_bundle(&mut self, version: String) -> Result<(), ReconcileError> {
        let secret_name = &self.mi().spec.secret_name;
        let patch = trust_bundle_patch(&version, &self.facts.ca);
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self
            .secrets()
            .patch(secret_name, &pp, &Patch::Merge(&patch))
            .await
        {
            Ok(written) => {
                tracing::debug!(namespace = %self.facts.namespace, secret = %secret_name, bundle = %self.facts.ca.bundle_fingerprint(), "trust bundle updated");
                if let Some(to) = written.metadata.resource_version {
                    self.refreshed = Some((version, to));
                }
                Ok(())
            }
            // Changed since the index saw it: look again when the index shows the change.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                Err(ReconcileError::Conflict)
            }
            Err(e) => {
                tracing::warn!(namespace = %self.facts.namespace, secret = %secret_name, error = %e,
                    "cannot update the trust bundle of the identity Secret");
                self.ctx
                    .reporter
                    .metrics
                    .count_failure("TrustBundleUpdateFailed");
                Ok(())
            }
        }
    }

    /// Removes the certificate, key, single-file identity and kubeconfig from the identity's
    /// Secret, keeping the trust bundle: a merge patch at the version read (a conflict if it
    /// changed since). kubernetes.io/tls Secrets must keep both keys: they stay, empty.
    async fn strip_key_material(&self, version: &str) -> Result<(), ReconcileError> {
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": self.version(version),
                "annotations": {
                    nhi_core::labels::SERIAL: null,
                    nhi_core::labels::CERT_INPUTS: null,
                    nhi_core::labels::KUBE_CLIENT_NOT_AFTER: null,
                },
            },
            "data": {
                keys::TLS_KEY: "",
                keys::TLS_CRT: "",
                keys::IDENTITY_PEM: null,
                keys::KUBECONFIG: null,
            },
        });
        let pp = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let name = &self.mi().spec.secret_name;
        match self.secrets().patch(name, &pp, &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            // Changed since read: look again.
            Err(kube::Error::Api(s)) if s.code == 409 => Err(ReconcileError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the identity, if it is still the one with this uid.
    async fn delete_identity(&self) -> Result<(), ReconcileError> {
        let mi = self.mi();
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: mi.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.identities().delete(&mi.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn patch_status(&self, status: &MachineIdentityStatus) -> Result<(), kube::Error> {
        let patch = serde_json::json!({
            "apiVersion": MachineIdentity::api_version(&()),
            "kind": MachineIdentity::kind(&()),
            "status": status,
        });
        self.identities()
            .patch_status(
                &self.mi().name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(|_| ())
    }

    /// Writes the status and remembers it was written (the cache may not show it for a moment).
    async fn write_status(&self, status: &MachineIdentityStatus) -> Result<(), ReconcileError> {
        self.patch_status(status).await?;
        let uid = &self.facts.uid;
        self.ctx.memory.statuses.remember(uid, &comparable(status));
        Ok(())
    }

    /// Best effort: the Event says it too.
    async fn record_revocation_failure(&self, status: &MachineIdentityStatus) {
        if let Err(e) = self.patch_status(status).await {
            tracing::warn!(namespace = %self.facts.namespace, name = %self.mi().name_any(), error = %e,
                "cannot record the revocation failure in status");
        }
    }
}
