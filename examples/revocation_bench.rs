//! `make bench-revocation`: revocation under abuse, against a real control plane.
//!
//! 1. A revoke loop: LOOP requests (default 10,000) on one identity, made as its namespace's own
//!    user (impersonated, with a Role allowing only get and patch of MachineIdentities there),
//!    while revocations of 400 identities in four other namespaces go on every 250 ms; reports how many of the
//!    loop's were accepted (the per-identity quota), the latency of the others (request to
//!    `status.lastRevocation` answering it) and the writes it cost (etcd puts, ConfigMap writes).
//! 2. N distinct revocations (default 20,000): N identities over N/2,500 namespaces, all deleted
//!    at once; reports the time from the deletion to each serial on the CRL published in the
//!    trust ConfigMap (p50/p99/max), the size of every ConfigMap involved, and the writes: trust
//!    ConfigMap writes measured, against one per namespace for every record write (what each
//!    batch cost before signing and publication were debounced).
//!
//! The loop sends `--loop-concurrency` requests at once (default 64: a flood; 1 is a shell loop
//! of `kubectl annotate`). At 64 on one object the apiserver itself saturates: every patch of
//! the same object retries on conflict inside it.
//!
//! Usage: revocation_bench [--identities N] [--loop LOOP] [--loop-concurrency C] --operator PATH
//!        [--etcd URL]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Config};
use nhi_operator::api::{MachineIdentity, MachineIdentitySpec, Owner};
use x509_parser::prelude::FromDer;

const PER_NAMESPACE: usize = 2500;
const OPERATOR_NS: &str = "bench-rev-op";

struct Args {
    identities: usize,
    loop_requests: usize,
    loop_concurrency: usize,
    operator: String,
    etcd: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        identities: 20_000,
        loop_requests: 10_000,
        loop_concurrency: 64,
        operator: "target/release/nhi-operator".into(),
        etcd: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--identities" => a.identities = value.parse().expect("--identities N"),
            "--loop" => a.loop_requests = value.parse().expect("--loop N"),
            "--loop-concurrency" => {
                a.loop_concurrency = value
                    .parse()
                    .ok()
                    .filter(|c| *c > 0)
                    .expect("--loop-concurrency N, at least 1")
            }
            "--operator" => a.operator = value,
            "--etcd" => a.etcd = Some(value),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

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

/// This run's name for `base`: runs never share a namespace (an earlier run's may still be
/// draining, its deletions waiting for their revocations).
fn run_name(base: &str) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| format!("{:04x}", rand::random::<u16>()));
    format!("{base}-{run}")
}

