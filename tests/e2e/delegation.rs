//! Delegated task identities end to end: a parent mints a task identity over the operator's
//! mTLS endpoint (the child's key made by the child), the relying service authorizes the task as
//! itself, every escalation is refused with its reason, the budget holds, and revoking the parent
//! ends every descendant at the relying service.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use time::OffsetDateTime;

use crate::relying::*;
use crate::support::*;
use nhi_identity::delegate::child_key::ChildKey;
use nhi_identity::delegate::client::{DelegateError, Delegator, Task};
use nhi_operator::api::MachineIdentity;
use nhi_operator::verify::{
    Purpose, Revocation, TrustBundle, certificates_from_pem, verify_identity_or_task,
};

/// The operator's endpoint, as a client dials it.
pub fn endpoint(addr: std::net::SocketAddr) -> String {
    format!("https://localhost:{}", addr.port())
}

/// Waits for the identity's Secret to carry `grants`, and projects it into `dir`.
pub async fn identity_dir(env: &OperatorNamespace, secret: &str, grants: &[&str], dir: &Path) {
    let secrets = env.secrets();
    let s: Secret = wait_for(Duration::from_secs(20), "the identity's grants", || async {
        let s = secrets.get_opt(secret).await.ok().flatten()?;
        let chain = certificates_from_pem(&secret_text(&s, "tls.crt")).ok()?;
        let trust = TrustBundle::from_pem(&secret_text(&s, "ca.crt")).ok()?;
        let now = OffsetDateTime::now_utc();
        // A server identity (no client usage) verifies as one.
        let v = [Purpose::Client, Purpose::Server]
            .into_iter()
            .find_map(|purpose| {
                verify_identity_or_task(&chain, &trust, Revocation::NotChecked, purpose, now).ok()
            })?;
        grants.iter().all(|g| v.has_grant(g)).then_some(s)
    })
    .await;
    project(&s, dir);
}

