//! `make bench MODE=delegation`: children signed by the delegation endpoint over mTLS on
//! loopback, with no Kubernetes write on the path. One parent identity (its namespace's
//! IdentityPolicy allows delegation); its children's keys and requests are made beforehand (the
//! child's work, not the endpoint's). Measured in one run:
//!
//! - the signing floor: a child key generated and its certificate signed in this process, one
//!   at a time, with a CA of the same algorithm (what no endpoint can beat);
//! - steady load: requests sent at a fixed rate (open loop, default 200/s) over a pool of
//!   kept-alive connections, timed from the moment each was due to its signed certificate
//!   (waiting for a free connection counts);
//! - capacity: the same pool as fast as it goes (children/s).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use nhi_identity::delegate::child_key::ChildKey;
use nhi_identity::delegate::client::{Delegator, Task};
use nhi_operator::api::{CUSTOM_POLICY_LABEL, IdentityPolicy, MachineIdentity};
use serde_json::json;
use tokio::sync::Mutex;

use crate::{namespace, proc_stats, start_operator};

/// Connections kept open to the endpoint.
const CONNECTIONS: usize = 16;

/// What a run measured.
pub struct DelegationRun {
    pub floor: Vec<f64>,
    pub steady: Vec<f64>,
    pub steady_rate: f64,
    pub capacity: f64,
    pub peak_rss: u64,
}

