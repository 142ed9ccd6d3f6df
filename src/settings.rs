//! Operator settings: command-line flags with environment-variable fallbacks.

use std::net::SocketAddr;

use clap::{Args, ValueEnum};
use time::Duration;

/// A Go-style duration flag (`90s`, `5m`, `1h30m`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GoDuration(pub Duration);

impl std::str::FromStr for GoDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_go_duration(s).map(GoDuration)
    }
}

pub use nhi_core::duration::parse_go_duration;

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings of the `run` command.
#[derive(Clone, Debug, Args)]
pub struct Settings {
    /// SPIFFE trust domain of every issued identity.
    #[arg(long, env = "NHI_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// The cluster's DNS domain: a namespace's own service names, which its identities may always
    /// claim, are `<service>.<namespace>.svc` and `<service>.<namespace>.svc.<cluster domain>`.
    #[arg(long, env = "NHI_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Certificate lifetime when an identity does not set one.
    #[arg(long, env = "NHI_DEFAULT_TTL", default_value = "1h")]
    pub default_ttl: GoDuration,

    /// Shortest lifetime an identity may request.
    #[arg(long, env = "NHI_MIN_TTL", default_value = "5m")]
    pub min_ttl: GoDuration,

    /// Longest lifetime an identity may request.
    #[arg(long, env = "NHI_MAX_TTL", default_value = "24h")]
    pub max_ttl: GoDuration,

    /// Fraction of the lifetime after which certificates are renewed (an identity may override it).
    #[arg(long, env = "NHI_RENEWAL_FRACTION", default_value_t = 2.0 / 3.0)]
    pub renewal_fraction: f64,

    /// Namespace the operator runs in; its CA Secret lives there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "nhi-system")]
    pub operator_namespace: String,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "NHI_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Name of the CA Secret (`tls.crt`, `tls.key`, optional `ca.crt`) in the operator's namespace.
    /// Created with a self-signed root when absent; a provided CA is used as is.
    #[arg(long, env = "NHI_CA_SECRET", default_value = "nhi-ca")]
    pub ca_secret: String,

    /// Lifetime of a bootstrapped root CA.
    #[arg(long, env = "NHI_CA_LIFETIME", default_value = "8760h")]
    pub ca_lifetime: GoDuration,

    /// Rotate a CA the operator made when it ends within this (a provided CA gets a Warning
    /// Event instead). A rotation can also be asked for with the `nhi.dev/rotate-ca` annotation
    /// on the CA Secret.
    #[arg(long, env = "NHI_CA_RENEW_BEFORE", default_value = "720h")]
    pub ca_renew_before: GoDuration,

    /// During a CA rotation, how long to wait after every identity Secret and trust ConfigMap
    /// carries both roots before signing with the new CA: the time kubelet takes to update
    /// mounted Secrets and ConfigMaps.
    #[arg(long, env = "NHI_CA_ROTATION_PROPAGATION", default_value = "2m")]
    pub ca_rotation_propagation: GoDuration,

    /// After the new CA starts signing, identities re-issue spread over this long.
    #[arg(long, env = "NHI_CA_ROTATION_SPREAD", default_value = "10m")]
    pub ca_rotation_spread: GoDuration,

    /// At most this many re-issues per second under a new CA.
    #[arg(long, env = "NHI_CA_ROTATION_REISSUE_RATE", default_value_t = 20.0)]
    pub ca_rotation_reissue_rate: f64,

    /// Address of the HTTP server for /metrics, /readyz and /livez.
    #[arg(long, env = "NHI_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// How many identities are reconciled at once (and pod-certificate requests answered).
    #[arg(long, env = "NHI_CONCURRENCY", default_value_t = 32)]
    pub concurrency: u16,

    /// Normal Events the operator may publish at once (Warnings are never limited).
    #[arg(long, env = "NHI_EVENT_BURST", default_value_t = 100)]
    pub event_burst: u32,

    /// Normal Events per second after the burst; the rest are dropped and counted in
    /// `nhi_events_dropped_total`.
    #[arg(long, env = "NHI_EVENT_QPS", default_value_t = 10.0)]
    pub event_qps: f64,

