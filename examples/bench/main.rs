//! `make bench`: N MachineIdentities applied at once against a real control plane, measured
//! against a bare-client baseline in the same run.
//!
//! Baseline: a bare client creates the same N MachineIdentities, adds the same finalizer, then
//! writes the same Secrets (certificates made beforehand) and status patches as fast as it can,
//! at the same concurrency. Revocation: the bare client deletes identities, removes each one's
//! finalizer and writes its serial into a ConfigMap (one writer, batching), as the operator does.
//! Operator: the operator binary runs scoped to a fresh namespace; N identities (each with a
//! service name and an attribute) are created at once and the time until every one is Ready is
//! measured, with per-identity apply-to-Ready latency, the operator's peak RSS and CPU seconds.
//! It runs twice: with one IdentityPolicy selecting the namespace, then with none, and reports
//! the ratio of the two rates.
//!
//! Pod certificates (`--pod-certificates`, `make bench MODE=pod-certificates`): N
//! PodCertificateRequests to Issued against N identities to Ready (the Secret path), both by the
//! same operator binary in the same run (see `pod_certificates.rs`).
//!
//! Delegation (`--delegation`, `make bench MODE=delegation`): children signed by the delegation
//! endpoint over mTLS, against the signing floor measured in the same run (see `delegation.rs`).
//!
//! Steady (`--steady`, `make bench MODE=steady`): with N identities in place (applied at once,
//! the burst), new ones applied at 50/s for `--steady-seconds` (default 60), each timed from its
//! create to Ready; both reported (see `steady.rs`).
//!
//! Scale (`make bench N=100000`: `--scale-baseline FILE` on one control plane, then `--scale FILE`
//! on another): one replica over N identities against the bare client, a restart over them
//! (catch-up, nothing re-issued), a revocation of 20,000 at once (see `scale.rs`).
//!
//! Every operator run but the delegation's reports the renewal spread of the identities it
//! applied at once: the busiest second of their renewals against the mean over the window.
//!
//! Usage: bench [N] [--operator PATH] [--concurrency C] [--pod-certificates | --delegation |
//! --steady [--steady-seconds S] | --scale-baseline FILE | --scale FILE]

mod delegation;
mod pod_certificates;
mod scale;
mod steady;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use nhi_operator::api::{
    CUSTOM_POLICY_LABEL, DnsName, IdentityPolicy, MachineIdentity, MachineIdentitySpec, Owner,
};
use nhi_operator::ca::CertificateAuthority;
use nhi_operator::controller::status::{Outcome, desired_status};
use nhi_operator::issue::leaf::{LeafRequest, issue_leaf, spiffe_id};

fn identity(name: &str) -> MachineIdentity {
    MachineIdentity::new(
        name,
        MachineIdentitySpec {
            owner: Owner {
                team: "bench".into(),
                contact: None,
            },
            workload_ref: None,
            review_by: None,
            on_review_lapse: None,
            certificate: Default::default(),
            secret_name: format!("{name}-id"),
            attributes: Default::default(),
            kubernetes_access: None,
            pod_certificates: None,
            delegation: None,
        },
    )
}

