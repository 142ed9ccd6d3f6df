//! Test harness for the end-to-end tests: a client for the local control plane, a namespace per
//! test, and the operator binary run as a real process.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use nhi_operator::api::{Entitlement, MachineIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::tenant_setup::{E2E_POLICY, ensure_tenant_policy};

/// `$KUBECONFIG`, else the admin kubeconfig of the local control plane in `$NHI_CLUSTER_DIR`
/// (`make test` runs on e2e/.cluster-test), else of the default one, e2e/.cluster.
pub fn kubeconfig_path() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECONFIG") {
        return PathBuf::from(path);
    }
    let cluster_dir = std::env::var_os("NHI_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("e2e/.cluster"));
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(cluster_dir)
        .join("kubeconfig")
}

/// The local control plane's audit log (writes only, metadata only: who wrote what, when), next
/// to its kubeconfig.
pub fn audit_log_path() -> PathBuf {
    kubeconfig_path().with_file_name("audit.log")
}

/// The writes in namespace `namespace` the apiserver received from a client whose user agent
/// contains `agent` at or after `since`, as `verb resource/name` (the audit log is written
/// before each response is sent).
pub fn audited_writes(agent: &str, namespace: &str, since: time::OffsetDateTime) -> Vec<String> {
    let path = audit_log_path();
    let mut text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the control plane's audit log {}: {e}", path.display()));
    // And the files it was rotated into (audit-<time>.log).
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("audit-") && name.ends_with(".log") {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["userAgent"].as_str().is_some_and(|a| a.contains(agent)))
        .filter(|e| e["objectRef"]["namespace"] == namespace)
        .filter(|e| {
            e["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .is_some_and(|t| t >= since)
        })
        .map(|e| {
            format!(
                "{} {}/{}",
                e["verb"].as_str().unwrap_or_default(),
                e["objectRef"]["resource"].as_str().unwrap_or_default(),
                e["objectRef"]["name"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

/// The kubeconfig the operator process runs with: `NHI_E2E_OPERATOR_KUBECONFIG` (for example a
/// token of the Helm chart's ServiceAccount, to prove its RBAC suffices), else the tests' own.
pub fn operator_kubeconfig_path() -> PathBuf {
    std::env::var_os("NHI_E2E_OPERATOR_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(kubeconfig_path)
}

/// A client for the local control plane. Panics with a hint when it is not running.
pub async fn client() -> Client {
    let path = kubeconfig_path();
    let kc = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
        panic!(
            "no kubeconfig at {} ({e}); start the control plane with `make cluster-up`",
            path.display()
        )
    });
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is usable");
    Client::try_from(cfg).expect("client")
}

/// A namespace of its own for one test, deleted when dropped (also when the test fails).
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// A namespace governed by the IdentityPolicy `nhi-e2e` (what the tests ask for), under the
    /// admission policies.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let labels = [("nhi.dev/identity-policy", E2E_POLICY)];
        Self::create_labelled(client, prefix, &labels).await
    }

    /// A namespace with `labels` (none: governed by the chart's default policy, `nhi-default`).
    pub async fn create_labelled(client: &Client, prefix: &str, labels: &[(&str, &str)]) -> Self {
        ensure_tenant_policy(client).await;
        let name = format!("e2e-{prefix}-{:06x}", rand::random::<u32>() & 0xffffff);
        let api: Api<Namespace> = Api::all(client.clone());
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
        api.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        TestNamespace {
            name,
            client: client.clone(),
        }
    }

    /// An `Api` of a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

/// Deletes a test's namespace. The test's operator stops with the test: identities still
/// holding the revoking finalizer would keep the namespace terminating forever, so it is removed
/// first.
async fn delete_namespace(client: &Client, name: &str) {
    let identities: Api<MachineIdentity> = Api::namespaced(client.clone(), name);
    if let Ok(list) = identities.list(&Default::default()).await {
        for mi in list.items {
            let mi_name = mi.metadata.name.unwrap_or_default();
            let _ = identities
                .patch(
                    &mi_name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
}

/// Runs a clean-up from a `Drop`: Drop cannot await, and a failing test unwinds through its
/// runtime, so `cleanup` runs on a thread with a runtime and a client of its own, and is waited
/// for.
pub fn clean_up_from_drop<F, Fut>(cleanup: F)
where
    F: FnOnce(Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for a test's clean-up");
        runtime.block_on(async { cleanup(client().await).await });
    })
    .join();
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.name);
        clean_up_from_drop(move |client| async move { delete_namespace(&client, &name).await });
    }
}

/// A namespace of its own with the operator running in it (scoped to it, its CA Secret there
/// too) and ready: what most tests start from. Dropping it stops the operator, then deletes the
/// namespace.
pub struct OperatorNamespace {
    /// The operator (declared first: it is stopped before the namespace goes).
    pub op: Operator,
    pub client: Client,
    /// The namespace's name.
    pub ns: String,
    namespace: TestNamespace,
}

impl OperatorNamespace {
    /// Creates a namespace `e2e-<prefix>-...` and starts the operator in it with `extra` flags.
    pub async fn start(prefix: &str, extra: &[&str]) -> Self {
        let client = client().await;
        Self::start_in(TestNamespace::create(&client, prefix).await, extra).await
    }

    /// Starts the operator in a namespace the test has prepared.
    pub async fn start_in(namespace: TestNamespace, extra: &[&str]) -> Self {
        Self::start_in_as(namespace, extra, operator_kubeconfig_path()).await
    }

    /// Like [`OperatorNamespace::start_in`], the operator authenticated by `kubeconfig`.
    pub async fn start_in_as(
        namespace: TestNamespace,
        extra: &[&str],
        kubeconfig: PathBuf,
    ) -> Self {
        let op = Operator::start_as(&namespace.name, extra, kubeconfig);
        op.wait_ready(Duration::from_secs(20)).await;
        OperatorNamespace {
            op,
            client: namespace.client.clone(),
            ns: namespace.name.clone(),
            namespace,
        }
    }

    /// An `Api` of a namespaced kind in the test's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        self.namespace.api()
    }

    /// The MachineIdentities of the test's namespace.
    pub fn identities(&self) -> Api<MachineIdentity> {
        self.api()
    }

    /// The Entitlements of the test's namespace.
    pub fn entitlements(&self) -> Api<Entitlement> {
        self.api()
    }

    /// The Secrets of the test's namespace.
    pub fn secrets(&self) -> Api<Secret> {
        self.api()
    }

    /// Creates a MachineIdentity from a JSON spec.
    pub async fn create_identity(&self, name: &str, spec: serde_json::Value) {
        self.identities()
            .create(&PostParams::default(), &identity(name, spec))
            .await
            .unwrap_or_else(|e| panic!("create MachineIdentity {name}: {e}"));
    }

    /// Creates an Entitlement from a JSON spec.
    pub async fn create_entitlement(&self, name: &str, spec: serde_json::Value) {
        self.entitlements()
            .create(&PostParams::default(), &entitlement(name, spec))
            .await
            .unwrap_or_else(|e| panic!("create Entitlement {name}: {e}"));
    }
}

/// The operator binary running as a child process, killed on drop.
pub struct Operator {
    child: Option<Child>,
    pub http: SocketAddr,
    pub log: PathBuf,
    args: Vec<String>,
    pod_name: Option<String>,
    kubeconfig: PathBuf,
}

impl Operator {
    /// Starts the operator scoped to `namespace` (its CA Secret lives there too).
    pub fn start(namespace: &str, extra: &[&str]) -> Operator {
        Self::start_named(namespace, extra, None)
    }

    /// Like [`Operator::start`], authenticated by `kubeconfig`.
    pub fn start_as(namespace: &str, extra: &[&str], kubeconfig: PathBuf) -> Operator {
        Self::start_with(namespace, namespace, extra, None, kubeconfig)
    }

    /// Like [`Operator::start`], with `POD_NAME` set (the leader-election identity) and its own log.
    pub fn start_named(namespace: &str, extra: &[&str], pod_name: Option<&str>) -> Operator {
        Self::start_named_in(namespace, namespace, extra, pod_name)
    }

    /// Like [`Operator::start_named`], with the operator's own namespace (its CA Secret,
    /// revocation record and leader-election Lease) `home` rather than the watched one.
    pub fn start_named_in(
        namespace: &str,
        home: &str,
        extra: &[&str],
        pod_name: Option<&str>,
    ) -> Operator {
        Self::start_with(namespace, home, extra, pod_name, operator_kubeconfig_path())
    }

    fn start_with(
        namespace: &str,
        home: &str,
        extra: &[&str],
        pod_name: Option<&str>,
        kubeconfig: PathBuf,
    ) -> Operator {
        let http = free_port();
        let mut args: Vec<String> = vec![
            "run".into(),
            "--watch-namespace".into(),
            namespace.into(),
            "--operator-namespace".into(),
            home.into(),
            "--http-addr".into(),
            http.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/e2e-logs");
        std::fs::create_dir_all(&dir).expect("log dir");
        let log = match pod_name {
            Some(p) => dir.join(format!("{namespace}-{p}.log")),
            None => dir.join(format!("{namespace}.log")),
        };
        let mut op = Operator {
            child: None,
            http,
            log,
            args,
            pod_name: pod_name.map(str::to_string),
            kubeconfig,
        };
        op.spawn();
        op
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nhi-operator"));
        if let Some(p) = &self.pod_name {
            cmd.env("POD_NAME", p);
        }
        // Standard output carries the delegation audit lines only.
        let audit = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log.with_extension("audit"))
            .expect("audit file");
        let child = cmd
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "warn,nhi_operator=debug")
            .stdout(Stdio::from(audit))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start nhi-operator");
        self.child = Some(child);
    }

    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM (what Kubernetes sends) and waits up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Sends `signal` (such as `STOP` or `CONT`) to the process.
    pub fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            let status = Command::new("kill")
                .args([format!("-{signal}"), c.id().to_string()])
                .status();
            assert!(status.is_ok_and(|s| s.success()), "kill -{signal}");
        }
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the same process again after [`Operator::kill`].
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// GETs a path from the operator's HTTP server: (status code, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http, path).await
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some((200, _)) = self.get("/readyz").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "operator not ready within {timeout:?}; log:\n{}",
            self.log_tail()
        );
    }

    /// The delegation audit lines the operator wrote on its standard output, parsed.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.log.with_extension("audit"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .collect()
    }

    /// The last lines of the operator's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The reconciles `controller` has begun and ended so far, from the operator's `/metrics`
    /// (each test runs its own operator, so they are the test's alone).
    pub async fn reconciles(&self, controller: Controller) -> Reconciles {
        let metrics = wait_for(
            Duration::from_secs(10),
            "the operator's /metrics",
            || async {
                self.get("/metrics")
                    .await
                    .filter(|(code, _)| *code == 200)
                    .map(|(_, body)| body)
            },
        )
        .await;
        let count = |metric: &str| {
            let series = format!("{metric}{{controller=\"{}\"}} ", controller.label());
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(&series))
                .map_or(0, |v| v.trim().parse().expect("a counter's value"))
        };
        Reconciles {
            started: count("nhi_reconciles_started_total"),
            finished: count("nhi_reconciles_total"),
        }
    }

    /// Waits until `controller` is idle: every reconcile it began has ended, and none began or
    /// ended for half a second. The reconciles the operator's own writes trigger are over then.
    /// Returns the counts at rest.
    pub async fn settle(&self, controller: Controller) -> Reconciles {
        const QUIET: Duration = Duration::from_millis(500);
        let start = Instant::now();
        let mut last = self.reconciles(controller).await;
        let mut since = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = self.reconciles(controller).await;
            if now != last || now.started != now.finished {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= QUIET {
                return now;
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!(
                    "the {} controller did not come to rest within 30 s ({now:?}); log:\n{}",
                    controller.label(),
                    self.log_tail()
                );
            }
        }
    }

    /// Waits until `controller` has ended a reconcile that began after `before` was read, then
    /// until it is idle ([`Operator::settle`]): the positive sign that the operator has looked at
    /// a change made after reading `before`, and finished whatever that look started.
    pub async fn wait_reconciled_since(&self, controller: Controller, before: Reconciles) {
        // More ended than had begun at `before`: at least one of them began after it.
        wait_for(
            Duration::from_secs(20),
            &format!(
                "a {} reconcile begun after {before:?} to end",
                controller.label()
            ),
            || async {
                (self.reconciles(controller).await.finished > before.started).then_some(())
            },
        )
        .await;
        self.settle(controller).await;
    }
}