    /// Run several replicas safely: only the holder of a coordination.k8s.io Lease in the
    /// operator's namespace reconciles; the others wait as standbys.
    #[arg(long, env = "NHI_LEADER_ELECT")]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "NHI_LEADER_ELECTION_LEASE",
        default_value = "nhi-operator"
    )]
    pub leader_election_lease: String,

    /// How long the Lease is valid without renewal: a standby takes over after this.
    #[arg(long, env = "NHI_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: GoDuration,

    /// A leader that has not renewed for this long stops (must be below --lease-duration).
    #[arg(long, env = "NHI_RENEW_DEADLINE", default_value = "10s")]
    pub renew_deadline: GoDuration,

    /// How often the Lease is renewed, and how often a standby tries to take it.
    #[arg(long, env = "NHI_RETRY_PERIOD", default_value = "2s")]
    pub retry_period: GoDuration,

    /// Log format.
    #[arg(long, env = "NHI_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Kubernetes API access for identities: client certificates through CertificateSigningRequests
    /// (`kubernetesAccess`) and Roles from Entitlements' `kubernetes` rules. Needs the RBAC to
    /// approve CSRs for the kube-apiserver-client signer, and to grant what the Roles grant.
    #[arg(long, env = "NHI_KUBERNETES_ACCESS", default_value_t = false)]
    pub kubernetes_access: bool,

    /// The pod-certificate signer `nhi.dev/identity`: answers PodCertificateRequests for pods
    /// covered by an identity's `spec.podCertificates` (Kubernetes 1.37's certificates.k8s.io/v1;
    /// on a cluster without that API it says so once and stays off). Needs `sign` and `attest`
    /// on the signer, the requests and their status, `get` on pods, and the ClusterTrustBundle
    /// `nhi.dev:identity:roots` it publishes the roots in.
    #[arg(long, env = "NHI_POD_CERTIFICATES", default_value_t = true, action = clap::ArgAction::Set)]
    pub pod_certificates: bool,

    /// The signer name the pod-certificate signer answers for (`spec.signerName` of the requests
    /// and of the ClusterTrustBundle `<name with / as :>:roots` it publishes). A second operator
    /// on the cluster, or one watching a single namespace, needs a name of its own: with
    /// `--watch-namespace` the default name leaves the signer off.
    #[arg(long, env = "NHI_POD_CERTIFICATE_SIGNER", default_value = nhi_core::podcert::DEFAULT_SIGNER_NAME)]
    pub pod_certificate_signer: String,

    /// Address of the delegation endpoint (HTTPS with client certificates, served by the leader):
    /// where identities with `spec.delegation` ask for task certificates. Absent: no endpoint.
    #[arg(long, env = "NHI_DELEGATION_ADDR")]
    pub delegation_addr: Option<SocketAddr>,

    /// The DNS names of the delegation endpoint's serving certificate (comma-separated): the
    /// names clients dial, such as the chart's Service `<service>.<namespace>.svc`.
    #[arg(
        long,
        env = "NHI_DELEGATION_DNS_NAMES",
        value_delimiter = ',',
        default_value = "localhost"
    )]
    pub delegation_dns_names: Vec<String>,

    /// API server URL written into the kubeconfig of identities with Kubernetes access.
    /// Default: the URL the operator itself uses (in a cluster, the in-cluster address).
    #[arg(long, env = "NHI_KUBE_API_SERVER")]
    pub kube_api_server: Option<String>,

    /// How long an identity's workload (`spec.workloadRef`) may be missing before the identity is
    /// revoked and deleted (an identity may set its own `workloadRef.gracePeriod`).
    #[arg(long, env = "NHI_WORKLOAD_GRACE_PERIOD", default_value = "5m")]
    pub workload_grace_period: GoDuration,

    /// How long before `reviewBy` lapses an identity shows `ReviewDue` (and an Event says so).
    #[arg(long, env = "NHI_REVIEW_WARNING", default_value = "336h")]
    pub review_warning: GoDuration,

    /// The ConfigMap in the operator's namespace that records revoked certificates (the CRL is
    /// signed from it; it survives restarts).
    #[arg(
        long,
        env = "NHI_REVOCATION_CONFIGMAP",
        default_value = "nhi-revocations"
    )]
    pub revocation_configmap: String,

    /// How long each CRL is valid (its nextUpdate); it is signed again at half of it.
    #[arg(long, env = "NHI_CRL_VALIDITY", default_value = "24h")]
    pub crl_validity: GoDuration,

    /// How long a deleted identity waits for the revocation of its certificates to be recorded
    /// before it is let go anyway, its certificates still valid (with a Warning Event). `0s`, the
    /// default: never; the deletion waits, showing why, until the revocation is recorded or its
    /// certificates have expired (at most their TTL), and no revocation is silently given up.
    #[arg(long, env = "NHI_FINALIZER_TIMEOUT", default_value = "0s")]
    pub finalizer_timeout: GoDuration,

    /// How many revoked, unexpired certificates one identity may have on the revocation record.
    /// A revocation past it is refused (a condition and an Event say so) until one expires.
    #[arg(long, env = "NHI_REVOCATION_QUOTA_PER_IDENTITY", default_value_t = 32)]
    pub revocation_quota_per_identity: usize,

    /// How many revoked, unexpired certificates one namespace's identities may have on the
    /// revocation record together (a deletion past it waits until some expire).
    #[arg(
        long,
        env = "NHI_REVOCATION_QUOTA_PER_NAMESPACE",
        default_value_t = 5000
    )]
    pub revocation_quota_per_namespace: usize,

    /// Pause between persisting revocations and publishing the CRL. Only for testing that a
    /// restart in between loses nothing.
    #[arg(
        long,
        env = "NHI_DEBUG_PUBLISH_DELAY",
        default_value = "0s",
        hide = true
    )]
    pub debug_publish_delay: GoDuration,

    /// Export a metric series per identity (`nhi_certificate_expiry_timestamp_seconds{namespace,
    /// name}`): one series for each identity, so off by default (the aggregates
    /// `nhi_identities_with_certificate` and `nhi_certificate_expiry_earliest_timestamp_seconds`
    /// are always there).
    #[arg(long, env = "NHI_METRICS_PER_IDENTITY")]
    pub metrics_per_identity: bool,

    /// PEM file of the CA that signed the API server's certificate, for those kubeconfigs.
    /// Default: the CA the operator itself trusts (in a cluster, the service account's ca.crt).
    #[arg(long, env = "NHI_KUBE_API_CA_FILE")]
    pub kube_api_ca_file: Option<std::path::PathBuf>,
}