async fn namespace(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> String {
    let name = format!("{prefix}-{:06x}", rand::random::<u32>() & 0xffffff);
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    name
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The bare-client baseline: returns identities/s and the namespace it wrote to (its identities
/// are the baseline of the revocation phase).
pub(crate) async fn baseline(client: &Client, n: usize, concurrency: usize) -> (f64, String) {
    let ns = namespace(client, "bench-base", &[]).await;
    let now = time::OffsetDateTime::now_utc();
    let material =
        CertificateAuthority::generate_root("bench", time::Duration::days(2), now).unwrap();
    let ca = CertificateAuthority::from_material(&material, now).unwrap();
    eprintln!("baseline: making {n} certificates beforehand");
    let secrets: Vec<(Secret, nhi_operator::api::MachineIdentityStatus)> = (0..n)
        .map(|i| {
            let name = format!("b{i}");
            let key = nhi_operator::issue::keys::generate_key(Default::default()).unwrap();
            let req = LeafRequest {
                spiffe_id: spiffe_id("cluster.local", &ns, &name),
                common_name: None,
                namespace: ns.clone(),
                dns_names: vec![],
                usages: vec![
                    nhi_operator::api::Usage::Client,
                    nhi_operator::api::Usage::Server,
                ],
                ttl: time::Duration::hours(1),
                not_after_cap: None,
                extensions: vec![],
            };
            let issued = issue_leaf(&ca, &req, &key, now).unwrap();
            let mut mi = identity(&name);
            mi.metadata.namespace = Some(ns.clone());
            mi.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
            let s = nhi_operator::controller::identity_secret::build_identity_secret(
                &mi, &issued, &ca, "h", None,
            );
            // The status the operator writes for this certificate.
            let outcome = Outcome::Valid {
                info: issued.info.clone(),
                renew_at: issued.info.not_after - time::Duration::minutes(20),
                grants: vec![],
                kubernetes_access: None,
            };
            let status = desired_status(None, &outcome, Some(req.spiffe_id.clone()), Some(1), now);
            (s, status)
        })
        .collect();
    let mis: Api<MachineIdentity> = Api::namespaced(client.clone(), &ns);
    let sapi: Api<Secret> = Api::namespaced(client.clone(), &ns);
    // Observed the same way as the operator's run is (a watch on the identities), so the
    // observer's cost to the control plane is in both measurements.
    let observer = tokio::spawn(
        watcher(mis.clone(), watcher::Config::default())
            .applied_objects()
            .try_for_each(|_| async { Ok(()) }),
    );
    let start = Instant::now();
    stream::iter(secrets.into_iter().enumerate())
        .for_each_concurrent(concurrency, |(i, (mut secret, status))| {
            let (mis, sapi) = (mis.clone(), sapi.clone());
            async move {
                let name = format!("b{i}");
                let created = mis
                    .create(&PostParams::default(), &identity(&name))
                    .await
                    .expect("create mi");
                // The finalizer the operator adds (the same merge patch).
                let finalizer = serde_json::json!({"metadata": {
                    "resourceVersion": created.metadata.resource_version,
                    "finalizers": [nhi_operator::labels::REVOKE_FINALIZER],
                }});
                let created = mis
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&finalizer))
                    .await
                    .expect("add finalizer");
                // The same Secret the operator writes, owned by its identity.
                secret.metadata.owner_references =
                    created.controller_owner_ref(&()).map(|r| vec![r]);
                sapi.create(&PostParams::default(), &secret)
                    .await
                    .expect("create secret");
                let status = serde_json::json!({
                    "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity", "status": status
                });
                mis.patch_status(
                    &name,
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(&status),
                )
                .await
                .expect("status");
            }
        })
        .await;
    observer.abort();
    let rate = n as f64 / start.elapsed().as_secs_f64();
    (rate, ns)
}

async fn delete_namespace(client: &Client, ns: &str) {
    // Identities still holding the finalizer would keep the namespace terminating (the operator
    // that would release them has stopped).
    let mis: Api<MachineIdentity> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = mis.list(&Default::default()).await {
        let release = serde_json::json!({"metadata": {"finalizers": null}});
        stream::iter(list.items)
            .for_each_concurrent(32, |mi| {
                let (mis, release) = (mis.clone(), release.clone());
                async move {
                    let _ = mis
                        .patch(
                            &mi.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&release),
                        )
                        .await;
                }
            })
            .await;
    }
    let _ = Api::<Namespace>::all(client.clone())
        .delete(ns, &DeleteParams::default())
        .await;
}

