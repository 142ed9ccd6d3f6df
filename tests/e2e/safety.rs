//! Safety: foreign Secrets are never overwritten, restarts re-issue nothing, the CA bootstrap is
//! race-safe, and a CA given by the cluster operator is used as is.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::json;

use crate::support::*;
use nhi_operator::ca::store::{CaLocation, load_or_bootstrap};

#[tokio::test]
async fn a_secret_that_is_not_ours_is_never_overwritten() {
    let env = OperatorNamespace::start("foreign", &[]).await;
    let secrets = env.secrets();
    let foreign = Secret {
        metadata: ObjectMeta {
            name: Some("taken".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "password".to_string(),
            ByteString(b"hunter2".to_vec()),
        )])),
        ..Default::default()
    };
    let created = secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    let api = env.identities();
    env.create_identity(
        "squatter",
        json!({"owner": {"team": "t"}, "secretName": "taken"}),
    )
    .await;
    let mi = wait_for(
        Duration::from_secs(5),
        "SecretConflict condition",
        || async {
            api.get("squatter")
                .await
                .ok()
                .filter(|m| condition(m, "Ready").is_some_and(|c| c.reason == "SecretConflict"))
        },
    )
    .await;
    assert_eq!(condition(&mi, "Ready").unwrap().status, "False");
    // The operator has looked (the condition, then its Event) and has nothing left in hand.
    wait_for_event(
        &env.client,
        &env.ns,
        "squatter",
        "SecretConflict",
        Duration::from_secs(5),
    )
    .await;
    env.op.settle(Controller::Identities).await;
    let after = secrets.get("taken").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, created.metadata.resource_version,
        "the foreign Secret was modified"
    );
    assert_eq!(secret_text(&after, "password"), "hunter2");
    assert!(!after.data.unwrap().contains_key("tls.key"));
    let events = kubectl()
        .args(["get", "events", "-n", &env.ns, "-o", "json"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&events.stdout).contains("SecretConflict"));
}

#[tokio::test]
async fn a_restarted_operator_reissues_nothing() {
    let mut env = OperatorNamespace::start("restart", &["--metrics-per-identity"]).await;
    let (api, secrets) = (env.identities(), env.secrets());
    for i in 0..5 {
        let name = format!("r{i}");
        env.create_identity(
            &name,
            json!({"owner": {"team": "t"}, "secretName": format!("{name}-id")}),
        )
        .await;
    }
    let mut before = Vec::new();
    for i in 0..5 {
        wait_ready(&api, &format!("r{i}"), Duration::from_secs(10)).await;
    }
    // Let the post-issuance reconciles end before recording versions.
    env.op.settle(Controller::Identities).await;
    for i in 0..5 {
        let s = secrets.get(&format!("r{i}-id")).await.unwrap();
        before.push((
            s.metadata.resource_version.clone(),
            api.get(&format!("r{i}"))
                .await
                .unwrap()
                .status
                .unwrap()
                .serial_number,
        ));
    }
    env.op.kill();
    env.op.restart();
    env.op.wait_ready(Duration::from_secs(20)).await;
    // The restarted process has judged every identity (it records each one's certificate expiry
    // as it decides to keep the certificate, after any re-issue), and has nothing left in hand.
    wait_for(
        Duration::from_secs(20),
        "the restarted operator to judge every identity",
        || async {
            let (_, metrics) = env.op.get("/metrics").await?;
            (0..5)
                .all(|i| {
                    metrics.contains(&format!(
                        "nhi_certificate_expiry_timestamp_seconds{{namespace=\"{}\",name=\"r{i}\"}}",
                        env.ns
                    ))
                })
                .then_some(())
        },
    )
    .await;
    env.op.settle(Controller::Identities).await;
    for (i, (rv, serial)) in before.into_iter().enumerate() {
        let s = secrets.get(&format!("r{i}-id")).await.unwrap();
        assert_eq!(
            s.metadata.resource_version, rv,
            "Secret r{i}-id was rewritten after restart"
        );
        let mi = api.get(&format!("r{i}")).await.unwrap();
        assert_eq!(
            mi.status.unwrap().serial_number,
            serial,
            "r{i} re-issued after restart"
        );
    }
    let (_, metrics) = env.op.get("/metrics").await.unwrap();
    assert!(
        !metrics.contains("nhi_certificates_issued_total{"),
        "the restarted operator issued: {metrics}"
    );
}

