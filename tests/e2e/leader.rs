//! High availability: two operators with leader election; the leader dies (or is paused past its
//! Lease and resumed) during a burst of 200 issuances; the standby takes over; every identity
//! ends Ready with exactly one certificate.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::support::*;
use nhi_operator::api::MachineIdentity;

const N: usize = 200;

/// The holder of the operator's Lease, if it exists and is held.
async fn lease_holder(leases: &Api<Lease>) -> Option<String> {
    let lease = leases.get_opt("nhi-operator").await.ok().flatten()?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Waits until `who` holds the operator's Lease.
async fn wait_for_holder(leases: &Api<Lease>, who: &str, timeout: Duration, what: &str) {
    wait_for(timeout, what, || async {
        (lease_holder(leases).await.as_deref() == Some(who)).then_some(())
    })
    .await
}

/// How the leader is taken out mid-burst.
#[derive(Clone, Copy, PartialEq)]
enum Disruption {
    /// `kill -9`.
    Kill,
    /// SIGSTOP until the standby holds the Lease, then SIGCONT: the old leader resumes with
    /// its in-flight work, and must write nothing of it.
    Pause,
}

#[tokio::test]
async fn the_standby_takes_over_a_burst_without_issuing_twice() {
    handover_during_a_burst("leader", Disruption::Kill).await;
}

#[tokio::test]
async fn a_paused_leader_resumes_fenced_and_nothing_is_issued_twice() {
    handover_during_a_burst("paused", Disruption::Pause).await;
}

/// Two replicas, a burst of N issuances, the leader taken out mid-burst by `disruption`: the
/// standby takes over, every identity ends Ready with exactly one certificate ever written.
async fn handover_during_a_burst(prefix: &str, disruption: Disruption) {
    let client = client().await;
    let ns = TestNamespace::create(&client, prefix).await;
    let flags = [
        "--leader-elect",
        "--lease-duration",
        "6s",
        "--renew-deadline",
        "4s",
        "--retry-period",
        "1s",
    ];
    let mut a = Operator::start_named(&ns.name, &flags, Some("op-a"));
    let mut b = Operator::start_named(&ns.name, &flags, Some("op-b"));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let first = wait_for(Duration::from_secs(20), "a leader", || {
        lease_holder(&leases)
    })
    .await;
    a.wait_ready(Duration::from_secs(20)).await;
    b.wait_ready(Duration::from_secs(20)).await;

    // Every serial ever written to each identity Secret.
    let serials: Arc<Mutex<HashMap<String, HashSet<String>>>> = Arc::default();
    let seen = serials.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let watch = tokio::spawn(
        watcher(
            secrets,
            watcher::Config::default().labels("nhi.dev/identity"),
        )
        .applied_objects()
        .try_for_each(move |s: Secret| {
            let seen = seen.clone();
            async move {
                if let Some(serial) = serial_of(&s) {
                    let name = s.metadata.name.clone().unwrap_or_default();
                    seen.lock()
                        .unwrap()
                        .entry(name)
                        .or_default()
                        .insert(serial.clone());
                }
                Ok(())
            }
        }),
    );

    let api: Api<MachineIdentity> = Api::namespaced(client.clone(), &ns.name);
    let creator = api.clone();
    let burst = tokio::spawn(async move {
        futures::stream::iter(0..N)
            .for_each_concurrent(16, |i| {
                let api = creator.clone();
                async move {
                    let mi = identity(
                        &format!("ha{i}"),
                        json!({"owner": {"team": "t"}, "secretName": format!("ha{i}-id")}),
                    );
                    api.create(&PostParams::default(), &mi).await.unwrap();
                }
            })
            .await;
    });
    // Kill the leader mid-burst.
    wait_for(
        Duration::from_secs(30),
        "some identities issued",
        || async { (serials.lock().unwrap().len() >= 20).then_some(()) },
    )
    .await;
    let killed = Instant::now();
    let (survivor, survivor_op, leader_op) = match first.as_str() {
        "op-a" => ("op-b", &b, &mut a),
        _ => ("op-a", &a, &mut b),
    };
    match disruption {
        Disruption::Kill => leader_op.kill(),
        Disruption::Pause => leader_op.signal("STOP"),
    }
    let issued_before_kill = serials.lock().unwrap().len();
    assert!(
        issued_before_kill < N,
        "the burst finished before the leader was killed"
    );
    // The survivor, a standby until the Lease runs out, serves the trust documents the leader
    // published (the chart's Service selects every replica). Checked after the kill: checking
    // before it gave the burst time to finish.
    {
        let ok = |r: Option<(u16, String)>| r.filter(|(c, _)| *c == 200).map(|(_, body)| body);
        let (published_ca, _) = wait_for(
            Duration::from_secs(10),
            "the published trust documents",
            || trust_documents(&client, &ns.name),
        )
        .await;
        let standby_ca = wait_for(Duration::from_secs(10), "the standby's /ca.pem", || async {
            ok(survivor_op.get("/ca.pem").await)
        })
        .await;
        assert_eq!(standby_ca, published_ca);
        let crl = ok(survivor_op.get("/crl.pem").await).expect("the standby serves /crl.pem");
        assert!(crl.contains("BEGIN X509 CRL"));
    }
    if disruption == Disruption::Pause {
        // Resumed once the standby leads: the old leader finds its Lease past the deadline and
        // stops, and whatever it had begun is refused by the fence before it is written.
        wait_for_holder(&leases, survivor, Duration::from_secs(30), "the takeover").await;
        let resumed_at = time::OffsetDateTime::now_utc();
        leader_op.signal("CONT");
        wait_for(
            Duration::from_secs(15),
            "the resumed leader to stop",
            || std::future::ready((!leader_op.alive()).then_some(())),
        )
        .await;
        let log = leader_op.log_text();
        assert!(
            log.contains("could not renew the Lease within the deadline")
                || log.contains("another replica took the Lease"),
            "the resumed leader stopped for its Lease:\n{}",
            leader_op.log_tail()
        );
        // What it sent before the pause was received before it resumed: anything later was
        // written after it lost the Lease.
        let leader_name = if survivor == "op-a" { "op-b" } else { "op-a" };
        let agent = format!("({leader_name})");
        let all = audited_writes(&agent, &ns.name, time::OffsetDateTime::UNIX_EPOCH);
        assert!(!all.is_empty(), "the audit log names the leader's writes");
        // Its Lease client is not fenced (a renewal that was under way at the pause may land,
        // and is refused by the apiserver as stale): everything else is.
        let late: Vec<String> = audited_writes(&agent, &ns.name, resumed_at)
            .into_iter()
            .filter(|w| !w.contains(" leases/"))
            .collect();
        assert!(late.is_empty(), "the resumed leader wrote: {late:?}");
        eprintln!(
            "paused leader: {} writes refused by the fence after it resumed, none received",
            log.matches("write refused by the fence").count()
        );
    }
    burst.await.expect("every identity created");

    wait_for(
        Duration::from_secs(90),
        "every identity Ready after the handover",
        || async {
            let list = api.list(&Default::default()).await.ok()?;
            (list.items.len() == N && list.items.iter().all(is_ready)).then_some(())
        },
    )
    .await;
    eprintln!(
        "handover: all {N} Ready {:?} after killing the leader ({issued_before_kill} issued before)",
        killed.elapsed()
    );
    assert_eq!(lease_holder(&leases).await.as_deref(), Some(survivor));
    let lease = leases.get("nhi-operator").await.unwrap();
    assert!(lease.spec.unwrap().lease_transitions.unwrap_or(0) >= 1);

    // The survivor has ended every reconcile it began, and the watch has seen the certificate
    // each identity's status names: a second issuance would be in the watch's record by now.
    survivor_op.settle(Controller::Identities).await;
    wait_for(
        Duration::from_secs(10),
        "the Secret watch to catch up with every identity's status",
        || async {
            let list = api.list(&Default::default()).await.ok()?;
            let seen = serials.lock().unwrap().clone();
            list.items
                .iter()
                .all(|mi| {
                    let serial = mi.status.as_ref().and_then(|s| s.serial_number.as_ref());
                    seen.get(&mi.spec.secret_name)
                        .is_some_and(|s| serial.is_some_and(|serial| s.contains(serial)))
                })
                .then_some(())
        },
    )
    .await;
    watch.abort();
    let serials = serials.lock().unwrap().clone();
    assert_eq!(serials.len(), N, "every identity Secret was written");
    let twice: Vec<_> = serials
        .iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(n, _)| n.clone())
        .collect();
    assert!(
        twice.is_empty(),
        "issued twice across the handover: {twice:?}"
    );
    // Each identity's status names the certificate in its Secret.
    for mi in api.list(&Default::default()).await.unwrap() {
        let secret_serial = serials
            .get(&mi.spec.secret_name)
            .and_then(|s| s.iter().next().cloned());
        assert_eq!(mi.status.and_then(|s| s.serial_number), secret_serial);
    }
}

