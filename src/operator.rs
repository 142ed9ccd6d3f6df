//! Starts the operator: HTTP endpoints, CA, caches and controllers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter as EventSource};
use tracing::{error, info};

use crate::ca::store::{CaLocation, load_or_bootstrap};
use crate::controller::ca_rotation_controller::{RotationContext, RotationSettings};
use crate::controller::entitlement::EntitlementContext;
use crate::controller::events::{EventBudget, EventPublisher};
use crate::controller::identity::context::IdentityContext;
use crate::controller::identity::settings::{LifecyclePolicy, Settings as PlanSettings};
use crate::controller::identity::wakeup_timer::WakeupTimer;
use crate::controller::pod_certificate::context::PodCertContext;
use crate::controller::reissue_pacing::ReissuePacing;
use crate::controller::report::Reporter;
use crate::controller::signing_ca::SigningCa;
use crate::controller::workload_watch::WorkloadWatches;
use crate::controller::{self, Wiring};
use crate::fence::{Fence, FenceLayer};
use crate::health::Health;
use crate::http;
use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::revoke::service::{RevocationConfig, RevocationDeps};
use crate::settings::Settings;
use crate::shutdown::Shutdown;
use nhi_core::issue::inputs::IssuancePolicy;
use nhi_core::issue::kube_client::KubeEndpoint;
use nhi_core::revocation::crl_size::CRL_BUDGET;
use nhi_core::revocation::quota::Limits;

/// Errors that stop the operator at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error(
        "cannot build a Kubernetes client (is KUBECONFIG or the in-cluster config available?): {0}"
    )]
    Client(#[from] kube::Error),
    #[error("cannot serve HTTP on the configured address: {0}")]
    Http(#[from] std::io::Error),
    #[error("lost the leader Lease; stopping so that only one replica writes")]
    LostLeadership,
    #[error("the controllers did not stop within 15 s of the shutdown request; stopping anyway")]
    ShutdownOverdue,
    #[error("cannot read the Kubernetes configuration: {0}")]
    KubeConfig(#[from] kube::config::InferConfigError),
    #[error("cannot read --kube-api-ca-file: {0}")]
    KubeApiCa(String),
}

/// Where identities' kubeconfigs point: the settings, or what the operator itself uses.
fn kube_endpoint(settings: &Settings, config: &kube::Config) -> Result<KubeEndpoint, StartError> {
    let server = settings
        .kube_api_server
        .clone()
        .unwrap_or_else(|| config.cluster_url.to_string())
        .trim_end_matches('/')
        .to_string();
    let ca_pem = match &settings.kube_api_ca_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| StartError::KubeApiCa(format!("{}: {e}", path.display())))?,
        ),
        None => config.root_cert.as_ref().map(|ders| {
            ders.iter()
                .map(|der| nhi_identity::pem_chain::certificate_pem(der))
                .collect::<String>()
        }),
    };
    Ok(KubeEndpoint { server, ca_pem })
}

