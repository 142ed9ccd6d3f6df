//! Leader election on a `coordination.k8s.io` Lease: only the holder reconciles and writes. A
//! standby takes over once the holder has not renewed for the lease duration; a holder that
//! cannot renew within its deadline stops, so two leaders never write at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{debug, info, warn};

use crate::fence::Fence;

/// Where the Lease lives and its timing.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This process's identity (the pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// A holder that has not renewed for this long gives up (shorter than `lease_duration`).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

/// What to do with the Lease as it stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseVerdict {
    /// Ours: renew it.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// Someone else holds it and it is still valid.
    Wait,
}

/// Decides what to do with a Lease whose holder and renewal this process has seen unchanged for
/// `unchanged_for` on its own monotonic clock (pure). Expiry is judged by that local observation,
/// never by comparing another replica's wall-clock `renewTime` with ours, so clock skew between
/// nodes cannot make a standby take over early.
pub fn lease_verdict(spec: Option<&LeaseSpec>, me: &str, unchanged_for: Duration) -> LeaseVerdict {
    let Some(spec) = spec else {
        return LeaseVerdict::Acquire;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => LeaseVerdict::Renew,
        None | Some("") => LeaseVerdict::Acquire,
        Some(_) => {
            let secs = spec.lease_duration_seconds.unwrap_or(15).max(1);
            if unchanged_for >= Duration::from_secs(secs.unsigned_abs().into()) {
                LeaseVerdict::Acquire
            } else {
                LeaseVerdict::Wait
            }
        }
    }
}

/// The holder and renewal last seen, and since when (local monotonic time).
#[derive(Default)]
struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    since: Option<tokio::time::Instant>,
}

impl Observed {
    /// Records the Lease as seen now; returns how long it has been unchanged.
    fn see(&mut self, spec: Option<&LeaseSpec>) -> Duration {
        let record = spec.map(|s| (s.holder_identity.clone(), s.renew_time.clone()));
        let now = tokio::time::Instant::now();
        if self.since.is_none() || self.record != record {
            self.record = record;
            self.since = Some(now);
        }
        self.since.map_or(Duration::ZERO, |t| now - t)
    }
}

