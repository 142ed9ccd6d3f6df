//! The revocation service: batches revocation requests, persists them in the record, signs the
//! CRL and hands it to the publishing task. One task, so the record has one writer per operator
//! and a burst of revocations costs one write and one signature.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use arc_swap::ArcSwap;
use kube::Client;
use kube::runtime::reflector::Store;
use time::{Duration, OffsetDateTime};
use tracing::{error, info, warn};

use super::capacity_warning::CapacityWarning;
use super::handle::{Inbox, Request, RevokeError};
use super::persist::{PersistError, RecordStore};
use super::trust::TrustDocuments;
use crate::ca::CertificateAuthority;
use crate::health::Health;
use crate::metrics::Metrics;
use kube::runtime::events::Recorder;
use nhi_api::MachineIdentity;
use nhi_core::revocation::quota::{Limits, Usage};
use nhi_core::revocation::{Revocation, RevocationRecord};

/// How the service is set up.
#[derive(Clone, Debug)]
pub struct RevocationConfig {
    /// The operator's namespace, where the record lives.
    pub namespace: String,
    /// The record's ConfigMap.
    pub record_name: String,
    /// The one namespace watched, or None for all.
    pub scope: Option<String>,
    /// How long each CRL is valid (its nextUpdate).
    pub crl_validity: Duration,
    /// A pause between persisting and publishing: only for the restart test.
    pub publish_delay: StdDuration,
    /// The revocation quotas and the CRLs' budget.
    pub limits: Limits,
}

/// What the service needs from the operator.
pub struct RevocationDeps {
    pub client: Client,
    pub ca: Arc<ArcSwap<CertificateAuthority>>,
    pub identities: Store<MachineIdentity>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    /// For the Warning Events about the record filling up.
    pub recorder: Recorder,
}

/// Attempts at writing the record before a batch is reported failed.
const WRITE_ATTEMPTS: u32 = 5;

/// How long a batch waits for more requests after its first.
const BATCH_LINGER: StdDuration = StdDuration::from_millis(25);

/// The most requests in one batch.
const MAX_BATCH: usize = 1024;

/// The shortest time between two CRL signatures (and so publications) in a burst.
const SIGNING_INTERVAL: StdDuration = StdDuration::from_millis(500);