/// The operator's controllers, as its reconcile counters name them.
#[derive(Clone, Copy, Debug)]
pub enum Controller {
    Identities,
    Entitlements,
}

impl Controller {
    fn label(self) -> &'static str {
        match self {
            Controller::Identities => "machineidentity",
            Controller::Entitlements => "entitlement",
        }
    }
}

/// How many reconciles a controller had begun and ended when its counters were read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reconciles {
    pub started: u64,
    pub finished: u64,
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A minimal HTTP/1.0 GET over loopback.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Polls `f` every 50 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A MachineIdentity from a JSON spec.
pub fn identity(name: &str, spec: serde_json::Value) -> MachineIdentity {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "nhi.dev/v1alpha1",
        "kind": "MachineIdentity",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("valid MachineIdentity JSON")
}

/// An Entitlement from a JSON spec.
pub fn entitlement(name: &str, spec: serde_json::Value) -> nhi_operator::api::Entitlement {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "nhi.dev/v1alpha1",
        "kind": "Entitlement",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("valid Entitlement JSON")
}

/// Waits until the Entitlement `name` has a condition of `type_` for which `holds` is true;
/// returns that condition and the status.
pub async fn wait_for_entitlement_condition(
    api: &Api<nhi_operator::api::Entitlement>,
    name: &str,
    type_: &str,
    timeout: Duration,
    holds: impl Fn(&nhi_operator::api::Condition) -> bool,
) -> (
    nhi_operator::api::Condition,
    nhi_operator::api::EntitlementStatus,
) {
    let what = format!("Entitlement {name}: a {type_} condition as expected");
    wait_for(timeout, &what, || async {
        let status = api.get(name).await.ok()?.status?;
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && holds(c))?
            .clone();
        Some((c, status))
    })
    .await
}

