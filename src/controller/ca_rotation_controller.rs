//! The CA rotation controller: follows the CA Secret, keeps the signing CA in memory in step with
//! it, and moves a rotation through its phases (decided in `ca::rotation`): publish the next root
//! next to the current one, wait until every bundle carries both, switch, re-issue, drop the old.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use time::OffsetDateTime;
use tokio::sync::mpsc::UnboundedSender;
use tracing::{info, warn};

use super::reissue_pacing::ReissuePacing;
use super::report::Reporter;
use super::secret_index::SecretIndex;
use super::signing_ca::SigningCa;
use crate::api::MachineIdentity;
use crate::ca::CertificateAuthority;
use crate::ca::rfc3339;
use crate::ca::rotation::{
    Phase, RotationFacts, RotationPolicy, Step, Trigger, next_step, recheck_in, retire_after,
};
use crate::ca::rotation_state::{
    distributed_patch, drop_patch, phase_of, start_patch, switch_patch,
};
use crate::ca::store::{CaLocation, load, secret_text};
use crate::labels::{CA_ROTATION_ANSWERED, FIELD_MANAGER, MANAGED_BY, MANAGER, ROTATE_CA};
use crate::revoke::trust::{CA_KEY, CRL_KEY, trust_field_selector, trust_selector};

/// Errors of one look at the CA Secret; the controller reports them and looks again.
#[derive(Debug, thiserror::Error)]
enum RotationError {
    #[error("reading or writing the CA Secret failed: {0}")]
    Api(#[from] kube::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("generating the next CA failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What the CA rotation controller reads and writes through.
pub struct RotationContext {
    pub client: kube::Client,
    /// The CA that signs, replaced when the CA Secret holds another.
    pub ca: SigningCa,
    /// The pacing of identities' re-issues after a switch.
    pub pacing: Arc<ReissuePacing>,
    /// Signs and publishes the CRL again when the CA changes.
    pub revoker: crate::revoke::Revoker,
    /// The identity-Secret index: which bundles are behind.
    pub secrets: Arc<SecretIndex>,
    pub health: Arc<crate::health::Health>,
    pub reporter: Reporter,
}

/// Where the rotation controller acts, and how.
pub struct RotationSettings {
    pub policy: RotationPolicy,
    pub location: CaLocation,
    /// The one namespace watched, or None for all (where trust ConfigMaps are).
    pub scope: Option<String>,
}

/// Runs the rotation controller until the process stops: a look at the CA Secret on each of its
/// changes, and when the phase may call for a step.
pub async fn run(
    ctx: RotationContext,
    identities: Store<MachineIdentity>,
    to_identities: UnboundedSender<ObjectRef<MachineIdentity>>,
    settings: RotationSettings,
) {
    let loc = &settings.location;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &loc.namespace);
    let changes = watcher(
        Api::<PartialObjectMeta<Secret>>::namespaced(ctx.client.clone(), &loc.namespace),
        watcher::Config::default().fields(&format!("metadata.name={}", loc.secret_name)),
    )
    .default_backoff()
    .boxed();
    let mut rotator = Rotator {
        ctx,
        identities,
        to_identities,
        secrets,
        settings,
        reported: None,
        adopted: None,
    };
    let mut changes = changes;
    let mut wait = StdDuration::ZERO;
    loop {
        tokio::select! {
            change = changes.next() => if change.is_none() { break },
            _ = tokio::time::sleep(wait) => {},
        }
        wait = match rotator.look().await {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "CA rotation: cannot look at the CA Secret; retrying");
                rotator
                    .ctx
                    .reporter
                    .metrics
                    .count_failure("CARotationFailed");
                StdDuration::from_secs(5)
            }
        };
    }
}

struct Rotator {
    ctx: RotationContext,
    identities: Store<MachineIdentity>,
    to_identities: UnboundedSender<ObjectRef<MachineIdentity>>,
    secrets: Api<Secret>,
    settings: RotationSettings,
    /// The last problem reported by a Warning Event, so it is reported once.
    reported: Option<String>,
    /// The resourceVersion of the CA Secret last adopted: a look at the same version loads
    /// nothing.
    adopted: Option<String>,
}

