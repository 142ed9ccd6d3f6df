//! Leader election on a `coordination.k8s.io` Lease: only the holder reconciles and writes. A
//! standby takes over once the holder has not renewed for the lease duration; a holder that
//! cannot renew within its deadline stops, so two leaders never write at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tracing::{debug, info, warn};

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

/// Decides what to do with a Lease at `now` (pure).
pub fn lease_verdict(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> LeaseVerdict {
    let Some(spec) = spec else {
        return LeaseVerdict::Acquire;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => LeaseVerdict::Renew,
        None | Some("") => LeaseVerdict::Acquire,
        Some(_) => {
            let last = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(|t| t.0);
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            match last {
                Some(t) if t + duration > now => LeaseVerdict::Wait,
                _ => LeaseVerdict::Acquire,
            }
        }
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
async fn try_claim(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let existing = api.get_opt(&cfg.name).await?;
    let spec = existing.as_ref().and_then(|l| l.spec.as_ref());
    if lease_verdict(spec, &cfg.identity, now) == LeaseVerdict::Wait {
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

/// Waits until this process holds the Lease.
pub async fn acquire(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    info!(lease = %cfg.name, identity = %cfg.identity, "waiting to become the leader");
    loop {
        match try_claim(&api, cfg).await {
            Ok(true) => {
                info!(lease = %cfg.name, identity = %cfg.identity, "became the leader");
                return;
            }
            Ok(false) => debug!("another replica leads"),
            Err(e) => warn!(error = %e, "leader election: cannot read or write the Lease"),
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
}

/// Renews the Lease until a renewal has not succeeded within the renew deadline; then returns,
/// and the caller must stop writing at once.
pub async fn hold(client: Client, cfg: &LeaseConfig) {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(cfg.retry_period).await;
        // A hanging request must not keep a deposed leader writing: bound each attempt.
        match tokio::time::timeout(cfg.renew_deadline, try_claim(&api, cfg)).await {
            Ok(Ok(true)) => last_renewal = tokio::time::Instant::now(),
            Ok(Ok(false)) => {
                warn!(lease = %cfg.name, "another replica took the Lease");
                return;
            }
            Ok(Err(e)) => warn!(error = %e, "renewing the Lease failed"),
            Err(_) => warn!(lease = %cfg.name, "renewing the Lease timed out"),
        }
        if last_renewal.elapsed() > cfg.renew_deadline {
            warn!(lease = %cfg.name, "could not renew the Lease within the deadline");
            return;
        }
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
    fn verdicts() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        assert_eq!(lease_verdict(None, "me", now), LeaseVerdict::Acquire);
        assert_eq!(
            lease_verdict(Some(&held_by("me", now)), "me", now),
            LeaseVerdict::Renew
        );
        let fresh = held_by("other", now - SignedDuration::from_secs(5));
        assert_eq!(lease_verdict(Some(&fresh), "me", now), LeaseVerdict::Wait);
        let stale = held_by("other", now - SignedDuration::from_secs(16));
        assert_eq!(
            lease_verdict(Some(&stale), "me", now),
            LeaseVerdict::Acquire
        );
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("x", now)
        };
        assert_eq!(
            lease_verdict(Some(&released), "me", now),
            LeaseVerdict::Acquire
        );
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