/// Runs the service until every handle is dropped.
pub async fn run(mut inbox: Inbox, deps: RevocationDeps, config: RevocationConfig) {
    let store = RecordStore::new(deps.client.clone(), &config.namespace, &config.record_name);
    let mut delay = StdDuration::from_millis(500);
    let (mut record, mut version) = loop {
        match store.load().await {
            Ok(l) => break (Arc::new(l.record), l.resource_version),
            Err(e) => {
                error!(error = %e, "cannot read the revocation record; retrying");
                deps.metrics.count_failure("RevocationRecordUnreadable");
                // Requests meanwhile are refused at once, with the reason.
                let until = tokio::time::Instant::now() + delay;
                loop {
                    tokio::select! {
                        req = inbox.rx.recv() => match req {
                            Some(req) => {
                                let _ = req.done.send(Err(RevokeError::NotRecorded(e.to_string())));
                            }
                            None => return,
                        },
                        _ = tokio::time::sleep_until(until) => break,
                    }
                }
                delay = (delay * 2).min(StdDuration::from_secs(30));
            }
        }
    };
    info!(
        revoked = record.len(),
        crl_number = record.crl_number,
        "revocation record loaded"
    );
    publish_serials(&inbox, &record);
    // Publication runs in its own task: a slow apiserver or many namespaces never hold up the
    // answers to revocation requests.
    let (namespaces_tx, namespaces_rx) = tokio::sync::watch::channel(record.namespaces());
    tokio::spawn(super::publication_task::run(
        namespaces_rx,
        inbox.shared.clone(),
        super::publication_task::PublishingDeps {
            client: deps.client.clone(),
            identities: deps.identities.clone(),
            health: deps.health.clone(),
            metrics: deps.metrics.clone(),
        },
        config.scope.clone(),
    ));
    let mut pending: Vec<Request> = vec![];
    // A new CRL number is due (the CRL's half-life, an expiry, a new CA).
    let mut sign_due = true;
    let mut next_sign = tokio::time::Instant::now();
    // The record changed since the last CRL was signed, and when the last one was.
    let mut unsigned = false;
    let mut last_signed: Option<tokio::time::Instant> = None;
    // Whether the unsigned changes add revocations (only those are held back by publish_delay).
    let mut grew = false;
    // Documents signed but held back by `publish_delay`, and when they are published.
    let mut delayed: Option<(tokio::time::Instant, TrustDocuments)> = None;
    let mut capacity = CapacityWarning::new(
        deps.recorder.clone(),
        &config.namespace,
        &config.record_name,
    );
    loop {
        if sign_due || !pending.is_empty() {
            let now = OffsetDateTime::now_utc();
            let (batch, fresh) = admit(std::mem::take(&mut pending), &record, &deps, &config, now);
            let revocations: Vec<Revocation> =
                batch.iter().flat_map(|r| r.revocations.clone()).collect();
            match commit(
                &store,
                &mut record,
                &mut version,
                &revocations,
                now,
                sign_due,
            )
            .await
            {
                Ok(changed) => {
                    grew |= changed && fresh.iter().sum::<usize>() > 0;
                    if changed {
                        publish_serials(&inbox, &record);
                    }
                    for (r, fresh) in batch.into_iter().zip(fresh) {
                        let _ = r.done.send(Ok(fresh));
                    }
                    if changed {
                        unsigned = true;
                        sign_due = false;
                    }
                }
                Err(e) => {
                    error!(error = %e, "cannot persist revocations");
                    deps.metrics.count_failure("RevocationNotRecorded");
                    for r in batch {
                        let _ = r.done.send(Err(RevokeError::NotRecorded(e.to_string())));
                    }
                    if sign_due {
                        next_sign = tokio::time::Instant::now() + StdDuration::from_secs(5);
                        sign_due = false;
                    }
                }
            }
            let usage = Usage::of(&record, deps.ca.load().budgeted_crls());
            deps.metrics.revocation_entries.set(record.len() as i64);
            let fill = usage.fill(&config.limits);
            deps.metrics
                .revocation_capacity_used
                .set((fill * 100.0).round() as i64);
            capacity.observe(fill, record.len());
        }
        // Signed at most every SIGNING_INTERVAL: a burst of batches costs one signature (and one
        // publication) per interval, however many writes of the record it made.
        let signable =
            last_signed.is_none_or(|t| tokio::time::Instant::now() >= t + SIGNING_INTERVAL);
        if unsigned && signable {
            let now = OffsetDateTime::now_utc();
            match sign(&deps.ca, &record, now, config.crl_validity).await {
                Ok(docs) => {
                    if !config.publish_delay.is_zero() && grew {
                        // Held back (the restart test), while requests are answered.
                        delayed = Some((tokio::time::Instant::now() + config.publish_delay, docs));
                    } else {
                        delayed = None;
                        inbox.shared.documents.store(Some(Arc::new(docs)));
                        namespaces_tx.send_replace(record.namespaces());
                    }
                    next_sign = tokio::time::Instant::now()
                        + next_signing_in(&record, now, config.crl_validity);
                }
                Err(e) => {
                    error!(error = %e, "cannot sign the CRL; retrying");
                    deps.metrics.count_failure("CRLSigningFailed");
                    next_sign = tokio::time::Instant::now() + StdDuration::from_secs(5);
                }
            }
            unsigned = false;
            grew = false;
            last_signed = Some(tokio::time::Instant::now());
        }
        let never = tokio::time::Instant::now() + StdDuration::from_secs(3600);
        let sign_at = match (unsigned, last_signed) {
            (true, Some(t)) => t + SIGNING_INTERVAL,
            _ => never,
        };
        tokio::select! {
            req = inbox.rx.recv() => match req {
                Some(req) => {
                    pending.push(req);
                    // Lingers a moment for the rest of a burst: one write of the record (which
                    // can be most of a MiB) for many revocations, not one per two.
                    let until = tokio::time::Instant::now() + BATCH_LINGER;
                    while pending.len() < MAX_BATCH {
                        tokio::select! {
                            more = inbox.rx.recv() => match more {
                                Some(more) => pending.push(more),
                                None => break,
                            },
                            _ = tokio::time::sleep_until(until) => break,
                        }
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(next_sign) => sign_due = true,
            _ = tokio::time::sleep_until(sign_at), if unsigned => {}
            // A new CA (or bundle) signs and publishes a new CRL at once.
            _ = inbox.shared.ca_changed.notified() => sign_due = true,
            _ = tokio::time::sleep_until(delayed.as_ref().map_or(never, |(at, _)| *at)), if delayed.is_some() => {
                if let Some((_, docs)) = delayed.take() {
                    inbox.shared.documents.store(Some(Arc::new(docs)));
                    namespaces_tx.send_replace(record.namespaces());
                }
            }
        }
    }
    info!("revocation service stopped");
}

/// Tells the rest of the operator which serials the record holds (what RoleBindings leave out):
/// the record itself, shared, not a copy of its serials.
fn publish_serials(inbox: &Inbox, record: &Arc<RevocationRecord>) {
    inbox
        .shared
        .record
        .store(Some(Arc::new(super::handle::RecordSummary {
            record: record.clone(),
            crl_bytes: record.crl_bytes(),
        })));
}

/// Admits the requests of a batch within the quotas: those refused are answered at once (and
/// counted); the rest are returned with how many certificates each newly revokes (a serial two
/// requests name counts for the first).
fn admit(
    batch: Vec<Request>,
    record: &RevocationRecord,
    deps: &RevocationDeps,
    config: &RevocationConfig,
    now: OffsetDateTime,
) -> (Vec<Request>, Vec<usize>) {
    let mut usage = Usage::of(record, deps.ca.load().budgeted_crls());
    let mut admitted = vec![];
    let mut fresh = vec![];
    let deleting = Limits {
        per_identity: usize::MAX,
        ..config.limits
    };
    for r in batch {
        let limits = if r.deleting {
            &deleting
        } else {
            &config.limits
        };
        match usage.admit(record, &r.revocations, limits, now) {
            Ok(n) => {
                admitted.push(r);
                fresh.push(n);
            }
            Err(refusal) => {
                deps.metrics.count_revocation_refused(refusal.reason());
                let _ = r.done.send(Err(RevokeError::Refused(refusal)));
            }
        }
    }
    (admitted, fresh)
}

/// Adds `revocations` and drops expired entries, takes the next CRL number, and persists the
/// record; on a conflict, reads the other writer's record, merges and tries again. Returns
/// whether the record changed (and a CRL is to be signed): a request that adds nothing (all
/// revoked already) costs no write unless a new CRL is due anyway (`sign_due`).
async fn commit(
    store: &RecordStore,
    record: &mut Arc<RevocationRecord>,
    version: &mut Option<String>,
    revocations: &[Revocation],
    now: OffsetDateTime,
    sign_due: bool,
) -> Result<bool, PersistError> {
    for attempt in 1..=WRITE_ATTEMPTS {
        let mut next = RevocationRecord::clone(record);
        let added = next.add(revocations, now);
        let pruned = next.prune(now);
        if added == 0 && pruned == 0 && !sign_due && version.is_some() {
            return Ok(false);
        }
        next.crl_number += 1;
        match store.save(&next, version.as_deref()).await? {
            Some(v) => {
                *record = Arc::new(next);
                *version = Some(v);
                return Ok(true);
            }
            None => {
                warn!(
                    attempt,
                    "the revocation record changed since it was read; merging"
                );
                let theirs = store.load().await?;
                Arc::make_mut(record).merge(&theirs.record);
                *version = theirs.resource_version;
            }
        }
    }
    Err(store.contended(WRITE_ATTEMPTS))
}

/// Signs the CRL for `record` (whose CRL number is persisted already) off the async runtime.
async fn sign(
    ca: &ArcSwap<CertificateAuthority>,
    record: &RevocationRecord,
    now: OffsetDateTime,
    validity: Duration,
) -> Result<TrustDocuments, String> {
    let ca = ca.load_full();
    let mut params = record.crl_params(now, validity);
    let number = record.crl_number;
    tokio::task::spawn_blocking(move || {
        // During a CA rotation the retiring (and next) CA signs a CRL too: a relying party
        // matches each certificate to the CRL of its own issuer. The retiring and current CAs'
        // list every revoked serial; the next CA's lists none, as it has issued nothing yet.
        // The revoked entries are never copied: a signer that lists none signs the same
        // parameters with the list taken out for it.
        let mut crl_pem = String::new();
        for signer in ca.crl_signers() {
            let crl = if ca.lists_revocations(signer) {
                params.signed_by(signer.issuer())
            } else {
                let listed = std::mem::take(&mut params.revoked_certs);
                let crl = params.signed_by(signer.issuer());
                params.revoked_certs = listed;
                crl
            };
            let crl = crl.map_err(|e| format!("signing the CRL failed: {e}"))?;
            crl_pem.push_str(
                &crl.pem()
                    .map_err(|e| format!("encoding the CRL failed: {e}"))?,
            );
        }
        Ok(TrustDocuments {
            ca_pem: ca.trust_bundle_pem().to_string(),
            crl_pem,
            crl_number: number,
        })
    })
    .await
    .map_err(|e| format!("the signing task failed: {e}"))?
}

/// When to sign the next CRL: at half its validity, or a minute after the first entry expires
/// (so the CRL shrinks), whichever is sooner; never more often than once a minute for expiries.
fn next_signing_in(
    record: &RevocationRecord,
    now: OffsetDateTime,
    validity: Duration,
) -> StdDuration {
    let refresh = validity / 2;
    let at = match record.next_expiry() {
        Some(t) => (t + Duration::minutes(1)).min(now + refresh),
        None => now + refresh,
    };
    let wait = (at - now).max(Duration::minutes(1));
    StdDuration::try_from(wait).unwrap_or(StdDuration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nhi_core::revocation::Reason;
    use time::macros::datetime;

    #[test]
    fn the_crl_is_signed_again_before_it_expires_and_when_entries_expire() {
        let now = datetime!(2026-11-23 10:00 UTC);
        let validity = Duration::hours(24);
        let empty = RevocationRecord::default();
        assert_eq!(
            next_signing_in(&empty, now, validity),
            StdDuration::from_secs(12 * 3600)
        );
        let mut r = RevocationRecord::default();
        r.add(
            &[Revocation {
                serial_hex: "0a".into(),
                not_after: now + Duration::minutes(30),
                reason: Reason::CessationOfOperation,
                identity: "ns/a".into(),
            }],
            now,
        );
        assert_eq!(
            next_signing_in(&r, now, validity),
            StdDuration::from_secs(31 * 60)
        );
        // An entry expiring now waits a minute, never zero.
        assert_eq!(
            next_signing_in(&r, now + Duration::minutes(30), validity),
            StdDuration::from_secs(60)
        );
    }
}
