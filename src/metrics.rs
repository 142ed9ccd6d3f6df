//! Prometheus metrics. Labels are bounded: reasons are a fixed set. Certificate expiry is
//! aggregated (how many identities hold a certificate, the earliest notAfter); a series per
//! identity (`namespace`, `name`) only with `--metrics-per-identity`, removed when the identity
//! goes away.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::controller::uid_key::{UidKey, uid_key};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label set carrying a stable CamelCase reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

/// Label set naming a controller (`machineidentity`, `entitlement`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: String,
}

/// Label set naming one identity.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityLabels {
    pub namespace: String,
    pub name: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Certificates issued, by why (`SecretMissing`, `RenewalDue`, ...).
    pub issued: Family<ReasonLabels, Counter>,
    /// Failed issuances and reconciles, by stable reason.
    pub failures: Family<ReasonLabels, Counter>,
    /// notAfter of each identity's current certificate (Unix seconds): the series exist only
    /// with `per_identity`.
    pub expiry: Family<IdentityLabels, Gauge<i64>>,
    per_identity: bool,
    /// notAfter of each identity's current certificate (by uid), whatever is exported.
    expiries: Mutex<HashMap<UidKey, i64>>,
    /// How many identities hold a certificate.
    pub certificates: Gauge<i64>,
    /// The earliest notAfter of them (Unix seconds; 0 when none).
    pub earliest_expiry: Gauge<i64>,
    /// Reconcile duration in seconds.
    pub reconcile_duration: Histogram,
    /// Events dropped: Normal ones past the Event budget, Warnings past their per-object limit.
    pub events_dropped: Counter,
    /// notAfter of the signing CA (Unix seconds).
    pub ca_expiry: Gauge<i64>,
    /// The CA rotation's phase: 0 idle, 1 publishing the next root, 2 re-issuing under it.
    pub ca_rotation_phase: Gauge<i64>,
    /// Reconciles started, by controller.
    pub reconciles_started: Family<ControllerLabels, Counter>,
    /// Reconciles finished (however they ended), by controller.
    pub reconciles: Family<ControllerLabels, Counter>,
    /// Revoked certificates on the record (not expired yet).
    pub revocation_entries: Gauge<i64>,
    /// How full the CRLs are, in percent of what a trust ConfigMap can hold.
    pub revocation_capacity_used: Gauge<i64>,
    /// Revocation requests refused, by reason (quota, capacity).
    pub revocations_refused: Family<ReasonLabels, Counter>,
    /// PodCertificateRequests answered, by outcome (Issued, Denied, Failed) and reason.
    pub pod_certificates: Family<OutcomeLabels, Counter>,
    /// How long each request waited for its answer (from its creation), by outcome.
    pub pod_certificate_wait: Family<AnswerLabels, Histogram, fn() -> Histogram>,
    /// Delegation requests answered, by outcome (Signed, Refused) and reason.
    pub delegations: Family<OutcomeLabels, Counter>,
    /// Seconds from a delegation request's arrival (its body read) to its answer.
    pub delegation_duration: Histogram,
}

/// Labels of an answer's wait.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnswerLabels {
    pub outcome: String,
}

/// Buckets of a request's wait for its answer, in seconds.
fn answer_wait_histogram() -> Histogram {
    Histogram::new([0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 300.0])
}

/// Labels of an answered request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
    pub reason: String,
}

impl Default for Metrics {
    /// Without per-identity series.
    fn default() -> Self {
        Metrics::new(false)
    }
}