/// Deletes `names` at `concurrency` and measures, per name, the time from its delete request
/// until its serial is in the `data` of ConfigMap `configmap` (parsed by `serials_of`).
pub(crate) async fn propagation(
    client: &Client,
    ns: &str,
    names: &[(String, String)],
    concurrency: usize,
    configmap: &str,
    serials_of: fn(&std::collections::BTreeMap<String, String>) -> Vec<String>,
    sink: Option<tokio::sync::mpsc::UnboundedSender<String>>,
) -> Vec<f64> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch_seen = seen.clone();
    let selector = format!("metadata.name={configmap}");
    let watch = tokio::spawn(
        watcher(cms, watcher::Config::default().fields(&selector))
            .applied_objects()
            .try_for_each(move |cm: ConfigMap| {
                let seen = watch_seen.clone();
                async move {
                    let now = Instant::now();
                    let serials = serials_of(&cm.data.unwrap_or_default());
                    let mut seen = seen.lock().unwrap();
                    for s in serials {
                        seen.entry(s).or_insert(now);
                    }
                    Ok(())
                }
            }),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mis: Api<MachineIdentity> = Api::namespaced(client.clone(), ns);
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    stream::iter(names.iter().cloned())
        .for_each_concurrent(concurrency, |(name, serial)| {
            let (mis, started, sink) = (mis.clone(), started.clone(), sink.clone());
            async move {
                started
                    .lock()
                    .unwrap()
                    .insert(serial.clone(), Instant::now());
                mis.delete(&name, &DeleteParams::default())
                    .await
                    .expect("delete mi");
                if let Some(sink) = &sink {
                    let release = serde_json::json!({"metadata": {"finalizers": null}});
                    mis.patch(&name, &PatchParams::default(), &Patch::Merge(&release))
                        .await
                        .expect("remove finalizer");
                    let _ = sink.send(serial);
                }
            }
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let all_seen = {
            let seen = seen.lock().unwrap();
            names.iter().all(|(_, s)| seen.contains_key(s))
        };
        if all_seen {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watch.abort();
    let seen = seen.lock().unwrap();
    let started = started.lock().unwrap();
    let mut latencies: Vec<f64> = names
        .iter()
        .filter_map(|(_, s)| Some(seen.get(s)?.duration_since(*started.get(s)?).as_secs_f64()))
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    latencies
}

/// The baseline's revocation writer: one task, like the operator's, writing every serial that
/// has arrived since its last write into the ConfigMap `baseline-crl` in one merge patch.
pub(crate) async fn baseline_writer(
    client: Client,
    ns: String,
) -> tokio::sync::mpsc::UnboundedSender<String> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
    let empty: ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "baseline-crl"}})).unwrap();
    cms.create(&PostParams::default(), &empty)
        .await
        .expect("baseline ConfigMap");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let data: serde_json::Map<String, serde_json::Value> = batch
                .into_iter()
                .map(|s| (s, serde_json::Value::from("revoked")))
                .collect();
            cms.patch(
                "baseline-crl",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "data": data })),
            )
            .await
            .expect("baseline ConfigMap write");
        }
    });
    tx
}

pub(crate) fn crl_serials(data: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    use x509_parser::prelude::FromDer;
    let Some(pem_text) = data.get("crl.pem") else {
        return vec![];
    };
    let Ok(block) = pem::parse(pem_text) else {
        return vec![];
    };
    let Ok((_, crl)) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(block.contents())
    else {
        return vec![];
    };
    crl.iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect()
}

pub(crate) fn baseline_keys(data: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    data.keys().cloned().collect()
}

/// CPU seconds used so far by the local control plane's apiserver and etcd (when their pid files
/// are there), to show where the time of each phase goes.
fn control_plane_cpu() -> Option<f64> {
    // The control plane's state folder: $NHI_CLUSTER_DIR (e2e/bench.sh exports it), else the
    // default one.
    let dir = std::env::var_os("NHI_CLUSTER_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/.cluster"));
    let mut total = 0.0;
    for c in ["kube-apiserver", "etcd"] {
        let pid: u32 = std::fs::read_to_string(dir.join(format!("{c}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        total += proc_stats(pid).1;
    }
    Some(total)
}

pub(crate) fn proc_stats(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15; after the ')' split they are at 11 and 12.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    (hwm_kib, cpu)
}

/// The namespace label of the run under a policy, and of the run under none.
const POLICED: &str = "bench";
pub(crate) const UNPOLICED: &str = "bench-none";

/// An identity as the operator runs create it: its service names and an attribute, so that a
/// policy has something to check (and what the built-in default allows too).
fn served_identity(name: &str, ns: &str) -> MachineIdentity {
    let mut mi = identity(name);
    mi.spec.certificate.dns_names = vec![
        DnsName(format!("{name}.{ns}.svc")),
        DnsName(format!("{name}.{ns}.svc.cluster.local")),
    ];
    mi.spec.attributes = [("project".to_string(), "bench".to_string())].into();
    mi
}

/// Creates the IdentityPolicy of the policed run (selecting namespaces labelled for it);
/// returns its name.
async fn bench_policy(client: &Client) -> String {
    let name = format!("bench-{:06x}", rand::random::<u32>() & 0xffffff);
    let policy: IdentityPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "nhi.dev/v1alpha1", "kind": "IdentityPolicy",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {CUSTOM_POLICY_LABEL: POLICED}},
            "dnsNames": {"allowed": ["*.bench.example", "*.other.example"]},
            "grants": {"allowed": ["bench.*", "reports.*"], "exclusive": true},
            "maxTTL": "2h",
            "keyAlgorithms": ["ECDSA-P256", "ECDSA-P384"],
            "kubernetesRules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
            "reservedAttributes": ["compliance.*", "security-level"]
        }
    }))
    .expect("the bench policy");
    Api::<IdentityPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("create the bench IdentityPolicy");
    name
}