/// Where the operators of [`a_leader_stopped_with_sigterm_hands_over_at_once`] keep their Lease
/// (and CA Secret): the test's namespace, or `NHI_E2E_LEASE_NAMESPACE` in the chart-RBAC run
/// (e2e/test-chart-rbac.sh), whose ServiceAccount may hold one Lease, in its release namespace.
/// One test at a time can use that Lease: the other leader test keeps its own namespace.
fn lease_namespace(test_namespace: &str) -> String {
    std::env::var("NHI_E2E_LEASE_NAMESPACE").unwrap_or_else(|_| test_namespace.to_string())
}

#[tokio::test]
async fn a_leader_stopped_with_sigterm_hands_over_at_once() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "release").await;
    let home = lease_namespace(&ns.name);
    // A long lease: only a released Lease is taken over within the test's bound.
    let flags = [
        "--leader-elect",
        "--lease-duration",
        "30s",
        "--renew-deadline",
        "20s",
    ];
    let mut a = Operator::start_named_in(&ns.name, &home, &flags, Some("op-a"));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &home);
    wait_for_holder(&leases, "op-a", Duration::from_secs(20), "op-a leads").await;
    let b = Operator::start_named_in(&ns.name, &home, &flags, Some("op-b"));
    b.wait_ready(Duration::from_secs(20)).await;

    let stopped = Instant::now();
    let status = a.terminate(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "op-a did not exit cleanly on SIGTERM: {status:?}\n{}",
        a.log_tail()
    );
    wait_for_holder(
        &leases,
        "op-b",
        Duration::from_secs(10),
        "op-b takes the released Lease",
    )
    .await;
    eprintln!(
        "released Lease taken over {:?} after SIGTERM",
        stopped.elapsed()
    );

    // The new leader issues.
    let api: Api<MachineIdentity> = Api::namespaced(client.clone(), &ns.name);
    let mi = identity(
        "after",
        json!({"owner": {"team": "t"}, "secretName": "after-id"}),
    );
    api.create(&PostParams::default(), &mi).await.unwrap();
    wait_ready(&api, "after", Duration::from_secs(10)).await;
}