impl Rotator {
    /// Reads the CA Secret, adopts what it holds, and takes the rotation's next step; returns
    /// when to look again.
    async fn look(&mut self) -> Result<StdDuration, RotationError> {
        let loc = self.settings.location.clone();
        let Some(secret) = self.secrets.get_opt(&loc.secret_name).await? else {
            self.report(
                None,
                "CASecretMissing",
                format!(
                    "the CA Secret {}/{} is gone; the CA in memory keeps signing until the operator restarts (which bootstraps a new one)",
                    loc.namespace, loc.secret_name
                ),
            );
            return Ok(StdDuration::from_secs(30));
        };
        self.adopt(&secret);
        let phase = match phase_of(secret.annotations()) {
            Ok(p) => p,
            Err(e) => {
                self.report(Some(&secret), "CARotationInvalid", e);
                return Ok(StdDuration::from_secs(60));
            }
        };
        let ca = self.ctx.ca.current();
        self.ctx
            .reporter
            .metrics
            .ca_expiry
            .set(ca.not_after().unix_timestamp());
        self.ctx
            .reporter
            .metrics
            .ca_rotation_phase
            .set(phase.number());
        self.ctx.pacing.set_switched(match &phase {
            Phase::Reissuing { switched_at, .. } if ca.retiring().is_some() => Some(*switched_at),
            _ => None,
        });
        let distributed = match &phase {
            Phase::Publishing {
                distributed_at: None,
                started_at,
            } => self.distributed(&ca, &secret, *started_at).await?,
            _ => false,
        };
        let annotations = secret.annotations();
        let facts = RotationFacts {
            phase,
            now: OffsetDateTime::now_utc(),
            ca_not_after: ca.not_after(),
            // Made by the operator: a self-signed root in a Secret the operator created (a root
            // someone provided, from Git say, is theirs to replace).
            self_managed: ca.is_self_signed_root()
                && secret.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGER),
            requested: annotations.get(ROTATE_CA).map(String::as_str),
            answered: annotations.get(CA_ROTATION_ANSWERED).map(String::as_str),
            distributed,
        };
        let policy = self.settings.policy;
        let step = next_step(&facts, &policy);
        let rv = secret.resource_version().unwrap_or_default();
        let now = facts.now;
        let (patch, reason, note) = match step {
            Step::Wait => return Ok(recheck_in(&facts, &policy).unsigned_abs()),
            Step::Unsupported(trigger) => {
                let why = match trigger {
                    Trigger::Requested(r) => format!("a rotation was requested ({ROTATE_CA}={r})"),
                    Trigger::Expiring => format!("the CA ends at {}", rfc3339(ca.not_after())),
                };
                self.report(
                    Some(&secret),
                    "CARotationUnsupported",
                    format!(
                        "{why}, but the CA was provided (it is not a self-signed root the operator made): replace tls.crt, tls.key and ca.crt of the CA Secret with the successor, keeping the old root in ca.crt until its certificates expire"
                    ),
                );
                return Ok(StdDuration::from_secs(600));
            }
            Step::Start(trigger) => {
                let (name, lifetime) = (loc.common_name.clone(), loc.bootstrap_lifetime);
                let next = tokio::task::spawn_blocking(move || {
                    CertificateAuthority::generate_root(&name, lifetime, OffsetDateTime::now_utc())
                })
                .await?
                .map_err(|e| RotationError::Invalid(e.to_string()))?;
                let why = match &trigger {
                    Trigger::Requested(r) => format!("requested ({ROTATE_CA}={r})"),
                    Trigger::Expiring => {
                        format!("the CA ends at {}", rfc3339(ca.not_after()))
                    }
                };
                let patch = start_patch(
                    &rv,
                    ca.trust_bundle_pem(),
                    &next,
                    &trigger,
                    facts.requested,
                    now,
                )
                .map_err(RotationError::Invalid)?;
                let note = format!(
                    "CA rotation started: {why}; the next root is published next to the current one in every trust bundle (phase Publishing)"
                );
                (patch, "CARotationStarted", note)
            }
            Step::Distributed => {
                let note = format!(
                    "every identity Secret and trust ConfigMap carries both roots; the new CA signs after {} (propagation to mounted volumes)",
                    crate::ca::rfc3339(now + policy.propagation)
                );
                (distributed_patch(&rv, now), "CARotationDistributed", note)
            }
            Step::Switch => {
                let retire = retire_after(now, policy.max_ttl, ca.not_after());
                let patch = switch_patch(&rv, &secret_text(&secret), retire, now)
                    .map_err(RotationError::Invalid)?;
                let note = format!(
                    "the new CA signs; identities re-issue over {}s (at most {}/s); the old root stays trusted until {} (phase Reissuing)",
                    policy.spread.whole_seconds(),
                    self.ctx.pacing.per_second(),
                    rfc3339(retire)
                );
                (patch, "CARotationSwitched", note)
            }
            Step::Drop => {
                let patch =
                    drop_patch(&rv, &secret_text(&secret), now).map_err(RotationError::Invalid)?;
                let note = "no unexpired certificate of the old CA remains: its root leaves every trust bundle; CA rotation complete".to_string();
                (patch, "CARotationCompleted", note)
            }
        };
        let Some(written) = self.write(&patch).await? else {
            // Changed since it was read: look again at once.
            return Ok(StdDuration::ZERO);
        };
        info!(reason, note = %note, "CA rotation");
        self.ctx
            .reporter
            .publish(&written, EventType::Normal, reason, note);
        self.adopt(&written);
        Ok(StdDuration::ZERO)
    }

    /// Loads the CA the Secret holds and, when it differs from the one signing (a new bundle, a
    /// new signer, a retiring CA gone), puts it in place: the CRL is signed and published again
    /// and every identity is looked at (its Secret's bundle, its issuer).
    fn adopt(&mut self, secret: &Secret) {
        if secret.metadata.resource_version.is_some()
            && self.adopted == secret.metadata.resource_version
        {
            return;
        }
        self.adopted = secret.metadata.resource_version.clone();
        let loaded = match load(secret, &self.settings.location) {
            Ok(ca) => ca,
            Err(e) => {
                self.report(
                    Some(secret),
                    "CAInvalid",
                    format!("{e}; the CA in memory keeps signing"),
                );
                return;
            }
        };
        if self.ctx.ca.current().same_as(&loaded) {
            return;
        }
        info!(
            not_after = %rfc3339(loaded.not_after()),
            bundle = %loaded.bundle_fingerprint(),
            retiring = loaded.retiring().is_some(),
            "the CA changed; identities follow"
        );
        self.ctx.ca.replace(loaded);
        self.ctx.revoker.ca_changed();
        for mi in self.identities.state() {
            let _ = self.to_identities.send(ObjectRef::from_obj(&*mi));
        }
    }

    /// Whether every identity Secret and every trust ConfigMap carries the signing CA's bundle,
    /// and every trust ConfigMap a CRL of each CA (the next one's included). Warns, once, when
    /// that has not happened long after the rotation started.
    async fn distributed(
        &mut self,
        ca: &CertificateAuthority,
        secret: &Secret,
        started_at: OffsetDateTime,
    ) -> Result<bool, RotationError> {
        let synced = self
            .ctx
            .health
            .secrets_synced
            .load(std::sync::atomic::Ordering::Relaxed);
        // Secrets of identities that exist and are not going away: those the reconciler updates.
        let live: std::collections::HashSet<String> = self
            .identities
            .state()
            .iter()
            .filter(|mi| mi.metadata.deletion_timestamp.is_none())
            .filter_map(|mi| mi.metadata.uid.clone())
            .collect();
        let (secrets_behind, secrets) = self
            .ctx
            .secrets
            .bundle_laggards(ca.bundle_fingerprint(), |uid| live.contains(uid));
        let crls = ca.crl_signers().len();
        let complete = |crl: &str| crl.matches("-----BEGIN X509 CRL-----").count() >= crls;
        let published = self
            .ctx
            .revoker
            .documents()
            .is_some_and(|d| d.ca_pem == ca.trust_bundle_pem() && complete(&d.crl_pem));
        let configmaps: Api<ConfigMap> =
            crate::kube_api::scoped_api(self.ctx.client.clone(), self.settings.scope.as_deref());
        let listed = configmaps
            .list(
                // From the watch cache: it may lag (then the check waits), never lead.
                &ListParams::default()
                    .labels(&trust_selector())
                    .fields(&trust_field_selector())
                    .match_any(),
            )
            .await?;
        let maps = listed.items.len();
        let maps_behind = listed
            .items
            .iter()
            .filter(|cm| {
                let data = cm.data.as_ref();
                let get = |k: &str| data.and_then(|d| d.get(k)).map(String::as_str);
                get(CA_KEY) != Some(ca.trust_bundle_pem()) || !get(CRL_KEY).is_some_and(complete)
            })
            .count();
        info!(
            secrets_behind,
            secrets, maps_behind, maps, published, "CA rotation: distributing the next root"
        );
        let done = synced && published && secrets_behind == 0 && maps_behind == 0;
        let patience: time::Duration =
            (self.settings.policy.propagation * 5i32).max(time::Duration::minutes(10));
        if !done && OffsetDateTime::now_utc() > started_at + patience {
            self.report(
                Some(secret),
                "CARotationStalled",
                format!(
                    "the next root has not reached every bundle since {}: {secrets_behind} of {secrets} identity Secrets and {maps_behind} of {maps} nhi-trust ConfigMaps are behind; the current CA keeps signing meanwhile",
                    rfc3339(started_at)
                ),
            );
        }
        Ok(done)
    }

    /// Writes a merge patch to the CA Secret; None when it changed since it was read.
    async fn write(&self, patch: &serde_json::Value) -> Result<Option<Secret>, RotationError> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        };
        match self
            .secrets
            .patch(
                &self.settings.location.secret_name,
                &params,
                &Patch::Merge(patch),
            )
            .await
        {
            Ok(s) => Ok(Some(s)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reports a problem once (a Warning Event on the CA Secret, when there is one, and a log
    /// line); the same problem again is not reported again.
    fn report(&mut self, secret: Option<&Secret>, reason: &str, note: String) {
        let key = format!("{reason}: {note}");
        if self.reported.as_deref() == Some(key.as_str()) {
            return;
        }
        warn!(reason, note = %note, "CA rotation");
        self.ctx.reporter.metrics.count_failure(reason);
        if let Some(secret) = secret {
            self.ctx
                .reporter
                .publish(secret, EventType::Warning, reason, note);
        }
        self.reported = Some(key);
    }
}