/// Waits until the Entitlement controller has seen the Entitlement `name` as it is now (its
/// `status.observedGeneration` is its generation); returns it.
pub async fn wait_for_entitlement_observed(
    api: &Api<Entitlement>,
    name: &str,
    timeout: Duration,
) -> Entitlement {
    let what = format!("Entitlement {name}: status.observedGeneration at its generation");
    wait_for(timeout, &what, || async {
        let e = api.get(name).await.ok()?;
        let observed = e.status.as_ref()?.observed_generation;
        (observed.is_some() && observed == e.metadata.generation).then_some(e)
    })
    .await
}

/// Creates a `kind` (plural `plural`) of group nhi.dev from raw JSON, so that invalid values
/// reach the apiserver, and returns its 422 rejection message.
pub async fn rejected(
    client: &Client,
    ns: &str,
    (kind, plural): (&str, &str),
    name: &str,
    spec: serde_json::Value,
) -> String {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nhi.dev", "v1alpha1", kind),
        plural,
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let obj: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "nhi.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name}, "spec": spec,
    }))
    .expect("valid JSON object");
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => panic!("{name}: the apiserver accepted an invalid {kind}"),
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{name}: {}", s.message);
            s.message
        }
        Err(e) => panic!("{name}: unexpected error {e}"),
    }
}