impl Metrics {
    /// The metrics, with a series per identity or not (`per_identity`).
    pub fn new(per_identity: bool) -> Self {
        let issued = Family::<ReasonLabels, Counter>::default();
        let failures = Family::<ReasonLabels, Counter>::default();
        let expiry = Family::<IdentityLabels, Gauge<i64>>::default();
        let reconcile_duration = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        let mut registry = Registry::with_prefix("nhi");
        registry.register(
            "certificates_issued",
            "Certificates issued, by reason",
            issued.clone(),
        );
        registry.register(
            "failures",
            "Reconcile and issuance failures, by reason",
            failures.clone(),
        );
        if per_identity {
            registry.register(
                "certificate_expiry_timestamp_seconds",
                "notAfter of each identity's current certificate",
                expiry.clone(),
            );
        }
        let certificates = Gauge::<i64>::default();
        registry.register(
            "identities_with_certificate",
            "Identities holding a current certificate",
            certificates.clone(),
        );
        let earliest_expiry = Gauge::<i64>::default();
        registry.register(
            "certificate_expiry_earliest_timestamp_seconds",
            "The earliest notAfter of the identities' current certificates (0 when none)",
            earliest_expiry.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent reconciling one MachineIdentity",
            reconcile_duration.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "events_dropped",
            "Events not published: Normal ones past the Event budget, repeated Warnings past their per-object limit",
            events_dropped.clone(),
        );
        let ca_expiry = Gauge::<i64>::default();
        registry.register(
            "ca_expiry_timestamp_seconds",
            "notAfter of the signing CA",
            ca_expiry.clone(),
        );
        let ca_rotation_phase = Gauge::<i64>::default();
        registry.register(
            "ca_rotation_phase",
            "CA rotation phase: 0 idle, 1 publishing the next root, 2 re-issuing under the new CA",
            ca_rotation_phase.clone(),
        );
        let reconciles_started = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconciles_started",
            "Reconciles started, by controller",
            reconciles_started.clone(),
        );
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles finished, however they ended, by controller",
            reconciles.clone(),
        );
        let revocation_entries = Gauge::<i64>::default();
        registry.register(
            "revocation_record_entries",
            "Revoked certificates on the revocation record, not expired yet",
            revocation_entries.clone(),
        );
        let revocation_capacity_used = Gauge::<i64>::default();
        registry.register(
            "revocation_capacity_used_percent",
            "How full the CRLs are, in percent of what a trust ConfigMap can hold (revocations are refused past 100)",
            revocation_capacity_used.clone(),
        );
        let revocations_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "revocations_refused",
            "Revocation requests refused, by reason",
            revocations_refused.clone(),
        );
        let pod_certificates = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "pod_certificate_requests",
            "PodCertificateRequests answered by the signer, by outcome and reason",
            pod_certificates.clone(),
        );
        let pod_certificate_wait =
            Family::<AnswerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                answer_wait_histogram,
            );
        registry.register(
            "pod_certificate_answer_wait_seconds",
            "Seconds from a PodCertificateRequest's creation (whole seconds, as the API server \
             keeps it) to the signer's answer, by outcome",
            pod_certificate_wait.clone(),
        );
        let delegations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "delegations",
            "Delegation requests answered by the delegation endpoint, by outcome and reason",
            delegations.clone(),
        );
        let delegation_duration = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0,
        ]);
        registry.register(
            "delegation_duration_seconds",
            "Seconds from a delegation request's arrival to its answer (signing included)",
            delegation_duration.clone(),
        );
        Metrics {
            delegations,
            delegation_duration,
            pod_certificates,
            pod_certificate_wait,
            revocation_entries,
            revocation_capacity_used,
            revocations_refused,
            reconciles_started,
            reconciles,
            ca_expiry,
            ca_rotation_phase,
            registry: Mutex::new(registry),
            issued,
            failures,
            expiry,
            per_identity,
            expiries: Mutex::new(HashMap::new()),
            certificates,
            earliest_expiry,
            reconcile_duration,
            events_dropped,
        }
    }
}

impl Metrics {
    /// Counts an issuance.
    pub fn count_issued(&self, reason: &str) {
        self.issued
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a failure.
    pub fn count_failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a refused revocation request.
    pub fn count_revocation_refused(&self, reason: &str) {
        self.revocations_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts an answered PodCertificateRequest.
    pub fn count_pod_certificate(&self, outcome: &str, reason: &str) {
        self.pod_certificates
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records how long a request waited for its `outcome`.
    pub fn observe_pod_certificate_wait(&self, outcome: &str, seconds: f64) {
        self.pod_certificate_wait
            .get_or_create(&AnswerLabels {
                outcome: outcome.to_string(),
            })
            .observe(seconds);
    }

    /// Counts an answered delegation request and how long it took.
    pub fn count_delegation(&self, outcome: &str, reason: &str, seconds: f64) {
        self.delegations
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
                reason: reason.to_string(),
            })
            .inc();
        self.delegation_duration.observe(seconds);
    }

    /// Counts a Normal Event dropped by the budget.
    pub fn count_event_dropped(&self) {
        self.events_dropped.inc();
    }

    /// Records the certificate expiry of identity `uid` (`namespace/name`).
    pub fn set_expiry(&self, uid: &str, namespace: &str, name: &str, not_after_unix: i64) {
        if let Ok(mut e) = self.expiries.lock() {
            e.insert(uid_key(uid), not_after_unix);
        }
        if self.per_identity {
            let labels = IdentityLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
            };
            self.expiry.get_or_create(&labels).set(not_after_unix);
        }
    }

