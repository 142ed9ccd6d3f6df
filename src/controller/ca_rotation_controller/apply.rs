//! Apply: carries out a look's plan, and nothing else: puts the CA in place, reports problems,
//! sets the gauges and the re-issue pacing, and writes the rotation's next step (making the next
//! root first when the step starts a rotation).

use std::sync::Arc;
use std::time::Duration as StdDuration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use time::OffsetDateTime;
use tracing::{info, warn};

use super::context::Rotator;
use super::error::RotationError;
use super::facts::{Facts, held_ca};
use super::plan::{self, Next, Plan, Problem, Write};
use crate::ca::CertificateAuthority;
use nhi_core::labels::FIELD_MANAGER;
use nhi_identity::timestamp::rfc3339;

/// Carries out `plan`; returns when to look again.
pub async fn apply(
    rotator: &mut Rotator,
    facts: &Facts,
    plan: Plan,
) -> Result<StdDuration, RotationError> {
    if facts.held.is_some() {
        let rv = facts
            .secret
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone());
        rotator.adopted = rv;
    }
    if let Some(ca) = plan.adopt {
        rotator.adopt(ca);
    }
    for problem in &plan.reports {
        rotator.report(facts.secret.as_ref(), problem);
    }
    let metrics = &rotator.ctx.reporter.metrics;
    if let Some((not_after, phase)) = plan.gauges {
        metrics.ca_expiry.set(not_after);
        metrics.ca_rotation_phase.set(phase);
    }
    if let Some(switched_at) = plan.switched_at {
        rotator.ctx.pacing.set_switched(switched_at);
    }
    if let Some(progress) = &plan.progress {
        info!(%progress, "CA rotation: distributing the next root");
    }
    let write = match plan.next {
        Next::Wait(d) => return Ok(d),
        Next::Fail(e) => return Err(RotationError::RotationInvalid(e)),
        Next::Write(w) => w,
        Next::GenerateNext(trigger) => {
            let loc = &rotator.settings.location;
            let (name, lifetime) = (loc.common_name.clone(), loc.bootstrap_lifetime);
            let next = tokio::task::spawn_blocking(move || {
                CertificateAuthority::generate_root(&name, lifetime, OffsetDateTime::now_utc())
            })
            .await?
            .map_err(RotationError::NextRootNotGenerated)?;
            plan::start(facts, &trigger, &next).map_err(RotationError::RotationInvalid)?
        }
    };
    rotator.write(write).await
}

impl Rotator {
    /// Puts `ca` in place of the signing CA: the CRL is signed and published again and every
    /// identity is looked at (its Secret's bundle, its issuer).
    fn adopt(&mut self, ca: Arc<CertificateAuthority>) {
        info!(
            not_after = %rfc3339(ca.not_after()),
            bundle = %ca.bundle_fingerprint(),
            retiring = ca.retiring().is_some(),
            "the CA changed; identities follow"
        );
        self.ctx.ca.replace(ca);
        self.ctx.revoker.ca_changed();
        for mi in self.identities.state() {
            let _ = self.to_identities.send(ObjectRef::from_obj(&*mi));
        }
    }

    /// Reports a problem once (a Warning Event on the CA Secret, when there is one, and a log
    /// line); the same problem right after is not reported again.
    fn report(&mut self, secret: Option<&Secret>, problem: &Problem) {
        let key = problem.key();
        if self.reported.as_deref() == Some(key.as_str()) {
            return;
        }
        warn!(reason = problem.reason, note = %problem.note, "CA rotation");
        self.ctx.reporter.metrics.count_failure(problem.reason);
        if let Some(secret) = secret.filter(|_| problem.on_secret) {
            let note = problem.note.clone();
            self.ctx
                .reporter
                .publish(secret, EventType::Warning, problem.reason, note);
        }
        self.reported = Some(key);
    }

    /// Writes a merge patch to the CA Secret and says so; then adopts what it holds. A conflict
    /// (it changed since it was read) is looked at again at once.
    async fn write(&mut self, write: Write) -> Result<StdDuration, RotationError> {
        let loc = &self.settings.location;
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &loc.namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        let written = match secrets
            .patch(&loc.secret_name, &params, &Patch::Merge(&write.patch))
            .await
        {
            Ok(s) => s,
            Err(kube::Error::Api(s)) if s.code == 409 => return Ok(StdDuration::ZERO),
            Err(e) => return Err(e.into()),
        };
        info!(reason = write.reason, note = %write.note, "CA rotation");
        let reporter = &self.ctx.reporter;
        reporter.publish(&written, EventType::Normal, write.reason, write.note);
        self.adopted = written.metadata.resource_version.clone();
        let held = held_ca(&written, &self.settings.location);
        let (adopt, problem) = plan::adoption(&self.ctx.ca.current(), &held);
        if let Some(ca) = adopt {
            self.adopt(ca);
        }
        if let Some(problem) = problem {
            self.report(Some(&written), &problem);
        }
        Ok(StdDuration::ZERO)
    }
}