/// Runs `nhi-operator delegate ...`; returns the exit code, standard output and error.
fn delegate_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nhi-operator"))
        .arg("delegate")
        .args(args)
        .output()
        .expect("nhi-operator delegate runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The reason of a refusal (panics on a child).
pub fn reason(r: Result<nhi_identity::delegate::client::Child, DelegateError>) -> (String, String) {
    match r {
        Err(DelegateError::Refused {
            reason, message, ..
        }) => (reason, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Asks for a child from `parent_dir`, retrying while the operator is not ready yet.
pub async fn first_child(
    addr: &str,
    parent_dir: &Path,
    task: &Task,
) -> nhi_identity::delegate::client::Child {
    let key = ChildKey::generate().unwrap();
    wait_for(
        Duration::from_secs(20),
        "the endpoint's first answer",
        || async {
            let mut d = Delegator::connect(addr, parent_dir).await.ok()?;
            match d.request(task, key.csr_pem()).await {
                Ok(child) => Some(child),
                Err(DelegateError::Refused { reason, .. }) if reason == "NotReady" => None,
                Err(e) => panic!("the first delegation: {e}"),
            }
        },
    )
    .await
}

/// Publishes the namespace's CRL into `file`, as kubelet updates a mounted `crl.pem`.
async fn publish_crl(client: &kube::Client, ns: &str, file: &Path) -> Option<()> {
    let (_, crl) = trust_documents(client, ns).await?;
    let tmp = file.with_extension("tmp");
    std::fs::write(&tmp, crl).unwrap();
    std::fs::rename(&tmp, file).unwrap();
    Some(())
}

#[tokio::test]
async fn a_task_holds_what_its_parent_delegated_and_dies_with_it() {
    let addr = free_port();
    let env = OperatorNamespace::start(
        "dlg",
        &["--delegation-addr", &addr.to_string(), "--min-ttl", "10s"],
    )
    .await;
    let ns = env.ns.clone();
    let server_name = format!("refunds-api.{ns}.svc");
    env.create_identity(
        "refunds-api",
        json!({"owner": {"team": "payments"}, "secretName": "refunds-api-identity",
               "certificate": {"dnsNames": [server_name], "usages": ["server"]}}),
    )
    .await;
    env.create_identity(
        "support-agent",
        json!({"owner": {"team": "support"}, "secretName": "support-agent-identity",
               "certificate": {"usages": ["client"]}, "attributes": {"model": "m-2026-11"},
               "delegation": {"maxChildTTL": "2m", "maxDepth": 2,
                              "grants": ["payments.refund", "orders.read"]}}),
    )
    .await;
    env.create_identity(
        "reporting",
        json!({"owner": {"team": "bi"}, "secretName": "reporting-identity",
               "certificate": {"usages": ["client"]}}),
    )
    .await;
    env.create_identity(
        "lapsing",
        json!({"owner": {"team": "support"}, "secretName": "lapsing-identity",
               "certificate": {"usages": ["client"]}, "delegation": {}}),
    )
    .await;
    env.create_identity(
        "brief",
        json!({"owner": {"team": "support"}, "secretName": "brief-identity",
               "certificate": {"usages": ["client"], "ttl": "15s"}, "delegation": {}}),
    )
    .await;
    env.create_entitlement(
        "agent-grants",
        json!({"subjects": {"names": ["support-agent"]},
               "grants": ["orders.read", "payments.refund"], "justification": "SUP-1"}),
    )
    .await;
    env.create_entitlement(
        "reporting-reads",
        json!({"subjects": {"names": ["reporting"]}, "grants": ["orders.read"],
               "justification": "BI-2"}),
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let (server_dir, agent_dir) = (work.path().join("server"), work.path().join("agent"));
    let (reporting_dir, child_dir) = (work.path().join("reporting"), work.path().join("child"));
    identity_dir(&env, "refunds-api-identity", &[], &server_dir).await;
    identity_dir(
        &env,
        "support-agent-identity",
        &["orders.read", "payments.refund"],
        &agent_dir,
    )
    .await;
    identity_dir(&env, "reporting-identity", &["orders.read"], &reporting_dir).await;
    let lapsing_dir = work.path().join("lapsing");
    identity_dir(&env, "lapsing-identity", &[], &lapsing_dir).await;
    // A copy of a 15 s certificate, kept past its end.
    let brief_dir = work.path().join("brief");
    identity_dir(&env, "brief-identity", &[], &brief_dir).await;
    let brief_ends = OffsetDateTime::now_utc() + time::Duration::seconds(16);
    let crl = work.path().join("crl.pem");
    wait_for(Duration::from_secs(10), "the namespace's CRL", || {
        publish_crl(&env.client, &ns, &crl)
    })
    .await;
    let service = RelyingService::start_with_args(
        &server_dir,
        &["/refunds=payments.refund", "/orders=orders.read"],
        &[],
        Some(&crl),
        &["--accept-tasks"],
    );
    // The relying service's answer to curl presenting the identity in `dir`.
    let status = |dir: &Path, path: &str| service.status_for(&server_name, dir, path);
    let url = endpoint(addr);

    // The child makes its own key and request; the parent asks for its certificate.
    let (code, _, err) = delegate_cli(&["key", "--out", child_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let key_before = std::fs::read(child_dir.join("tls.key")).unwrap();
    first_child(&url, &agent_dir, &Task::new("warm-up", "")).await;
    let input = work.path().join("ticket.json");
    std::fs::write(&input, r#"{"order": 1042, "refund": "19.99"}"#).unwrap();
    let (code, out, err) = delegate_cli(&[
        "request",
        "--identity-dir",
        agent_dir.to_str().unwrap(),
        "--endpoint",
        &url,
        "--task",
        "T-1",
        "--purpose",
        "refund order 1042",
        "--grant",
        "payments.refund",
        "--input",
        input.to_str().unwrap(),
        "--csr",
        child_dir.join("request.csr").to_str().unwrap(),
        "--out",
        child_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "delegate request: {err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let parent_id = format!("spiffe://cluster.local/ns/{ns}/mi/support-agent");
    assert_eq!(summary["spiffeID"], format!("{parent_id}/task/T-1"));
    assert_eq!(summary["grants"], json!(["payments.refund"]));
    assert_eq!(
        std::fs::read(child_dir.join("tls.key")).unwrap(),
        key_before,
        "the child's key is the child's own: the parent never wrote it"
    );
    // OpenSSL: the chain verifies, and the certificate is for the child's key.
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (crt, ca, key) = (
        child_dir.join("tls.crt"),
        child_dir.join("ca.crt"),
        child_dir.join("tls.key"),
    );
    openssl(&[
        "verify",
        "-CAfile",
        ca.to_str().unwrap(),
        "-purpose",
        "sslclient",
        crt.to_str().unwrap(),
    ]);
    assert_eq!(
        openssl(&["x509", "-noout", "-pubkey", "-in", crt.to_str().unwrap()]),
        openssl(&["pkey", "-pubout", "-in", key.to_str().unwrap()]),
    );
    // The chain and the task, as the verify library reads them.
    let chain = certificates_from_pem(&std::fs::read_to_string(&crt).unwrap()).unwrap();
    let trust = TrustBundle::from_pem(&std::fs::read_to_string(&ca).unwrap()).unwrap();
    let now = OffsetDateTime::now_utc();
    let task =
        verify_identity_or_task(&chain, &trust, Revocation::NotChecked, Purpose::Client, now)
            .unwrap();
    let d = task.delegation.as_ref().expect("the delegation extension");
    assert!(task.identity.is_task());
    assert_eq!(
        (d.task_id.as_str(), d.purpose.as_str()),
        ("T-1", "refund order 1042")
    );
    assert!(d.input_digest.is_some());
    assert_eq!(d.ancestors.len(), 1);
    assert_eq!(d.ancestors[0].spiffe_id, parent_id);
    assert_eq!(d.ancestors[0].attributes["model"], "m-2026-11");
    assert!(task.not_after <= now + time::Duration::minutes(2) + time::Duration::seconds(2));

    // The relying service (curl as the client) takes the task as itself.
    assert_eq!(status(&child_dir, "/refunds/1042"), 200);
    assert_eq!(status(&child_dir, "/orders/1042"), 403);
    assert_eq!(status(&reporting_dir, "/orders/1"), 200);

    // The example agent hands a task to its tool runner, which calls the service as the task.
    let agent_run = |task: &str, path: &str| {
        Command::new(example_binary("task_agent", "NHI_E2E_TASK_AGENT"))
            .args([
                "run",
                "--identity-dir",
                agent_dir.to_str().unwrap(),
                "--endpoint",
                &url,
            ])
            .args([
                "--service",
                &format!("https://{server_name}:{}", service.port),
            ])
            .args(["--connect", &format!("127.0.0.1:{}", service.port)])
            .args(["--task", task, "--grant", "payments.refund", "--path", path])
            .output()
            .expect("the task agent runs")
    };
    let refund = agent_run("T-agent-1", "/refunds/7");
    let said = String::from_utf8_lossy(&refund.stdout).into_owned();
    assert!(
        refund.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&refund.stderr)
    );
    assert!(
        said.contains("/mi/support-agent/task/T-agent-1") && said.contains("HTTP 200"),
        "{said}"
    );
    let orders = agent_run("T-agent-2", "/orders/7");
    assert_eq!(
        orders.status.code(),
        Some(2),
        "the runner holds payments.refund only"
    );
    assert!(String::from_utf8_lossy(&orders.stdout).contains("HTTP 403"));

    // Escalations, each refused with its reason.
    let mut agent = Delegator::connect(&url, &agent_dir).await.unwrap();
    let csr = ChildKey::generate().unwrap();
    let (r, m) = reason(
        agent
            .request(
                &Task::new("T-2", "")
                    .grant("admin.all")
                    .grant("payments.refund"),
                csr.csr_pem(),
            )
            .await,
    );
    assert_eq!(r, "GrantNotHeld");
    assert!(
        m.contains("admin.all") && !m.contains("payments.refund"),
        "{m}"
    );
    let long = agent
        .request(
            &Task::new("T-3", "").ttl(Duration::from_secs(3600)),
            csr.csr_pem(),
        )
        .await
        .expect("a long lifetime is capped, not refused");
    let not_after = OffsetDateTime::parse(
        &long.not_after,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        not_after
            <= OffsetDateTime::now_utc() + time::Duration::minutes(2) + time::Duration::seconds(2)
    );
    let (r, _) = reason(agent.request(&Task::new("bad/id", ""), csr.csr_pem()).await);
    assert_eq!(r, "InvalidTask");
    let mut reporting = Delegator::connect(&url, &reporting_dir).await.unwrap();
    let (r, m) = reason(
        reporting
            .request(&Task::new("R-1", ""), csr.csr_pem())
            .await,
    );
    assert_eq!(r, "DelegationNotEnabled", "{m}");

    // A child delegates further within its own grants; its child may not.
    let mut child = Delegator::connect(&url, &child_dir).await.unwrap();
    let (r, m) = reason(
        child
            .request(&Task::new("T-1a", "").grant("orders.read"), csr.csr_pem())
            .await,
    );
    assert_eq!(
        r, "GrantNotHeld",
        "a child never gives more than it holds: {m}"
    );
    let grandchild_dir = work.path().join("grandchild");
    let grandchild_key = ChildKey::generate().unwrap();
    let grandchild = child
        .request(
            &Task::new("T-1a", "").grant("payments.refund"),
            grandchild_key.csr_pem(),
        )
        .await
        .unwrap();
    assert_eq!(
        grandchild.spiffe_id,
        format!("{parent_id}/task/T-1/task/T-1a")
    );
    grandchild
        .write_dir(&grandchild_dir, Some(&grandchild_key))
        .unwrap();
    let mut deepest = Delegator::connect(&url, &grandchild_dir).await.unwrap();
    let (r, _) = reason(deepest.request(&Task::new("T-1b", ""), csr.csr_pem()).await);
    assert_eq!(r, "DepthExceeded");
    assert_eq!(status(&grandchild_dir, "/refunds/1042"), 200);

    // The parent's status counts them, and the audit log has each, with the model version.
    let mis = env.identities();
    wait_for(Duration::from_secs(15), "status.delegation", || async {
        let mi: MachineIdentity = mis.get("support-agent").await.ok()?;
        let d = mi.status?.delegation?;
        (d.delegated >= 6 && d.refused >= 4 && d.recent.iter().any(|r| r.task_id == "T-1"))
            .then_some(())
    })
    .await;
    let audit = env.op.audit_lines();
    let t1 = audit
        .iter()
        .find(|l| l["task"]["id"] == "T-1" && l["outcome"] == "Signed")
        .expect("T-1 in the audit log");
    assert_eq!(t1["kind"], "nhi.dev/delegation");
    assert_eq!(t1["parent"]["attributes"]["model"], "m-2026-11");
    assert_eq!(t1["child"]["grants"], json!(["payments.refund"]));
    assert!(audit.iter().any(|l| l["reason"] == "GrantNotHeld"));

    // The parent's certificate is revoked (as `kubectl nhi revoke` asks): its descendants are
    // refused within the target, the unrelated identity is not.
    assert_eq!(status(&child_dir, "/refunds/1042"), 200);
    assert_eq!(status(&grandchild_dir, "/refunds/1042"), 200);
    let revoked_at = Instant::now();
    let request = format!("e2e-{:08x}", rand::random::<u32>());
    mis.patch(
        "support-agent",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"nhi.dev/revoke-requested": request}}})),
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the descendants refused",
        || async {
            publish_crl(&env.client, &ns, &crl).await;
            (status(&child_dir, "/refunds/1042") == 401
                && status(&grandchild_dir, "/refunds/1042") == 401)
                .then_some(())
        },
    )
    .await;
    let took = revoked_at.elapsed();
    eprintln!(
        "descendants refused {} ms after the parent's revocation was asked for",
        took.as_millis()
    );
    assert!(
        took < Duration::from_secs(2),
        "the revocation target: {took:?}"
    );
    assert_eq!(status(&reporting_dir, "/orders/1"), 200);
    // The revoked certificate can delegate no more.
    let (r, m) = reason(agent.request(&Task::new("T-5", ""), csr.csr_pem()).await);
    assert_eq!(r, "ParentRevoked", "{m}");

    // Another parent's review lapses: it is suspended.
    mis.patch(
        "lapsing",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"reviewBy": "2026-01-31"}})),
    )
    .await
    .unwrap();
    let (r, m) = wait_for(Duration::from_secs(10), "the suspension", || async {
        let mut agent = Delegator::connect(&url, &lapsing_dir).await.ok()?;
        match agent.request(&Task::new("T-4", ""), csr.csr_pem()).await {
            Err(DelegateError::Refused {
                reason, message, ..
            }) if reason == "ParentSuspended" => Some((reason, message)),
            _ => None,
        }
    })
    .await;
    assert!(m.contains("reviewBy 2026-01-31"), "{r}: {m}");

    // An expired parent certificate is refused in the handshake, the alert naming why.
    let wait = brief_ends - OffsetDateTime::now_utc();
    if wait > time::Duration::ZERO {
        tokio::time::sleep(wait.unsigned_abs()).await;
    }
    let expired = match Delegator::connect(&url, &brief_dir).await {
        Err(e) => e.to_string(),
        Ok(mut d) => match d.request(&Task::new("late", ""), csr.csr_pem()).await {
            Err(e) => e.to_string(),
            Ok(child) => panic!("an expired parent got {}", child.spiffe_id),
        },
    };
    assert!(expired.contains("CertificateExpired"), "{expired}");
}