/// The Lease spec after this process acquires or renews it.
pub fn claimed_spec(previous: Option<&LeaseSpec>, cfg: &LeaseConfig, now: Timestamp) -> LeaseSpec {
    let ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(cfg.identity.as_str());
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.lease_duration.as_secs().max(1) as i32),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours || previous.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// One attempt to acquire or renew. Ok(true) when this process holds the Lease afterwards.
async fn try_claim(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let existing = api.get_opt(&cfg.name).await?;
    let spec = existing.as_ref().and_then(|l| l.spec.as_ref());
    let unchanged_for = observed.see(spec);
    let now = Timestamp::now();
    if lease_verdict(spec, &cfg.identity, unchanged_for) == LeaseVerdict::Wait {
        return Ok(false);
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(cfg.name.clone()),
            namespace: Some(cfg.namespace.clone()),
            // Optimistic concurrency: a concurrent claim makes this write fail with a conflict.
            resource_version: existing
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone()),
            ..Default::default()
        },
        spec: Some(claimed_spec(spec, cfg, now)),
    };
    let result = match existing {
        None => api.create(&PostParams::default(), &lease).await,
        Some(_) => api.replace(&cfg.name, &PostParams::default(), &lease).await,
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this process holds the Lease, then opens `fence` from the moment the successful
/// claim started (the renewal time written is no earlier than that), which it returns.
pub async fn acquire(client: Client, cfg: &LeaseConfig, fence: &Fence) -> tokio::time::Instant {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    info!(lease = %cfg.name, identity = %cfg.identity, "waiting to become the leader");
    let mut observed = Observed::default();
    loop {
        let started = tokio::time::Instant::now();
        match try_claim(&api, cfg, &mut observed).await {
            Ok(true) => {
                info!(lease = %cfg.name, identity = %cfg.identity, "became the leader");
                fence.renewed(started);
                return started;
            }
            Ok(false) => debug!("another replica leads"),
            Err(e) => warn!(error = %e, "leader election: cannot read or write the Lease"),
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
}

/// Renews the Lease, held since the claim that started at `claimed`, until no renewal has
/// succeeded within the renew deadline; then returns, and the caller must stop writing at once.
/// The deadline is absolute: counted from the start of the last successful renewal, it bounds
/// every wait and every request, so the holder stops before a standby can take over. `fence`
/// follows each renewal (and closes when this returns): the writers check it, so a holder
/// paused past its deadline writes nothing when it resumes, whichever task runs first.
pub async fn hold(client: Client, cfg: &LeaseConfig, claimed: tokio::time::Instant, fence: &Fence) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut observed = Observed::default();
    let mut renewed = claimed;
    let _closed = CloseOnDrop(fence);
    loop {
        let deadline = renewed + cfg.renew_deadline;
        tokio::time::sleep_until((tokio::time::Instant::now() + cfg.retry_period).min(deadline))
            .await;
        let started = tokio::time::Instant::now();
        if started >= deadline {
            warn!(lease = %cfg.name, "could not renew the Lease within the deadline");
            return;
        }
        match tokio::time::timeout_at(deadline, try_claim(&api, cfg, &mut observed)).await {
            Ok(Ok(true)) => {
                renewed = started;
                fence.renewed(started);
            }
            Ok(Ok(false)) => {
                warn!(lease = %cfg.name, "another replica took the Lease");
                return;
            }
            Ok(Err(e)) => warn!(error = %e, "renewing the Lease failed"),
            Err(_) => warn!(lease = %cfg.name, "renewing the Lease timed out"),
        }
    }
}

/// Closes the fence when the holder stops holding, however it stops.
struct CloseOnDrop<'a>(&'a Fence);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Gives the Lease up (on a clean shutdown) so a standby takes over at once.
pub async fn release(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.renew_time = None;
    if let Err(e) = api.replace(&cfg.name, &PostParams::default(), &lease).await {
        warn!(error = %e, "releasing the Lease failed; a standby takes over when it expires");
    } else {
        info!(lease = %cfg.name, "released the Lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    fn cfg() -> LeaseConfig {
        LeaseConfig {
            namespace: "ns".into(),
            name: "nhi-operator".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn held_by(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            acquire_time: Some(MicroTime(renewed)),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn verdicts_follow_the_local_observation_of_the_lease() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let secs = Duration::from_secs;
        assert_eq!(lease_verdict(None, "me", secs(0)), LeaseVerdict::Acquire);
        assert_eq!(
            lease_verdict(Some(&held_by("me", now)), "me", secs(0)),
            LeaseVerdict::Renew
        );
        // Another holder: wait until its renewal has been seen unchanged for a lease duration,
        // whatever its renewTime says (clocks of other nodes are not trusted).
        let other = held_by("other", now - SignedDuration::from_secs(3600));
        assert_eq!(
            lease_verdict(Some(&other), "me", secs(14)),
            LeaseVerdict::Wait
        );
        assert_eq!(
            lease_verdict(Some(&other), "me", secs(15)),
            LeaseVerdict::Acquire
        );
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("x", now)
        };
        assert_eq!(
            lease_verdict(Some(&released), "me", secs(0)),
            LeaseVerdict::Acquire
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_lease_ages_and_a_renewed_one_starts_again() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut observed = Observed::default();
        let first = held_by("other", now);
        assert_eq!(observed.see(Some(&first)), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(observed.see(Some(&first)), Duration::from_secs(5));
        let renewed = held_by("other", now + SignedDuration::from_secs(2));
        assert_eq!(observed.see(Some(&renewed)), Duration::ZERO);
    }

    #[test]
    fn takeover_counts_a_transition_and_renewal_does_not() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let taken = claimed_spec(Some(&held_by("other", now)), &cfg(), now);
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        assert_eq!(taken.lease_transitions, Some(4));
        let earlier = now - SignedDuration::from_secs(4);
        let renewed = claimed_spec(Some(&held_by("me", earlier)), &cfg(), now);
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time.unwrap().0, earlier);
        assert_eq!(renewed.renew_time.unwrap().0, now);
        assert_eq!(claimed_spec(None, &cfg(), now).lease_transitions, Some(0));
    }
}