async fn fresh_namespace(client: &Client, name: &str) {
    let api = Api::<Namespace>::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    api.create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "n={} p50={:.3}s p99={:.3}s max={:.3}s",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

/// etcd's count of puts (every write the apiserver makes), from its /metrics.
async fn etcd_puts(etcd: &Option<String>) -> Option<f64> {
    let url = format!("{}/metrics", etcd.as_ref()?);
    let out = tokio::process::Command::new("curl")
        .args(["-sf", &url])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("etcd_mvcc_put_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// The apiserver's count of ConfigMap writes (create, update, patch), from its /metrics.
async fn configmap_writes(client: &Client) -> f64 {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = client.request_text(req).await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| l.contains("resource=\"configmaps\""))
        .filter(|l| {
            ["POST", "PUT", "PATCH", "APPLY"]
                .iter()
                .any(|v| l.contains(&format!("verb=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

struct Operator {
    child: std::process::Child,
    metrics_addr: Arc<Mutex<Option<String>>>,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_operator(path: &str) -> Operator {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(path)
        .args([
            "run",
            "--operator-namespace",
            OPERATOR_NS,
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--concurrency",
            "32",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(
            std::fs::File::create("/tmp/revocation-bench-operator.log")
                .map(std::process::Stdio::from)
                .unwrap_or_else(|_| std::process::Stdio::null()),
        )
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {path}: {e}"));
    Operator {
        child,
        metrics_addr: Arc::new(Mutex::new(Some(format!("127.0.0.1:{port}")))),
    }
}

impl Operator {
    async fn metric(&self, prefix: &str) -> f64 {
        let addr = self.metrics_addr.lock().unwrap().clone().unwrap();
        let out = tokio::process::Command::new("curl")
            .args(["-sf", &format!("http://{addr}/metrics")])
            .output()
            .await
            .expect("curl");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .sum()
    }

    fn peak_rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

/// Creates `names` in `ns` and waits until every one is Ready; returns each one's serial.
async fn create_ready(client: &Client, ns: &str, names: &[String]) -> HashMap<String, String> {
    let api: Api<MachineIdentity> = Api::namespaced(client.clone(), ns);
    stream::iter(names.iter().cloned())
        .for_each_concurrent(32, |name| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &identity(&name))
                    .await
                    .expect("create mi");
            }
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let list = api.list(&ListParams::default()).await.expect("list mi");
        let serials: HashMap<String, String> = list
            .items
            .iter()
            .filter(|mi| {
                mi.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .filter_map(|mi| {
                Some((
                    mi.metadata.name.clone()?,
                    mi.status.as_ref()?.serial_number.clone()?,
                ))
            })
            .collect();
        if serials.len() >= names.len() {
            return serials;
        }
        assert!(Instant::now() < deadline, "identities in {ns} not Ready");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A client acting as `user` (impersonated by the admin credentials).
async fn client_as(user: &str) -> Client {
    let mut config = Config::infer().await.expect("kubeconfig");
    config.auth_info.impersonate = Some(user.into());
    Client::try_from(config).expect("client")
}

/// Lets `user` get and patch the MachineIdentities of `ns`, nothing else.
async fn namespace_user(client: &Client, ns: &str, user: &str) {
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "mi-editor", "namespace": ns},
        "rules": [{"apiGroups": ["nhi.dev"], "resources": ["machineidentities"], "verbs": ["get", "patch"]}]
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "mi-editor", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mi-editor"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
}

fn revoke_patch(request: &str) -> Patch<serde_json::Value> {
    Patch::Merge(
        serde_json::json!({"metadata": {"annotations": {"nhi.dev/revoke-requested": request}}}),
    )
}

/// Asks for a revocation of `name` and waits for the operator's answer (recorded, or refused
/// over a quota); returns the latency, and whether it was refused.
async fn revoke_and_wait(api: &Api<MachineIdentity>, name: &str, request: &str) -> (f64, bool) {
    let asked = Instant::now();
    api.patch(name, &PatchParams::default(), &revoke_patch(request))
        .await
        .expect("patch");
    loop {
        let mi = api.get(name).await.expect("get");
        let status = mi.status.unwrap_or_default();
        let answered = status
            .last_revocation
            .as_ref()
            .is_some_and(|r| r.request.as_deref() == Some(request));
        let refused = status
            .refused_revocation
            .as_ref()
            .is_some_and(|r| r.request == request);
        if answered || refused {
            return (asked.elapsed().as_secs_f64(), refused);
        }
        assert!(
            asked.elapsed() < Duration::from_secs(60),
            "{name}: no answer to {request}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn revoke_loop(client: &Client, op: &Operator, a: &Args) {
    println!(
        "== 1. a revoke loop of {} requests on one identity, {} at once",
        a.loop_requests, a.loop_concurrency
    );
    let loop_ns = &run_name("bench-rev-loop");
    fresh_namespace(client, loop_ns).await;
    create_ready(client, loop_ns, &["looped".to_string()]).await;
    namespace_user(client, loop_ns, "bench-tenant").await;
    let others: Vec<(String, String)> = {
        let mut v = vec![];
        for i in 0..4 {
            let ns = run_name(&format!("bench-rev-other-{i}"));
            fresh_namespace(client, &ns).await;
            let names: Vec<String> = (0..100).map(|j| format!("o{j}")).collect();
            create_ready(client, &ns, &names).await;
            v.extend(names.into_iter().map(|n| (ns.clone(), n)));
        }
        v
    };
    let (puts0, cm0) = (etcd_puts(&a.etcd).await, configmap_writes(client).await);
    let refused0 = op
        .metric("nhi_revocations_refused_total{reason=\"RevocationQuotaExceeded\"}")
        .await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let background = {
        let (client, done, latencies) = (client.clone(), done.clone(), latencies.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            let mut inflight = vec![];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let (ns, name) = others[i % others.len()].clone();
                let (client, latencies) = (client.clone(), latencies.clone());
                inflight.push(tokio::spawn(async move {
                    let api: Api<MachineIdentity> = Api::namespaced(client, &ns);
                    let (t, refused) = revoke_and_wait(&api, &name, &format!("other-{i}")).await;
                    latencies.lock().unwrap().push((t, refused));
                }));
                i += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            for t in inflight {
                let _ = t.await;
            }
        })
    };
    let tenant = client_as("bench-tenant").await;
    let looped: Api<MachineIdentity> = Api::namespaced(tenant, loop_ns);
    let started = Instant::now();
    let denied = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    stream::iter(0..a.loop_requests)
        .for_each_concurrent(a.loop_concurrency, |i| {
            let (looped, denied) = (looped.clone(), denied.clone());
            async move {
                if looped
                    .patch(
                        "looped",
                        &PatchParams::default(),
                        &revoke_patch(&format!("loop-{i}")),
                    )
                    .await
                    .is_err()
                {
                    denied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
        .await;
    let loop_time = started.elapsed();
    // Let the operator answer the last request before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    background.await.unwrap();
    let admin_view: Api<MachineIdentity> = Api::namespaced(client.clone(), loop_ns);
    let mi = admin_view.get("looped").await.unwrap();
    let status = mi.status.unwrap_or_default();
    let refused = op
        .metric("nhi_revocations_refused_total{reason=\"RevocationQuotaExceeded\"}")
        .await
        - refused0;
    let (puts1, cm1) = (etcd_puts(&a.etcd).await, configmap_writes(client).await);
    println!(
        "loop: {} requests as the namespace's user in {:.1}s ({} refused by the apiserver); the operator refused {} over the quota; looped shows {:?}",
        a.loop_requests,
        loop_time.as_secs_f64(),
        denied.load(std::sync::atomic::Ordering::Relaxed),
        refused,
        status
            .refused_revocation
            .as_ref()
            .map(|r| r.message.clone())
    );
    let latencies = latencies.lock().unwrap().clone();
    println!(
        "other namespaces' revocations meanwhile (request -> answered), {} refused: {}",
        latencies.iter().filter(|(_, r)| *r).count(),
        summary(latencies.iter().map(|(t, _)| *t).collect())
    );
    println!(
        "writes during the loop: etcd puts {}, ConfigMap writes {}",
        match (puts0, puts1) {
            (Some(a), Some(b)) => format!("{}", b - a),
            _ => "n/a (no --etcd)".into(),
        },
        cm1 - cm0
    );
    for ns in std::iter::once(loop_ns.to_string())
        .chain((0..4).map(|i| run_name(&format!("bench-rev-other-{i}"))))
    {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(&ns, &DeleteParams::default())
            .await;
    }
}

/// Every serial on the PEM CRLs of `crl_pem`.
fn crl_serials(crl_pem: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    for block in pem::parse_many(crl_pem).unwrap_or_default() {
        if let Ok((_, crl)) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(block.contents())
        {
            for r in crl.iter_revoked_certificates() {
                out.insert(hex::encode(r.raw_serial()));
            }
        }
    }
    out
}

fn configmap_bytes(cm: &ConfigMap) -> usize {
    cm.data
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>()
        + cm.binary_data
            .iter()
            .flatten()
            .map(|(k, v)| k.len() + v.0.len())
            .sum::<usize>()
}

async fn mass_deletion(client: &Client, op: &Operator, a: &Args) {
    let namespaces = a.identities.div_ceil(PER_NAMESPACE);
    println!(
        "== 2. {} distinct revocations: identities over {namespaces} namespaces, deleted at once",
        a.identities
    );
    let mut serials: BTreeMap<String, (String, String)> = BTreeMap::new();
    let created = Instant::now();
    for i in 0..namespaces {
        let ns = run_name(&format!("bench-rev-{i}"));
        fresh_namespace(client, &ns).await;
        let count = PER_NAMESPACE.min(a.identities - i * PER_NAMESPACE);
        let names: Vec<String> = (0..count).map(|j| format!("d{j}")).collect();
        for (name, serial) in create_ready(client, &ns, &names).await {
            serials.insert(
                nhi_operator::revocation::normalise_serial(&serial),
                (ns.clone(), name),
            );
        }
    }
    println!(
        "{} identities Ready in {:.0}s; operator peak RSS so far {:.1} MiB",
        serials.len(),
        created.elapsed().as_secs_f64(),
        op.peak_rss_mib()
    );
    let (puts0, cm0) = (etcd_puts(&a.etcd).await, configmap_writes(client).await);
    let record_api: Api<ConfigMap> = Api::namespaced(client.clone(), OPERATOR_NS);
    let crl_number = |cm: &ConfigMap| -> u64 {
        let Some(gz) = cm.binary_data.as_ref().and_then(|d| d.get("revoked.gz")) else {
            return 0;
        };
        let mut text = String::new();
        let _ =
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz.0[..]), &mut text);
        text.lines()
            .next()
            .and_then(|l| l.strip_prefix("crlNumber "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let number0 = record_api
        .get_opt("nhi-revocations")
        .await
        .ok()
        .flatten()
        .map_or(0, |cm| crl_number(&cm));
    // The trust ConfigMap is watched from before the first deletion (one namespace's: they all
    // hold the same CRL), so each serial's time on the CRL is when it got there, not when the
    // deletions were all sent.
    let deleted = Instant::now();
    let watched: HashSet<String> = serials.keys().cloned().collect();
    let watcher = {
        let trust: Api<ConfigMap> = Api::namespaced(client.clone(), &run_name("bench-rev-0"));
        tokio::spawn(async move {
            let mut seen: HashMap<String, f64> = HashMap::new();
            let deadline = Instant::now() + Duration::from_secs(1200);
            while seen.len() < watched.len() && Instant::now() < deadline {
                if let Ok(Some(cm)) = trust.get_opt("nhi-trust").await {
                    let crl = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get("crl.pem"))
                        .cloned()
                        .unwrap_or_default();
                    let at = deleted.elapsed().as_secs_f64();
                    for s in crl_serials(&crl) {
                        if watched.contains(&s) {
                            seen.entry(s).or_insert(at);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            seen
        })
    };
    // Every identity deleted at once (as fast as the apiserver takes the calls), each one's
    // deletion time kept.
    let delete_times: Arc<Mutex<HashMap<String, f64>>> = Arc::default();
    stream::iter(
        serials
            .iter()
            .map(|(s, (ns, name))| (s.clone(), ns.clone(), name.clone())),
    )
    .for_each_concurrent(64, |(serial, ns, name)| {
        let (client, times) = (client.clone(), delete_times.clone());
        async move {
            let api: Api<MachineIdentity> = Api::namespaced(client, &ns);
            // The time the call is made: the deletion is in effect before it returns.
            let at = deleted.elapsed().as_secs_f64();
            api.delete(&name, &DeleteParams::default())
                .await
                .expect("delete");
            times.lock().unwrap().insert(serial, at);
        }
    })
    .await;
    let delete_calls = deleted.elapsed();
    let delete_times = delete_times.lock().unwrap().clone();
    let seen = watcher.await.expect("the CRL watcher");
    println!(
        "deletion calls took {:.1}s; serials on the published CRL: {} of {}; delete -> on the CRL: {}",
        delete_calls.as_secs_f64(),
        seen.len(),
        serials.len(),
        summary(
            seen.iter()
                .map(|(s, at)| at - delete_times.get(s).copied().unwrap_or(0.0))
                .collect()
        )
    );
    let record = record_api.get("nhi-revocations").await.expect("record");
    let record_writes = crl_number(&record) - number0;
    let (puts1, cm1) = (etcd_puts(&a.etcd).await, configmap_writes(client).await);
    let mut largest = ("nhi-revocations".to_string(), configmap_bytes(&record));
    for i in 0..namespaces {
        let ns = run_name(&format!("bench-rev-{i}"));
        if let Ok(Some(cm)) = Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get_opt("nhi-trust")
            .await
        {
            let b = configmap_bytes(&cm);
            if b > largest.1 {
                largest = (format!("{ns}/nhi-trust"), b);
            }
        }
    }
    println!(
        "sizes: record {} bytes gzipped; largest ConfigMap {} at {} bytes (limit 1,048,576)",
        configmap_bytes(&record),
        largest.0,
        largest.1
    );
    println!(
        "writes: {} record writes (each used to sign a CRL and write it to all {} trust ConfigMaps: {} writes); ConfigMap writes measured {}, etcd puts {}",
        record_writes,
        namespaces + 1,
        record_writes * (namespaces as u64 + 1),
        cm1 - cm0,
        match (puts0, puts1) {
            (Some(a), Some(b)) => format!("{}", b - a),
            _ => "n/a (no --etcd)".into(),
        }
    );
    println!("operator peak RSS {:.1} MiB", op.peak_rss_mib());
    for i in 0..namespaces {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(
                &run_name(&format!("bench-rev-{i}")),
                &DeleteParams::default(),
            )
            .await;
    }
}

#[tokio::main]
async fn main() {
    let a = args();
    let client = Client::try_default().await.expect("kubeconfig");
    let api = Api::<Namespace>::all(client.clone());
    if api.get_opt(OPERATOR_NS).await.ok().flatten().is_none() {
        fresh_namespace(&client, OPERATOR_NS).await;
    }
    let op = start_operator(&a.operator);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), OPERATOR_NS);
    let t = Instant::now();
    while secrets.get_opt("nhi-ca").await.ok().flatten().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the operator did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if a.loop_requests > 0 {
        revoke_loop(&client, &op, &a).await;
    }
    if a.identities > 0 {
        mass_deletion(&client, &op, &a).await;
    }
    drop(op);
}