/// Starts the operator scoped to `ns` (its CA there too) with `extra` flags, and waits until it
/// has bootstrapped its CA. `NHI_BENCH_LOG` is its RUST_LOG (default `warn`), to look into a run.
async fn start_operator(
    client: &Client,
    operator: &str,
    ns: &str,
    concurrency: usize,
    extra: &[&str],
) -> std::process::Child {
    start_operator_at(client, operator, ns, concurrency, extra, "127.0.0.1:0").await
}

/// [`start_operator`], serving its metrics and probes on `http_addr`.
pub(crate) async fn start_operator_at(
    client: &Client,
    operator: &str,
    ns: &str,
    concurrency: usize,
    extra: &[&str],
    http_addr: &str,
) -> std::process::Child {
    let child = std::process::Command::new(operator)
        .args([
            "run",
            "--watch-namespace",
            ns,
            "--operator-namespace",
            ns,
            "--http-addr",
            http_addr,
        ])
        .args(["--concurrency", &concurrency.to_string()])
        .args(extra)
        .env(
            "RUST_LOG",
            std::env::var("NHI_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        // Its standard output is the delegation audit log: not the bench's report.
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {operator}: {e}"));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let t = Instant::now();
    while secrets.get_opt("nhi-ca").await.ok().flatten().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "operator did not bootstrap its CA"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child
}

/// One operator run: the operator scoped to a fresh namespace labelled `nhi.dev/identity-policy=
/// <label>`, N identities applied at once, timed until every one is Ready.
pub(crate) struct OperatorRun {
    pub ns: String,
    child: std::process::Child,
    pub pid: u32,
    pub rate: f64,
    pub latencies: Vec<f64>,
    pub peak_rss: u64,
    /// Its peak RSS before the first identity (KiB).
    pub idle_rss: u64,
    pub cpu: f64,
    pub ready: HashMap<String, (Instant, String)>,
}

impl OperatorRun {
    /// Stops the operator (its namespace stays until the end).
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// When each identity of `mis` was first seen Ready, with the serial it had then (a watch; abort
/// the handle when done).
pub(crate) type Ready = Arc<Mutex<HashMap<String, (Instant, String)>>>;

pub(crate) fn watch_ready(
    mis: Api<MachineIdentity>,
) -> (Ready, tokio::task::JoinHandle<Result<(), watcher::Error>>) {
    let ready: Ready = Arc::default();
    let watch_ready = ready.clone();
    let watch = tokio::spawn(
        watcher(mis, watcher::Config::default())
            .applied_objects()
            .try_for_each(move |mi: MachineIdentity| {
                let ready = watch_ready.clone();
                async move {
                    let is_ready = mi.status.as_ref().is_some_and(|s| {
                        s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                    });
                    if is_ready {
                        let serial = mi.status.as_ref().and_then(|s| s.serial_number.clone());
                        ready
                            .lock()
                            .unwrap()
                            .entry(mi.name_any())
                            .or_insert_with(|| (Instant::now(), serial.unwrap_or_default()));
                    }
                    Ok(())
                }
            }),
    );
    (ready, watch)
}

pub(crate) async fn operator_run(
    client: &Client,
    operator: &str,
    n: usize,
    concurrency: usize,
    label: &str,
    extra: &[&str],
) -> OperatorRun {
    let ns = namespace(client, "bench-op", &[(CUSTOM_POLICY_LABEL, label)]).await;
    let child = start_operator(client, operator, &ns, concurrency, extra).await;
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_rss, _) = proc_stats(pid);

    let mis: Api<MachineIdentity> = Api::namespaced(client.clone(), &ns);
    let applied: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (ready, watch) = watch_ready(mis.clone());
    let start = Instant::now();
    stream::iter(0..n)
        .for_each_concurrent(concurrency, |i| {
            let (mis, applied, ns) = (mis.clone(), applied.clone(), ns.clone());
            async move {
                let name = format!("o{i}");
                applied.lock().unwrap().insert(name.clone(), Instant::now());
                mis.create(&PostParams::default(), &served_identity(&name, &ns))
                    .await
                    .expect("create mi");
            }
        })
        .await;
    // At least 20 identities/s (the slowest rate seen, on a control plane filling up).
    let deadline = Instant::now() + Duration::from_secs(600.max(n as u64 / 20));
    let mut peak_rss = 0;
    loop {
        let (rss, _) = proc_stats(pid);
        peak_rss = peak_rss.max(rss);
        if ready.lock().unwrap().len() >= n || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (rss, cpu) = proc_stats(pid);
    peak_rss = peak_rss.max(rss);
    watch.abort();
    let ready: HashMap<String, (Instant, String)> = ready.lock().unwrap().clone();
    let applied = applied.lock().unwrap().clone();
    let mut latencies: Vec<f64> = ready
        .iter()
        .filter_map(|(k, (r, _))| applied.get(k).map(|a| r.duration_since(*a).as_secs_f64()))
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    OperatorRun {
        ns,
        child,
        pid,
        rate: ready.len() as f64 / elapsed,
        latencies,
        peak_rss,
        idle_rss,
        cpu,
        ready,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args
        .iter()
        .find(|a| a.parse::<usize>().is_ok())
        .map(|a| a.parse().unwrap())
        .unwrap_or(1000);
    let flag = |f: &str| {
        args.iter()
            .position(|a| a == f)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let operator = flag("--operator").unwrap_or_else(|| "target/release/nhi-operator".into());
    let concurrency: usize = flag("--concurrency")
        .and_then(|c| c.parse().ok())
        .unwrap_or(32);
    let client = Client::try_default()
        .await
        .expect("a kubeconfig (KUBECONFIG) for the bench cluster");
    if args.iter().any(|a| a == "--pod-certificates") {
        pod_certificate_mode(&client, &operator, n, concurrency).await;
        return;
    }
    if args.iter().any(|a| a == "--delegation") {
        delegation_mode(&client, &operator, n).await;
        return;
    }
    if let Some(out) = flag("--scale-baseline") {
        scale::scale_baseline(&client, n, concurrency, &out).await;
        return;
    }
    if let Some(baseline) = flag("--scale") {
        scale::scale_mode(&client, &operator, n, concurrency, &baseline).await;
        return;
    }
    if args.iter().any(|a| a == "--steady") {
        let seconds = flag("--steady-seconds")
            .and_then(|s| s.parse().ok())
            .unwrap_or(60.0);
        steady_mode(&client, &operator, n, concurrency, seconds).await;
        return;
    }

    // Warm the control plane up (caches, connections, etcd) before measuring anything: whichever
    // run went first on a freshly started apiserver would otherwise pay for it alone.
    let warm_up = (n / 5).clamp(50, 200);
    eprintln!("== warm-up: {warm_up} identities written by the bare client, not measured");
    let (_, warm_ns) = baseline(&client, warm_up, concurrency).await;
    delete_namespace(&client, &warm_ns).await;

    eprintln!("== baseline: bare client, {n} identities, concurrency {concurrency}");
    let cp0 = control_plane_cpu();
    // --no-baseline: for investigating the operator alone; reported figures use the full run.
    let (base_rate, base_ns) = if args.iter().any(|a| a == "--no-baseline") {
        (f64::NAN, None)
    } else {
        let (rate, ns) = baseline(&client, n, concurrency).await;
        (rate, Some(ns))
    };
    let cp_base = control_plane_cpu().zip(cp0).map(|(b, a)| b - a);
    eprintln!("baseline: {base_rate:.1} identities/s");

    // With one IdentityPolicy in place (it selects the namespace and checks every DNS name,
    // attribute, TTL and key), and without any (the built-in default): the same identities.
    // In the order without, with, with, without (the control plane fills up as the runs go:
    // each kind gets an early and a late run); the rates of each kind are averaged, and the last
    // run is the one reported in full.
    let policy = bench_policy(&client).await;
    let mut policed_rates = vec![];
    let mut unpoliced_rates = vec![];
    let mut stopped = vec![];
    for label in [UNPOLICED, POLICED, POLICED] {
        eprintln!("== operator under namespace label {label}: applying {n} identities at once");
        let mut earlier = operator_run(&client, &operator, n, concurrency, label, &[]).await;
        earlier.stop();
        match label {
            POLICED => policed_rates.push(earlier.rate),
            _ => unpoliced_rates.push(earlier.rate),
        }
        stopped.push(earlier.ns.clone());
    }
    eprintln!("== operator without policy: applying {n} identities at once");
    let cp1 = control_plane_cpu();
    let run = operator_run(&client, &operator, n, concurrency, UNPOLICED, &[]).await;
    let cp_op = control_plane_cpu().zip(cp1).map(|(b, a)| b - a);
    let OperatorRun {
        ns,
        mut child,
        pid,
        rate,
        latencies,
        mut peak_rss,
        cpu,
        ready,
        ..
    } = run;

    let spread = steady::renewal_spread(&client, &ns, "o").await;

    // Revocation propagation: R identities deleted at once; each one's serial must reach the
    // published CRL (the nhi-trust ConfigMap). Baseline: the bare client deletes the same number
    // of identities and writes each one's serial into a ConfigMap itself.
    let r = n.clamp(1, 250.max(n / 4));
    eprintln!("== revocation: deleting {r} identities, timing each serial into nhi-trust's CRL");
    let victims: Vec<(String, String)> = ready
        .iter()
        .take(r)
        .map(|(name, (_, serial))| (name.clone(), serial.clone()))
        .collect();
    let revocations = propagation(
        &client,
        &ns,
        &victims,
        concurrency,
        "nhi-trust",
        crl_serials,
        None,
    )
    .await;
    let base_revocations = match &base_ns {
        Some(bns) => {
            let names: Vec<(String, String)> = (0..r)
                .map(|i| (format!("b{i}"), format!("{i:040x}")))
                .collect();
            let sink = baseline_writer(client.clone(), bns.clone()).await;
            propagation(
                &client,
                bns,
                &names,
                concurrency,
                "baseline-crl",
                baseline_keys,
                Some(sink),
            )
            .await
        }
        None => vec![],
    };
    let (rss, _) = proc_stats(pid);
    peak_rss = peak_rss.max(rss);
    let _ = child.kill();
    let _ = child.wait();
    delete_namespace(&client, &ns).await;
    for other in &stopped {
        delete_namespace(&client, other).await;
    }
    let _ = Api::<IdentityPolicy>::all(client.clone())
        .delete(&policy, &DeleteParams::default())
        .await;
    if let Some(bns) = &base_ns {
        delete_namespace(&client, bns).await;
    }

    println!("identities:                 {n} ({} Ready)", ready.len());
    println!("operator rate:              {rate:.1} identities/s to Ready");
    println!("baseline rate (bare client): {base_rate:.1} identities/s");
    println!("ratio operator/baseline:    {:.2}", rate / base_rate);
    unpoliced_rates.push(rate);
    let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len() as f64;
    let (with, without) = (mean(&policed_rates), mean(&unpoliced_rates));
    println!(
        "with one IdentityPolicy:    {with:.1} identities/s, without: {without:.1} (ratio {:.2}; runs {:?} / {:?})",
        with / without,
        policed_rates
            .iter()
            .map(|r| format!("{r:.1}"))
            .collect::<Vec<_>>(),
        unpoliced_rates
            .iter()
            .map(|r| format!("{r:.1}"))
            .collect::<Vec<_>>(),
    );
    println!(
        "apply-to-Ready p50:         {:.3} s",
        percentile(&latencies, 0.50)
    );
    println!(
        "apply-to-Ready p99:         {:.3} s",
        percentile(&latencies, 0.99)
    );
    println!(
        "operator peak RSS:          {:.1} MiB",
        peak_rss as f64 / 1024.0
    );
    println!("operator CPU:               {cpu:.2} s");
    print_spread(spread.as_ref());
    if let (Some(b), Some(o)) = (cp_base, cp_op) {
        println!(
            "apiserver+etcd CPU per identity: baseline {:.1} ms, operator run {:.1} ms",
            b * 1000.0 / n as f64,
            o * 1000.0 / n as f64
        );
    }
    println!(
        "revocations:                {} of {r} published (baseline {} of {r})",
        revocations.len(),
        base_revocations.len()
    );
    println!(
        "revocation to CRL p50/p99/max: {:.3} / {:.3} / {:.3} s (baseline {:.3} / {:.3} / {:.3} s)",
        percentile(&revocations, 0.50),
        percentile(&revocations, 0.99),
        revocations.last().copied().unwrap_or(f64::NAN),
        percentile(&base_revocations, 0.50),
        percentile(&base_revocations, 0.99),
        base_revocations.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "ratio revocation p99 operator/baseline: {:.2}",
        percentile(&revocations, 0.99) / percentile(&base_revocations, 0.99)
    );
    if revocations.len() < r || percentile(&revocations, 0.99) >= 2.0 {
        eprintln!("bench: revocation propagation p99 must be under 2 s for every revocation");
        std::process::exit(1);
    }
    if ready.len() < n {
        eprintln!("bench: only {} of {n} identities became Ready", ready.len());
        std::process::exit(1);
    }
}

/// The renewal spread line (see [`steady::renewal_spread`]).
pub(crate) fn print_spread(spread: Option<&steady::Spread>) {
    match spread {
        Some(s) => println!(
            "renewal spread:             {} identities over {} s: busiest second {} = {:.2} x the mean {:.2}/s; by tenth of the window {:?}",
            s.identities,
            s.window_seconds,
            s.busiest,
            s.busiest as f64 / s.mean,
            s.mean,
            s.tenths
        ),
        None => println!("renewal spread:             no renewal times"),
    }
}

/// The steady mode: N identities at once (the burst), then new ones at 50/s for `seconds` over
/// them; fails when the steady p99 is 200 ms or more.
async fn steady_mode(client: &Client, operator: &str, n: usize, concurrency: usize, seconds: f64) {
    const RATE: f64 = 50.0;
    eprintln!("== burst: {n} identities at once");
    let mut run = operator_run(client, operator, n, concurrency, UNPOLICED, &[]).await;
    let count = (RATE * seconds) as usize;
    eprintln!("== steady: {count} identities at {RATE}/s over the {n} in place");
    let steady = steady::steady_phase(client, &run.ns, RATE, count).await;
    let spread = steady::renewal_spread(client, &run.ns, "o").await;
    let (rss, cpu) = proc_stats(run.pid);
    run.stop();
    delete_namespace(client, &run.ns).await;
    let ms = |v: &[f64], p: f64| percentile(v, p) * 1000.0;
    println!(
        "identities in place:        {n} (burst: {:.1}/s to Ready)",
        run.rate
    );
    println!(
        "burst apply-to-Ready p50/p99: {:.0} / {:.0} ms (queueing: all applied at once)",
        ms(&run.latencies, 0.50),
        ms(&run.latencies, 0.99)
    );
    println!(
        "steady {RATE}/s apply-to-Ready p50/p99: {:.0} / {:.0} ms ({} of {count} Ready)",
        ms(&steady, 0.50),
        ms(&steady, 0.99),
        steady.len()
    );
    println!(
        "operator RSS at the end:    {:.1} MiB (peak in the burst {:.1} MiB), CPU {cpu:.2} s",
        rss as f64 / 1024.0,
        run.peak_rss as f64 / 1024.0
    );
    print_spread(spread.as_ref());
    if steady.len() < count || ms(&steady, 0.99) >= 200.0 {
        eprintln!("bench: the steady p99 must be under 200 ms, every identity Ready");
        std::process::exit(1);
    }
}

/// The delegation mode: the floor, the steady load at 200/s and the capacity (see
/// `delegation.rs`); fails when the p99 at 200/s is over 20 ms.
async fn delegation_mode(client: &Client, operator: &str, n: usize) {
    const RATE: f64 = 200.0;
    let run = delegation::delegation_run(client, operator, n, RATE).await;
    let ms = |v: &[f64], p: f64| percentile(v, p) * 1000.0;
    println!("children:                   {n} at {RATE}/s, then {n} as fast as they go");
    println!(
        "signing floor p50/p99:      {:.2} / {:.2} ms (key generated + certificate signed, in process)",
        ms(&run.floor, 0.50),
        ms(&run.floor, 0.99)
    );
    println!(
        "at {RATE}/s p50/p99:        {:.2} / {:.2} ms request to signed certificate (achieved {:.1}/s)",
        ms(&run.steady, 0.50),
        ms(&run.steady, 0.99),
        run.steady_rate
    );
    println!(
        "ratio p99 / floor p99:      {:.2}",
        percentile(&run.steady, 0.99) / percentile(&run.floor, 0.99)
    );
    println!("capacity:                   {:.1} children/s", run.capacity);
    println!(
        "operator peak RSS:          {:.1} MiB",
        run.peak_rss as f64 / 1024.0
    );
    if percentile(&run.steady, 0.99) >= 0.020 {
        eprintln!("bench: the p99 at {RATE}/s must be under 20 ms");
        std::process::exit(1);
    }
}

/// The pod-certificate mode: after the same warm-up, the Secret path and the pod-certificate
/// path in the order Secret, pod, pod, Secret (the control plane fills up as the runs go: each
/// path gets an early and a late run); the rates of each are averaged, the latencies are the last
/// run's.
async fn pod_certificate_mode(client: &Client, operator: &str, n: usize, concurrency: usize) {
    let warm_up = (n / 5).clamp(50, 200);
    eprintln!("== warm-up: {warm_up} identities written by the bare client, not measured");
    let (_, warm_ns) = baseline(client, warm_up, concurrency).await;
    delete_namespace(client, &warm_ns).await;
    let (mut secret_rates, mut pod_rates) = (vec![], vec![]);
    let mut secret_latencies = vec![];
    let mut last = None;
    for secret_path in [true, false, false, true] {
        if secret_path {
            eprintln!("== Secret path: {n} identities applied at once, timed to Ready");
            let mut run = operator_run(client, operator, n, concurrency, UNPOLICED, &[]).await;
            run.stop();
            delete_namespace(client, &run.ns).await;
            secret_rates.push(run.rate);
            secret_latencies = run.latencies;
        } else {
            eprintln!(
                "== pod certificates: {n} PodCertificateRequests created at once, timed to Issued"
            );
            let run = pod_certificates::pod_certificate_run(client, operator, n, concurrency).await;
            pod_rates.push(run.rate);
            last = Some(run);
        }
    }
    let run = last.expect("a pod-certificate run");
    let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len() as f64;
    let (pods, secrets) = (mean(&pod_rates), mean(&secret_rates));
    let runs = |rates: &[f64]| rates.iter().map(|r| format!("{r:.1}")).collect::<Vec<_>>();
    println!(
        "requests:                   {n} ({} Issued, {} refused)",
        run.issued, run.refused
    );
    println!(
        "pod certificates:           {pods:.1} requests/s to Issued (runs {:?})",
        runs(&pod_rates)
    );
    println!(
        "Secret path:                {secrets:.1} identities/s to Ready (runs {:?})",
        runs(&secret_rates)
    );
    println!("ratio pod certificates/Secret path: {:.2}", pods / secrets);
    println!(
        "create-to-Issued p50/p99:   {:.3} / {:.3} s (Secret path apply-to-Ready {:.3} / {:.3} s)",
        percentile(&run.latencies, 0.50),
        percentile(&run.latencies, 0.99),
        percentile(&secret_latencies, 0.50),
        percentile(&secret_latencies, 0.99),
    );
    println!(
        "operator peak RSS / CPU:    {:.1} MiB / {:.2} s (last pod-certificate run)",
        run.peak_rss as f64 / 1024.0,
        run.cpu
    );
    if let Some(why) = &run.first_refusal {
        eprintln!("bench: a request was not issued: {why}");
    }
    if run.issued < n {
        eprintln!("bench: only {} of {n} requests were Issued", run.issued);
        std::process::exit(1);
    }
}