#[tokio::test]
async fn the_budget_holds_under_a_tight_loop_and_spares_other_parents() {
    let addr = free_port();
    let env = OperatorNamespace::start("dlgrate", &["--delegation-addr", &addr.to_string()]).await;
    env.create_identity(
        "off",
        json!({"owner": {"team": "t"}, "secretName": "off-identity",
               "certificate": {"usages": ["client"]}}),
    )
    .await;
    for (name, per_minute) in [("busy", 5), ("calm", 60)] {
        env.create_identity(
            name,
            json!({"owner": {"team": "t"}, "secretName": format!("{name}-identity"),
                   "certificate": {"usages": ["client"]},
                   "delegation": {"maxPerMinute": per_minute}}),
        )
        .await;
    }
    // A value past the schema is refused at admission, with its message.
    let bad = rejected(
        &env.client,
        &env.ns,
        ("MachineIdentity", "machineidentities"),
        "too-long",
        json!({"owner": {"team": "t"}, "secretName": "s", "delegation": {"maxChildTTL": "2h"}}),
    )
    .await;
    assert!(
        bad.contains("maxChildTTL must be between 10s and 1h"),
        "{bad}"
    );
    let work = tempfile::tempdir().unwrap();
    let (busy_dir, calm_dir) = (work.path().join("busy"), work.path().join("calm"));
    identity_dir(&env, "busy-identity", &[], &busy_dir).await;
    identity_dir(&env, "calm-identity", &[], &calm_dir).await;
    let url = endpoint(addr);
    first_child(&url, &busy_dir, &Task::new("t-0", "")).await;
    let key = ChildKey::generate().unwrap();
    let mut busy = Delegator::connect(&url, &busy_dir).await.unwrap();
    let (mut signed, mut limited, mut retry) = (1, 0, 0);
    for i in 1..40 {
        match busy
            .request(&Task::new(&format!("t-{i}"), ""), key.csr_pem())
            .await
        {
            Ok(_) => signed += 1,
            Err(DelegateError::RateLimited {
                retry_after_seconds,
                ..
            }) => {
                limited += 1;
                retry = retry_after_seconds;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(signed, 5, "the minute's budget, no more");
    assert_eq!(limited, 35);
    assert!((1..=12).contains(&retry), "Retry-After {retry}");
    let mut calm = Delegator::connect(&url, &calm_dir).await.unwrap();
    for i in 0..10 {
        calm.request(&Task::new(&format!("c-{i}"), ""), key.csr_pem())
            .await
            .expect("another parent keeps its own budget");
    }

    // Refused requests take from the budget too (the default 60 without spec.delegation), and a
    // run of rate-limit refusals is audited once.
    let off_dir = work.path().join("off");
    identity_dir(&env, "off-identity", &[], &off_dir).await;
    let mut off = Delegator::connect(&url, &off_dir).await.unwrap();
    let (mut not_enabled, mut limited) = (0, 0);
    for i in 0..70 {
        match off
            .request(&Task::new(&format!("o-{i}"), ""), key.csr_pem())
            .await
        {
            Err(DelegateError::Refused { reason, .. }) if reason == "DelegationNotEnabled" => {
                not_enabled += 1
            }
            Err(DelegateError::RateLimited { .. }) => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((not_enabled, limited), (60, 10));
    let audited = env
        .op
        .audit_lines()
        .iter()
        .filter(|l| l["identity"] == format!("{}/off", env.ns) && l["reason"] == "RateLimited")
        .count();
    assert_eq!(audited, 1, "a run of 429s is one audit line");
}