/// Whether the identity's Ready condition is True.
pub fn is_ready(mi: &MachineIdentity) -> bool {
    condition(mi, "Ready").is_some_and(|c| c.status == "True")
}

/// A condition of the identity by type.
pub fn condition<'a>(
    mi: &'a MachineIdentity,
    type_: &str,
) -> Option<&'a nhi_operator::api::Condition> {
    mi.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// Waits for the identity to be Ready and returns it.
pub async fn wait_ready(
    api: &Api<MachineIdentity>,
    name: &str,
    timeout: Duration,
) -> MachineIdentity {
    wait_for(
        timeout,
        &format!("MachineIdentity {name} Ready"),
        || async { api.get_opt(name).await.ok().flatten().filter(is_ready) },
    )
    .await
}

/// A data key of a Secret as text.
/// A key of a Secret, as text. Every private key read this way must load in OpenSSL 3.0 (the
/// library under nginx, PostgreSQL, curl, Python): each key the suite sees is checked.
pub fn secret_text(secret: &Secret, key: &str) -> String {
    let text = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default();
    if text.contains("PRIVATE KEY-----") {
        assert_openssl_reads_key(&text, key);
    }
    text
}

/// `openssl pkey` reads the private key in `pem` (the first, when it also holds certificates).
pub fn assert_openssl_reads_key(pem: &str, what: &str) {
    use std::io::Write;
    let mut child = Command::new("openssl")
        .args(["pkey", "-noout"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "OpenSSL cannot read the private key in {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The serial the operator recorded on an identity Secret (`nhi.dev/serial`).
pub fn serial_of(secret: &Secret) -> Option<String> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(nhi_operator::labels::SERIAL)
        .cloned()
}

/// Waits until the Secret `name` holds a certificate other than serial `old`, in valid PEM.
pub async fn wait_for_reissue(
    secrets: &Api<Secret>,
    name: &str,
    old: &str,
    timeout: Duration,
    what: &str,
) -> Secret {
    wait_for(timeout, what, || async {
        let s = secrets.get(name).await.ok()?;
        let fresh = serial_of(&s).is_some_and(|serial| serial != old);
        let pem = nhi_identity::pem_chain::pem_certificates(&secret_text(&s, "tls.crt"));
        (fresh && pem.is_ok()).then_some(s)
    })
    .await
}

/// The kubectl to use (the one built for the control plane's version when available).
pub fn kubectl() -> Command {
    let bin = std::env::var("NHI_E2E_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let mut c = Command::new(bin);
    // A discovery cache of this test process only: one made before the CRDs were installed
    // would hide them.
    let cache = std::env::temp_dir().join(format!("nhi-e2e-kubectl-{}", std::process::id()));
    c.env("KUBECONFIG", kubeconfig_path())
        .env("KUBECACHEDIR", cache);
    c
}

/// The serials (lowercase hex) on a PEM CRL; during a CA rotation `crl.pem` holds one CRL per CA,
/// and the serials of all of them are returned.
pub fn crl_serials(pem_text: &str) -> Vec<String> {
    use x509_parser::prelude::FromDer;
    let blocks = pem::parse_many(pem_text).expect("PEM CRLs");
    assert!(!blocks.is_empty(), "no CRL in {pem_text:?}");
    let mut serials = vec![];
    for block in blocks {
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(block.contents())
                .expect("a parseable CRL");
        serials.extend(
            crl.iter_revoked_certificates()
                .map(|r| hex::encode(r.raw_serial())),
        );
    }
    serials.sort();
    serials.dedup();
    serials
}

/// The `nhi-trust` ConfigMap of `ns`: its `ca.crt` and `crl.pem`, when it exists.
pub async fn trust_documents(client: &Client, ns: &str) -> Option<(String, String)> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = api.get_opt("nhi-trust").await.ok()??;
    let data = cm.data?;
    Some((data.get("ca.crt")?.clone(), data.get("crl.pem")?.clone()))
}

/// Waits until `serial` is on the CRL of `ns`'s `nhi-trust` ConfigMap; returns how long it took.
pub async fn wait_for_revoked(
    client: &Client,
    ns: &str,
    serial: &str,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    wait_for(
        timeout,
        &format!("serial {serial} on the CRL in {ns}/nhi-trust"),
        || async {
            let (_, crl) = trust_documents(client, ns).await?;
            crl_serials(&crl).iter().any(|s| s == serial).then_some(())
        },
    )
    .await;
    start.elapsed()
}

/// The Events about the object `name` in `ns`, as (reason, message).
pub async fn events_for(client: &Client, ns: &str, name: &str) -> Vec<(String, String)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let list = api.list(&Default::default()).await.expect("list Events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Waits for an Event with `reason` about `name`; returns its message.
pub async fn wait_for_event(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
    timeout: Duration,
) -> String {
    wait_for(
        timeout,
        &format!("a {reason} Event about {name}"),
        || async {
            events_for(client, ns, name)
                .await
                .into_iter()
                .find(|(r, _)| r == reason)
                .map(|(_, m)| m)
        },
    )
    .await
}

/// Today plus `days`, as YYYY-MM-DD (UTC, the calendar review dates are kept in).
pub fn today_plus(days: i64) -> String {
    let d = time::OffsetDateTime::now_utc().date() + time::Duration::days(days);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// A Deployment for a workloadRef to name (no pods run: there is no kubelet).
pub fn deployment_object(name: &str) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "example.invalid/app:1"}]}}
        }
    }))
    .expect("a valid Deployment")
}

/// An example program, built by `cargo build --example <name>` (or at the path in `env_var`).
pub fn example_binary(name: &str, env_var: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env_var) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(std::path::Path::parent).unwrap();
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --example {name}`",
        bin.display()
    );
    bin
}

/// A child process killed when the test ends, however it ends.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `nhi-operator agent` keeping `dir` current from the Secret `namespace/secret`.
pub fn start_agent(
    namespace: &str,
    secret: &str,
    dir: &std::path::Path,
    extra: &[&str],
) -> KillOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_nhi-operator"))
        .args([
            "agent",
            "--namespace",
            namespace,
            "--secret",
            secret,
            "--dir",
        ])
        .arg(dir)
        .args(extra)
        .env("KUBECONFIG", kubeconfig_path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the agent starts");
    KillOnDrop(child)
}
