//! How identities follow a CA rotation: each Secret's trust bundle is brought up to date without
//! a re-issue, and re-issues under a new CA are spread over time and rate-limited.

use std::time::Instant;

use arc_swap::ArcSwapOption;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use time::{Duration, OffsetDateTime};

use super::context::Context;
use super::error::ReconcileError;
use super::identity_secret::trust_bundle_patch;
use crate::api::MachineIdentity;
use crate::ca::rotation::{deferred_until, reissue_slot};
use crate::labels::FIELD_MANAGER;
use crate::token_bucket::TokenBucket;

/// The spread and rate of re-issues under a new CA.
pub struct CaRollout {
    /// When the new CA started signing, while its predecessor is retiring.
    switched_at: ArcSwapOption<OffsetDateTime>,
    spread: Duration,
    rate: TokenBucket,
}

impl CaRollout {
    /// Re-issues spread over `spread` after a switch, at most `per_second` (after a burst of as
    /// many).
    pub fn new(spread: Duration, per_second: f64) -> Self {
        let burst = per_second.ceil().clamp(1.0, 10_000.0) as u32;
        CaRollout {
            switched_at: ArcSwapOption::empty(),
            spread,
            rate: TokenBucket::new(burst, per_second),
        }
    }

    /// Records the switch time of the rotation under way (None: no CA is retiring).
    pub fn set_switched(&self, switched_at: Option<OffsetDateTime>) {
        self.switched_at.store(switched_at.map(std::sync::Arc::new));
    }

    /// The re-issue rate, per second.
    pub fn per_second(&self) -> f64 {
        self.rate.per_second()
    }

    /// When identity `uid`, holding a certificate of the retiring CA that renews at `renew_at`,
    /// re-issues: None for now (a token of the rate is taken), or a later time.
    pub fn defer(
        &self,
        uid: &str,
        renew_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        if let Some(switched_at) = self.switched_at.load_full() {
            let slot = reissue_slot(uid, *switched_at, self.spread);
            if let Some(at) = deferred_until(slot, renew_at, now) {
                return Some(at);
            }
        }
        // A certificate about to end is never held back by the rate.
        if renew_at <= now || self.rate.try_take(Instant::now()) {
            return None;
        }
        let wait = (1.0 / self.rate.per_second().max(0.001)) * (1.0 + rand::random::<f64>());
        Some(now + Duration::seconds_f64(wait))
    }
}

/// Brings the trust bundle (`ca.crt`) of the identity's Secret up to date with the CA's, when its
/// fingerprint shows it is not: during a CA rotation the next root reaches every workload before
/// it signs anything. The certificate and key are not touched; nothing is read. Returns the
/// Secret's new resourceVersion when it wrote one.
pub async fn refresh_trust_bundle(
    mi: &MachineIdentity,
    ctx: &Context,
) -> Result<Option<String>, ReconcileError> {
    let namespace = mi.namespace().unwrap_or_default();
    let Some(seen) = ctx.secrets.get(&namespace, &mi.spec.secret_name) else {
        return Ok(None);
    };
    if seen.controller_uid.is_none() || seen.controller_uid != mi.metadata.uid {
        return Ok(None);
    }
    let ca = ctx.ca();
    let fingerprint = ca.bundle_fingerprint();
    if seen.trust_bundle.as_deref() == Some(fingerprint) {
        return Ok(None);
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = trust_bundle_patch(&seen.resource_version, &ca);
    let written = match api
        .patch(
            &mi.spec.secret_name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(w) => w,
        // Changed since the index saw it: look again when the index shows the change.
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
            return Err(ReconcileError::Conflict);
        }
        // Anything else does not hold up the identity's own work (renewal, revocation): the
        // next issuance writes the bundle anyway, and a stalled rotation is reported.
        Err(e) => {
            tracing::warn!(namespace = %namespace, secret = %mi.spec.secret_name, error = %e,
                "cannot update the trust bundle of the identity Secret");
            ctx.metrics.count_failure("TrustBundleUpdateFailed");
            return Ok(None);
        }
    };
    // The certificate inside is the one known at the previous version.
    let uid = mi.metadata.uid.as_deref().unwrap_or_default();
    if let Some(known) = ctx.known_certificate(uid, Some(&seen.resource_version)) {
        ctx.remember_certificate(uid, written.metadata.resource_version.clone(), known);
    }
    tracing::debug!(namespace = %namespace, secret = %mi.spec.secret_name, bundle = %fingerprint, "trust bundle updated");
    Ok(written.metadata.resource_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_switch_reissues_go_at_the_rate() {
        let rollout = CaRollout::new(Duration::minutes(10), 2.0);
        let now = OffsetDateTime::now_utc();
        let later = now + Duration::hours(1);
        assert_eq!(rollout.defer("a", later, now), None);
        assert_eq!(rollout.defer("b", later, now), None);
        // The burst (2) is spent: the next waits about half a second to a second.
        let at = rollout
            .defer("c", later, now)
            .expect("held back by the rate");
        assert!(at > now && at <= now + Duration::seconds(1), "{at}");
        // One that must renew now is never held back.
        assert_eq!(rollout.defer("d", now, now), None);
    }

    #[test]
    fn after_a_switch_each_identity_waits_for_its_slot() {
        let rollout = CaRollout::new(Duration::minutes(10), 100.0);
        let now = OffsetDateTime::now_utc();
        rollout.set_switched(Some(now));
        let later = now + Duration::hours(1);
        let waits: Vec<_> = (0..50)
            .filter_map(|i| rollout.defer(&format!("uid-{i}"), later, now))
            .collect();
        assert!(waits.len() >= 48, "{} of 50 deferred", waits.len());
        assert!(waits.iter().all(|w| *w <= now + Duration::minutes(10)));
        // A renewal due before the slot comes first.
        let soon = now + Duration::seconds(5);
        let at = rollout.defer("uid-1", soon, now).unwrap();
        assert!(at <= soon);
        rollout.set_switched(None);
        assert_eq!(rollout.defer("uid-1", later, now), None);
    }
}