#[tokio::test]
async fn two_operators_bootstrapping_at_once_end_with_one_ca() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "carace").await;
    let loc = CaLocation {
        namespace: ns.name.clone(),
        secret_name: "nhi-ca".into(),
        bootstrap_lifetime: time::Duration::days(30),
        common_name: "race".into(),
    };
    let (a, b) = tokio::join!(
        load_or_bootstrap(client.clone(), &loc),
        load_or_bootstrap(client.clone(), &loc)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.cert_der(),
        b.cert_der(),
        "the two operators ended with different CAs"
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let stored = secrets.get("nhi-ca").await.unwrap();
    let pem = secret_text(&stored, "tls.crt");
    assert_eq!(
        nhi_identity::pem_chain::pem_certificates(&pem).unwrap()[0],
        a.cert_der()
    );
}

#[tokio::test]
async fn a_provided_intermediate_ca_is_used_as_is() {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let client = client().await;
    let ns = TestNamespace::create(&client, "provided").await;
    // An offline root and an intermediate signed by it; only the intermediate's key is given.
    let now = time::OffsetDateTime::now_utc();
    let root_key = KeyPair::generate().unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name
        .push(DnType::CommonName, "offline root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    root.not_before = now - time::Duration::hours(1);
    root.not_after = now + time::Duration::days(60);
    let root_cert = root.self_signed(&root_key).unwrap();
    let inter_key = KeyPair::generate().unwrap();
    let mut inter = CertificateParams::default();
    inter
        .distinguished_name
        .push(DnType::CommonName, "cluster intermediate");
    inter.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    inter.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    inter.not_before = now - time::Duration::hours(1);
    inter.not_after = now + time::Duration::days(30);
    let inter_cert = inter
        .signed_by(&inter_key, &Issuer::new(root.clone(), &root_key))
        .unwrap();
    let secrets: Api<Secret> = ns.api();
    let ca_secret = Secret {
        metadata: ObjectMeta {
            name: Some("nhi-ca".into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                "tls.crt".to_string(),
                ByteString(format!("{}{}", inter_cert.pem(), root_cert.pem()).into_bytes()),
            ),
            (
                "tls.key".to_string(),
                ByteString(inter_key.serialize_pem().into_bytes()),
            ),
            (
                "ca.crt".to_string(),
                ByteString(root_cert.pem().into_bytes()),
            ),
        ])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &ca_secret)
        .await
        .unwrap();
    let env = OperatorNamespace::start_in(ns, &[]).await;
    let api = env.identities();
    env.create_identity(
        "leaf",
        json!({"owner": {"team": "t"}, "secretName": "leaf-id"}),
    )
    .await;
    wait_ready(&api, "leaf", Duration::from_secs(5)).await;
    let s = secrets.get("leaf-id").await.unwrap();
    assert_eq!(
        secret_text(&s, "ca.crt"),
        root_cert.pem(),
        "the trust bundle is the provided root"
    );
    let dir = tempfile::tempdir().unwrap();
    let chain = nhi_identity::pem_chain::pem_certificates(&secret_text(&s, "tls.crt")).unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    std::fs::write(
        dir.path().join("leaf.pem"),
        nhi_identity::pem_chain::certificate_pem(&chain[0]),
    )
    .unwrap();
    std::fs::write(dir.path().join("inter.pem"), inter_cert.pem()).unwrap();
    std::fs::write(dir.path().join("root.pem"), root_cert.pem()).unwrap();
    let out = std::process::Command::new("openssl")
        .current_dir(dir.path())
        .args([
            "verify",
            "-CAfile",
            "root.pem",
            "-untrusted",
            "inter.pem",
            "leaf.pem",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The operator did not replace the provided CA.
    let stored = secrets.get("nhi-ca").await.unwrap();
    assert_eq!(secret_text(&stored, "tls.key"), inter_key.serialize_pem());
}

#[tokio::test]
async fn a_sigterm_at_any_moment_of_start_up_exits_cleanly() {
    // Once the HTTP endpoint answers, the operator listens for SIGTERM: a signal that arrives
    // while the CA loads, the caches fill or the controllers start is not lost (it once was,
    // and the process hung), and the exit is clean (status 0).
    let client = client().await;
    let ns = TestNamespace::create(&client, "sigterm").await;
    for step in 0..8u64 {
        let flags = ["--leader-elect", "--lease-duration", "15s"];
        let mut op = Operator::start_named(&ns.name, &flags, Some(&format!("op-{step}")));
        wait_for(Duration::from_secs(20), "the HTTP endpoint", || async {
            op.get("/livez").await.map(|_| ())
        })
        .await;
        // Spread over start-up: before the Lease, during the CA load, as the controllers start.
        tokio::time::sleep(Duration::from_millis(step * 40)).await;
        let status = op.terminate(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "SIGTERM {} ms after the endpoint answered: {status:?}\n{}",
            step * 40,
            op.log_tail()
        );
    }
}