impl Settings {
    /// Checks the settings for consistency.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_ttl.0 < Duration::seconds(10) {
            return Err("--min-ttl must be at least 10s".into());
        }
        if self.min_ttl.0 > self.max_ttl.0 {
            return Err("--min-ttl must not exceed --max-ttl".into());
        }
        if self.default_ttl.0 < self.min_ttl.0 || self.default_ttl.0 > self.max_ttl.0 {
            return Err("--default-ttl must lie within [--min-ttl, --max-ttl]".into());
        }
        if !(0.1..=0.9).contains(&self.renewal_fraction) {
            return Err("--renewal-fraction must lie within [0.1, 0.9]".into());
        }
        if self.trust_domain.is_empty()
            || !self.trust_domain.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' || c == '_'
            })
        {
            return Err("--trust-domain must be lowercase letters, digits, '.', '-' or '_'".into());
        }
        if !(self.event_qps.is_finite() && self.event_qps >= 0.0) {
            return Err("--event-qps must be a non-negative number".into());
        }
        if self.leader_elect
            && !(self.retry_period.0 < self.renew_deadline.0
                && self.renew_deadline.0 < self.lease_duration.0)
        {
            return Err(
                "leader election needs --retry-period < --renew-deadline < --lease-duration".into(),
            );
        }
        if self.crl_validity.0 < Duration::minutes(10) {
            return Err("--crl-validity must be at least 10m".into());
        }
        if self.finalizer_timeout.0 != Duration::ZERO
            && self.finalizer_timeout.0 < Duration::seconds(10)
        {
            return Err("--finalizer-timeout must be 0s (never) or at least 10s".into());
        }
        if self.revocation_quota_per_identity < 2 || self.revocation_quota_per_namespace < 2 {
            return Err(
                "--revocation-quota-per-identity and --revocation-quota-per-namespace must be at least 2"
                    .into(),
            );
        }
        if self.ca_renew_before.0 < self.max_ttl.0 || self.ca_renew_before.0 >= self.ca_lifetime.0 {
            return Err(
                "--ca-renew-before must be at least --max-ttl and below --ca-lifetime".into(),
            );
        }
        if !(self.ca_rotation_reissue_rate.is_finite() && self.ca_rotation_reissue_rate > 0.0) {
            return Err("--ca-rotation-reissue-rate must be a positive number".into());
        }
        nhi_core::podcert::signer_name::validate_signer_name(&self.pod_certificate_signer)
            .map_err(|e| format!("--pod-certificate-signer: {e}"))?;
        if self.delegation_addr.is_some() && self.delegation_dns_names.is_empty() {
            return Err("--delegation-dns-names needs at least one name".into());
        }
        if let Some(bad) = self.delegation_dns_names.iter().find(|n| {
            n.split('.')
                .any(|l| !nhi_identity::verify::spiffe::dns_label(l))
        }) {
            return Err(format!("--delegation-dns-names: {bad:?} is not a DNS name"));
        }
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        Ok(())
    }
}