/// How long the controllers may take to finish their reconciles after SIGTERM before they are
/// dropped (well inside Kubernetes' default 30 s grace period).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// Runs the operator until it receives SIGTERM or SIGINT.
pub async fn run(settings: Settings) -> Result<(), StartError> {
    settings.validate().map_err(StartError::Settings)?;
    let shutdown = Shutdown::listen();
    let mut config = kube::Config::infer().await?;
    crate::kube_api::identify(&mut config);
    let kube_endpoint = match settings.kubernetes_access {
        true => Some(kube_endpoint(&settings, &config)?),
        false => None,
    };
    // Two clients: the Lease and the pod label go through `client`; everything the leader does
    // goes through `writer`, whose writes pass the fence (open without leader election).
    let fence = match settings.leader_elect {
        true => Fence::leased(settings.renew_deadline.0.unsigned_abs()),
        false => Fence::open(),
    };
    let writer = crate::request_retry::client_builder(config.clone())?
        .with_layer(&FenceLayer(fence.clone()))
        .build();
    let client = crate::request_retry::client_builder(config)?.build();
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::new(settings.metrics_per_identity));
    // Revocations are answered by the leader; the trust documents it publishes are served over
    // HTTP too (a standby has none and says so).
    let (revoker, revocations) = crate::revoke::channel();
    let bound = http::serve(
        settings.http_addr,
        health.clone(),
        metrics.clone(),
        revoker.clone(),
        Some(http::PublishedTrust {
            client: client.clone(),
            scope: settings.watch_namespace.clone(),
        }),
    )
    .await?;
    info!(address = %bound, "serving /metrics, /readyz, /livez");

    // With leader election, a standby waits here (ready, as a standby) until it holds the Lease;
    // from then on the Lease is renewed alongside everything the leader does, the CA load
    // included, and the leader stops the moment it cannot renew.
    let overdue = shutdown.clone().overdue(SHUTDOWN_GRACE);
    // The pod label the delegation Service selects: `true` once the endpoint listens (in
    // `lead`), `false` as a standby and whenever this replica stops leading.
    let delegating = settings.delegation_addr.is_some();
    let unlabel = |client: Client| async move {
        if delegating {
            let unlabel = crate::leader_label::label_own_pod(&client, false, 1);
            let _ = tokio::time::timeout(Duration::from_secs(2), unlabel).await;
        }
    };
    let Some(cfg) = settings.leader_elect.then(|| lease_config(&settings)) else {
        let running = (health, metrics, shutdown);
        return tokio::select! {
            result = lead(settings, writer, kube_endpoint, running, (revoker, revocations)) => result,
            _ = overdue => Err(StartError::ShutdownOverdue),
        };
    };
    health.standby.store(true, Ordering::Relaxed);
    if delegating {
        // A restarted leader's pod keeps its labels: say at once that this replica is not one.
        crate::leader_label::label_own_pod(&client, false, 3).await;
    }
    let claimed = tokio::select! {
        claimed = leader::acquire(client.clone(), &cfg, &fence) => claimed,
        _ = shutdown.clone().requested() => return Ok(()),
    };
    health.standby.store(false, Ordering::Relaxed);
    let running = (health, metrics, shutdown);
    tokio::select! {
        result = lead(settings, writer, kube_endpoint, running, (revoker, revocations)) => {
            unlabel(client.clone()).await;
            leader::release(client, &cfg).await;
            result
        }
        _ = overdue => {
            // The Lease expires by itself if this cannot be done quickly.
            let release = async {
                unlabel(client.clone()).await;
                leader::release(client.clone(), &cfg).await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(2), release).await;
            Err(StartError::ShutdownOverdue)
        }
        _ = leader::hold(client.clone(), &cfg, claimed, &fence) => {
            unlabel(client).await;
            Err(StartError::LostLeadership)
        }
    }
}