    /// Keeps the expiries of the identities whose uid `keep` accepts (after a relist: those of
    /// identities deleted while the watch was down go).
    pub fn retain_expiries(&self, keep: impl Fn(UidKey) -> bool) {
        if let Ok(mut e) = self.expiries.lock() {
            e.retain(|uid, _| keep(*uid));
        }
    }

    /// Forgets identity `uid` (`namespace/name`, deleted): keeps the series count bounded by
    /// live identities.
    pub fn forget(&self, uid: &str, namespace: &str, name: &str) {
        if let Ok(mut e) = self.expiries.lock() {
            e.remove(&uid_key(uid));
        }
        self.expiry.remove(&IdentityLabels {
            namespace: namespace.to_string(),
            name: name.to_string(),
        });
    }

    /// Sets the aggregate expiry gauges from what is recorded.
    fn aggregate_expiries(&self) {
        if let Ok(e) = self.expiries.lock() {
            self.certificates.set(e.len() as i64);
            self.earliest_expiry
                .set(e.values().copied().min().unwrap_or(0));
        }
    }

    /// Starts timing a reconcile; the duration is observed when the guard drops.
    pub fn time_reconcile(&self) -> ReconcileTimer<'_> {
        ReconcileTimer {
            start: Instant::now(),
            histogram: &self.reconcile_duration,
        }
    }

    /// Counts a reconcile of `controller` as started now, and as finished when the returned
    /// guard drops (at the end of the reconcile, however it ends).
    pub fn count_reconcile(&self, controller: &str) -> ReconcileCount {
        let labels = ControllerLabels {
            controller: controller.to_string(),
        };
        self.reconciles_started.get_or_create(&labels).inc();
        ReconcileCount {
            finished: self.reconciles.get_or_create(&labels).clone(),
        }
    }

    /// The metrics in Prometheus' text format.
    pub fn encode(&self) -> String {
        self.aggregate_expiries();
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    start: Instant,
    histogram: &'a Histogram,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Counts a finished reconcile when dropped.
pub struct ReconcileCount {
    finished: Counter,
}

impl Drop for ReconcileCount {
    fn drop(&mut self) {
        self.finished.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_no_series_names_an_identity() {
        let m = Metrics::default();
        m.set_expiry("ua", "ns", "a", 42);
        m.set_expiry("ub", "ns", "b", 40);
        let text = m.encode();
        assert!(!text.contains("name=\"a\""), "{text}");
        assert!(text.contains("nhi_identities_with_certificate 2"), "{text}");
        assert!(
            text.contains("nhi_certificate_expiry_earliest_timestamp_seconds 40"),
            "{text}"
        );
        m.forget("ub", "ns", "b");
        assert!(
            m.encode()
                .contains("nhi_certificate_expiry_earliest_timestamp_seconds 42")
        );
    }

    #[test]
    fn a_pod_certificate_answer_wait_is_a_histogram_by_outcome() {
        let m = Metrics::default();
        m.observe_pod_certificate_wait("Issued", 0.4);
        m.observe_pod_certificate_wait("Denied", 21.0);
        let text = m.encode();
        for line in [
            "nhi_pod_certificate_answer_wait_seconds_count{outcome=\"Issued\"} 1",
            "nhi_pod_certificate_answer_wait_seconds_bucket{le=\"0.5\",outcome=\"Issued\"} 1",
            "nhi_pod_certificate_answer_wait_seconds_bucket{le=\"20.0\",outcome=\"Denied\"} 0",
            "nhi_pod_certificate_answer_wait_seconds_bucket{le=\"30.0\",outcome=\"Denied\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn encodes_counters_and_forgets_identities() {
        let m = Metrics::new(true);
        m.count_issued("SecretMissing");
        m.set_expiry("ua", "ns", "a", 42);
        {
            let _t = m.time_reconcile();
        }
        let text = m.encode();
        assert!(
            text.contains("nhi_certificates_issued_total{reason=\"SecretMissing\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "nhi_certificate_expiry_timestamp_seconds{namespace=\"ns\",name=\"a\"} 42"
            )
        );
        assert!(text.contains("nhi_reconcile_duration_seconds_count 1"));
        let counted = m.count_reconcile("machineidentity");
        let text = m.encode();
        assert!(
            text.contains("nhi_reconciles_started_total{controller=\"machineidentity\"} 1"),
            "{text}"
        );
        assert!(text.contains("nhi_reconciles_total{controller=\"machineidentity\"} 0"));
        drop(counted);
        assert!(
            m.encode()
                .contains("nhi_reconciles_total{controller=\"machineidentity\"} 1")
        );
        m.forget("ua", "ns", "a");
        assert!(!m.encode().contains("name=\"a\""));
    }
}