/// The child's key generated and its certificate signed here, `n` times, in seconds each.
fn signing_floor(n: usize) -> Vec<f64> {
    use nhi_operator::ca::CertificateAuthority;
    let now = time::OffsetDateTime::now_utc();
    // The operator's own kind of root (ECDSA P-384).
    let material = CertificateAuthority::generate_root("bench floor", time::Duration::days(1), now)
        .expect("a CA");
    let ca = CertificateAuthority::from_material(&material, now).expect("a CA");
    let mut times: Vec<f64> = (0..n)
        .map(|i| {
            let t = Instant::now();
            let key = ChildKey::generate().expect("a key");
            let plan = nhi_core_plan(i, now);
            nhi_core::delegate::sign::sign_child(&ca, &plan, "bench", &pem_der(key.csr_pem()), now)
                .expect("signed");
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

fn pem_der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).expect("a CSR").into_contents()
}

fn nhi_core_plan(i: usize, now: time::OffsetDateTime) -> nhi_core::delegate::decide::ChildPlan {
    use nhi_identity::delegation::{Ancestor, Delegation};
    let parent = "spiffe://cluster.local/ns/bench/mi/agent";
    nhi_core::delegate::decide::ChildPlan {
        spiffe_id: format!("{parent}/task/t-{i}"),
        grants: Default::default(),
        attributes: Default::default(),
        not_after: now + time::Duration::minutes(5),
        delegation: Delegation {
            ancestors: vec![Ancestor {
                serial_hex: "7f01".into(),
                spiffe_id: parent.into(),
                attributes: Default::default(),
            }],
            task_id: format!("t-{i}"),
            purpose: String::new(),
            input_digest: None,
        },
    }
}

/// A pool of connections as the parent.
async fn pool(url: &str, dir: &Path) -> Arc<Vec<Mutex<Delegator>>> {
    let mut conns = vec![];
    for _ in 0..CONNECTIONS {
        conns.push(Mutex::new(
            Delegator::connect(url, dir).await.expect("a connection"),
        ));
    }
    Arc::new(conns)
}

/// Sends request `i` on the first free connection; returns when it is signed.
async fn send(pool: &[Mutex<Delegator>], i: usize, csr: &str) {
    let task = Task::new(&format!("t-{i}"), "bench");
    loop {
        for conn in pool.iter() {
            if let Ok(mut d) = conn.try_lock() {
                d.request(&task, csr).await.expect("a child");
                return;
            }
        }
        tokio::task::yield_now().await;
    }
}

/// The run: a parent with delegation, the floor, the steady load at `rate`, then capacity.
pub async fn delegation_run(client: &Client, operator: &str, n: usize, rate: f64) -> DelegationRun {
    let label = format!("bench-dlg-{:06x}", rand::random::<u32>() & 0xffffff);
    let ns = namespace(client, "bench-dlg", &[(CUSTOM_POLICY_LABEL, &label)]).await;
    let policy: IdentityPolicy = serde_json::from_value(json!({
        "apiVersion": "nhi.dev/v1alpha1", "kind": "IdentityPolicy",
        "metadata": {"name": label},
        "spec": {"namespaceSelector": {"matchLabels": {CUSTOM_POLICY_LABEL: label}},
                 "delegation": {"maxPerMinute": 6000}}}))
    .expect("the delegation policy");
    Api::<IdentityPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await
        .expect("create the delegation IdentityPolicy");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = start_operator(client, operator, &ns, 32, &["--delegation-addr", &addr]).await;
    let mis: Api<MachineIdentity> = Api::namespaced(client.clone(), &ns);
    let mi: MachineIdentity = serde_json::from_value(json!({
        "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
        "metadata": {"name": "agent"},
        "spec": {"owner": {"team": "bench"}, "secretName": "agent-identity",
                 "certificate": {"usages": ["client"]},
                 "delegation": {"maxPerMinute": 6000}}}))
    .expect("an identity");
    mis.create(&PostParams::default(), &mi)
        .await
        .expect("create the parent");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let dir = tempfile::tempdir().expect("a directory");
    let t = Instant::now();
    loop {
        if let Some(s) = secrets.get_opt("agent-identity").await.ok().flatten()
            && let Some(data) = s.data
            && ["tls.crt", "tls.key", "ca.crt"]
                .iter()
                .all(|k| data.contains_key(*k))
        {
            for k in ["tls.crt", "tls.key", "ca.crt"] {
                std::fs::write(dir.path().join(k), &data[k].0).expect("write");
            }
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the parent's Secret");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let url = format!("https://localhost:{port}");
    eprintln!("== signing floor: {n} child keys generated and signed in this process");
    let floor = tokio::task::spawn_blocking(move || signing_floor(n))
        .await
        .expect("floor");
    let csrs: Arc<Vec<String>> = Arc::new(
        tokio::task::spawn_blocking(move || {
            (0..2 * n + 1)
                .map(|_| ChildKey::generate().expect("a key").csr_pem().to_string())
                .collect()
        })
        .await
        .expect("keys"),
    );
    // The endpoint answers once the leader has loaded its revocation record.
    let t = Instant::now();
    loop {
        let mut d = Delegator::connect(&url, dir.path())
            .await
            .expect("a connection");
        match d.request(&Task::new("warm-up", ""), &csrs[2 * n]).await {
            Ok(_) => break,
            Err(e) => {
                assert!(t.elapsed() < Duration::from_secs(30), "the endpoint: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let conns = pool(&url, dir.path()).await;
    eprintln!("== steady load: {n} requests at {rate}/s over {CONNECTIONS} connections");
    let start = Instant::now();
    let mut tasks = vec![];
    for i in 0..n {
        let (conns, csrs) = (conns.clone(), csrs.clone());
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            send(&conns, i, &csrs[i]).await;
            due.elapsed().as_secs_f64()
        }));
    }
    let mut steady = vec![];
    for t in tasks {
        steady.push(t.await.expect("a request"));
    }
    let steady_rate = n as f64 / start.elapsed().as_secs_f64();
    steady.sort_by(f64::total_cmp);
    eprintln!("== capacity: {n} requests as fast as {CONNECTIONS} connections go");
    let start = Instant::now();
    let mut tasks = vec![];
    for c in 0..CONNECTIONS {
        let (conns, csrs) = (conns.clone(), csrs.clone());
        tasks.push(tokio::spawn(async move {
            let mut d = conns[c].lock().await;
            for i in (n + c..2 * n).step_by(CONNECTIONS) {
                let task = Task::new(&format!("t-{i}"), "bench");
                d.request(&task, &csrs[i]).await.expect("a child");
            }
        }));
    }
    for t in tasks {
        t.await.expect("a worker");
    }
    let capacity = n as f64 / start.elapsed().as_secs_f64();
    let peak_rss = proc_stats(child.id()).0;
    let _ = child.kill();
    let _ = child.wait();
    DelegationRun {
        floor,
        steady,
        steady_rate,
        capacity,
        peak_rss,
    }
}