/// Loads the CA and runs the controllers until shutdown (the leader's work).
async fn lead(
    settings: Settings,
    client: Client,
    kube_endpoint: Option<KubeEndpoint>,
    (health, metrics, shutdown): (Arc<Health>, Arc<Metrics>, Shutdown),
    (revoker, revocations): (crate::revoke::Revoker, crate::revoke::handle::Inbox),
) -> Result<(), StartError> {
    let location = CaLocation {
        namespace: settings.operator_namespace.clone(),
        secret_name: settings.ca_secret.clone(),
        bootstrap_lifetime: settings.ca_lifetime.0,
        common_name: format!("nhi-operator root CA ({})", settings.trust_domain),
    };
    // A CA that cannot be loaded is reported and retried; the operator stays up and not ready.
    let mut delay = Duration::from_secs(1);
    let ca = loop {
        match load_or_bootstrap(client.clone(), &location).await {
            Ok(ca) => break ca,
            Err(e) => {
                error!(error = %e, retry_in_seconds = delay.as_secs(), "cannot load the CA");
                metrics.count_failure("CAUnavailable");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {},
                    _ = shutdown.clone().requested() => return Ok(()),
                }
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    };
    info!(not_after = %nhi_identity::timestamp::rfc3339(ca.not_after()), "CA loaded");
    health.ca_loaded.store(true, Ordering::Relaxed);

    let reporter = Reporter {
        events: Arc::new(EventPublisher::new(
            client.clone(),
            event_source(),
            EventBudget::new(settings.event_burst, settings.event_qps),
        )),
        metrics,
    };
    let ns = settings.watch_namespace.clone();
    let ca = SigningCa::new(ca);
    let (identities, identity_cache) = crate::cache::indexed_store();
    // The revocation service: one writer of the record per operator, signing with whatever CA
    // is current.
    tokio::spawn(crate::revoke::service::run(
        revocations,
        RevocationDeps {
            client: client.clone(),
            ca: ca.shared(),
            identities: identities.store(),
            health: health.clone(),
            metrics: reporter.metrics.clone(),
            recorder: Recorder::new(client.clone(), event_source()),
        },
        RevocationConfig {
            namespace: settings.operator_namespace.clone(),
            record_name: settings.revocation_configmap.clone(),
            scope: ns.clone(),
            crl_validity: settings.crl_validity.0,
            publish_delay: settings.debug_publish_delay.0.unsigned_abs(),
            limits: Limits {
                per_identity: settings.revocation_quota_per_identity,
                per_namespace: settings.revocation_quota_per_namespace,
                crl_bytes: CRL_BUDGET,
            },
        },
    ));
    let wakeups = Arc::new(WakeupTimer::default());
    let (secrets, secret_stream) = controller::identity::watch::identity_secret_watch(
        client.clone(),
        ns.as_deref(),
        health.clone(),
        wakeups.clone(),
    );
    let (entitlements, entitlement_cache) = crate::cache::indexed_store();
    let (policies, policy_watch) = controller::policy_watch::policy_view(
        client.clone(),
        ns.clone(),
        settings.cluster_domain.clone(),
        health.clone(),
    );
    let (entitlement_trigger, entitlement_requests) = tokio::sync::mpsc::unbounded_channel();
    let pacing = Arc::new(ReissuePacing::new(settings.ca_rotation_reissue_rate));
    let identity_ctx = Arc::new(IdentityContext {
        client: client.clone(),
        ca: ca.clone(),
        settings: plan_settings(&settings, kube_endpoint.is_some()),
        kube_endpoint,
        secrets: secrets.clone(),
        entitlements,
        policies: policies.clone(),
        health: health.clone(),
        memory: Default::default(),
        wakeups,
        revoker: revoker.clone(),
        workloads: Arc::new(WorkloadWatches::new(client.clone(), ns.clone())),
        pacing: pacing.clone(),
        reporter: reporter.clone(),
        entitlement_trigger,
    });
    let signer_off = nhi_core::podcert::signer_name::signer_off_reason(
        settings.pod_certificates,
        &settings.pod_certificate_signer,
        ns.is_some(),
    );
    if let Some(why) = &signer_off {
        tracing::info!(signer = %settings.pod_certificate_signer, "the pod-certificate signer is off: {why}");
    } else {
        let signer = Arc::new(PodCertContext {
            signer: settings.pod_certificate_signer.clone(),
            concurrency: settings.concurrency,
            client: client.clone(),
            ca: ca.clone(),
            identities: identities.clone(),
            entitlements: identity_ctx.entitlements.clone(),
            policies: policies.clone(),
            issuance: identity_ctx.settings.issuance.clone(),
            review_warning: identity_ctx.settings.lifecycle.review_warning,
            reporter: reporter.clone(),
            record_queues: Default::default(),
        });
        tokio::spawn(controller::pod_certificate::start(
            signer,
            ns.clone(),
            shutdown.clone(),
            health.clone(),
        ));
    }
    if let Some(addr) = settings.delegation_addr {
        let status = Arc::new(crate::delegation::status::StatusQueue::default());
        tokio::spawn(crate::delegation::status::run(
            status.clone(),
            client.clone(),
        ));
        let delegation = Arc::new(crate::delegation::DelegationContext {
            tls: crate::delegation::tls::TlsSource::new(
                ca.clone(),
                &settings.trust_domain,
                &settings.operator_namespace,
                settings.delegation_dns_names.clone(),
            ),
            ca: ca.clone(),
            revoker: revoker.clone(),
            identities: identities.store(),
            entitlements: identity_ctx.entitlements.clone(),
            policies: policies.clone(),
            trust_domain: settings.trust_domain.clone(),
            review_warning: identity_ctx.settings.lifecycle.review_warning,
            metrics: reporter.metrics.clone(),
            limits: Default::default(),
            status,
        });
        let bound = crate::delegation::server::serve(addr, delegation).await?;
        info!(address = %bound, "serving the delegation endpoint");
        // Now the Service may route here.
        crate::leader_label::label_own_pod(&client, true, 3).await;
    }
    let entitlement_ctx = Arc::new(EntitlementContext {
        client: client.clone(),
        identities,
        policies,
        reporter: reporter.clone(),
        kubernetes_access: identity_ctx.kube_endpoint.is_some(),
        health: health.clone(),
        recent_statuses: Default::default(),
        revoker: revoker.clone(),
    });
    let rotation_ctx = RotationContext {
        client,
        ca,
        pacing,
        revoker,
        secrets,
        health,
        reporter,
    };
    let rotation = RotationSettings {
        policy: crate::ca::rotation::RotationPolicy {
            renew_before: settings.ca_renew_before.0,
            propagation: settings.ca_rotation_propagation.0,
            spread: settings.ca_rotation_spread.0,
            max_ttl: settings.max_ttl.0,
        },
        location,
        scope: ns.clone(),
    };
    let wiring = Wiring {
        secret_stream,
        identity_cache,
        entitlement_cache,
        entitlement_requests,
        policy_watch,
        shutdown,
        namespace: ns,
        concurrency: settings.concurrency,
    };
    controller::run_controllers(
        identity_ctx,
        entitlement_ctx,
        (rotation_ctx, rotation),
        wiring,
    )
    .await;
    Ok(())
}

/// Who the operator's Events come from.
fn event_source() -> EventSource {
    EventSource {
        controller: "nhi-operator".into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

/// The settings the identity controller plans with.
fn plan_settings(settings: &Settings, kubernetes_access: bool) -> PlanSettings {
    PlanSettings {
        issuance: IssuancePolicy {
            trust_domain: settings.trust_domain.clone(),
            default_ttl: settings.default_ttl.0,
            min_ttl: settings.min_ttl.0,
            max_ttl: settings.max_ttl.0,
            renewal_fraction: settings.renewal_fraction,
        },
        lifecycle: LifecyclePolicy {
            workload_grace: settings.workload_grace_period.0,
            review_warning: settings.review_warning.0,
            finalizer_timeout: (settings.finalizer_timeout.0 > time::Duration::ZERO)
                .then_some(settings.finalizer_timeout.0),
        },
        kubernetes_access,
        reissue_spread: settings.ca_rotation_spread.0,
    }
}

fn lease_config(settings: &Settings) -> LeaseConfig {
    let identity = std::env::var("POD_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "nhi-operator".into());
            format!("{host}-{:06x}", rand::random::<u32>() & 0xff_ffff)
        });
    LeaseConfig {
        namespace: settings.operator_namespace.clone(),
        name: settings.leader_election_lease.clone(),
        identity,
        lease_duration: settings.lease_duration.0.unsigned_abs(),
        renew_deadline: settings.renew_deadline.0.unsigned_abs(),
        retry_period: settings.retry_period.0.unsigned_abs(),
    }
}
