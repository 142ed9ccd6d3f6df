//! Admission: invalid manifests are rejected by the apiserver, naming the field; what the schema
//! cannot catch becomes a condition, never a crash.

use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::*;

const MI_KIND: (&str, &str) = ("MachineIdentity", "machineidentities");
use nhi_operator::api::MachineIdentity;

#[tokio::test]
async fn invalid_manifests_are_rejected_with_the_field_named() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "valid").await;
    let api: Api<MachineIdentity> = Api::namespaced(client.clone(), &ns.name);
    let base = || json!({"owner": {"team": "t"}, "secretName": "s"});
    let with = |path: &str, value: serde_json::Value| {
        let mut s = base();
        let mut cur = &mut s;
        let parts: Vec<&str> = path.split('.').collect();
        for p in &parts[..parts.len() - 1] {
            if cur.get(*p).is_none() {
                cur[*p] = json!({});
            }
            cur = &mut cur[*p];
        }
        cur[parts[parts.len() - 1]] = value;
        s
    };
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("no-owner", json!({"secretName": "s"}), "spec.owner"),
        (
            "empty-team",
            with("owner.team", json!("")),
            "spec.owner.team",
        ),
        (
            "ttl-short",
            with("certificate.ttl", json!("5s")),
            "spec.certificate.ttl",
        ),
        (
            "ttl-long",
            with("certificate.ttl", json!("48h")),
            "spec.certificate.ttl",
        ),
        (
            "ttl-garbage",
            with("certificate.ttl", json!("one hour")),
            "spec.certificate.ttl",
        ),
        (
            "bad-dns",
            with("certificate.dnsNames", json!(["Not_A_Name"])),
            "spec.certificate.dnsNames[0]",
        ),
        (
            "bad-alg",
            with("certificate.keyAlgorithm", json!("DSA-1024")),
            "spec.certificate.keyAlgorithm",
        ),
        (
            "bad-review",
            with("reviewBy", json!("next week")),
            "spec.reviewBy",
        ),
        (
            "bad-secret",
            with("secretName", json!("Not A Name")),
            "spec.secretName",
        ),
        (
            "no-secret",
            json!({"owner": {"team": "t"}}),
            "spec.secretName",
        ),
        (
            "bad-renewal",
            with("certificate.renewalPercent", json!(99)),
            "spec.certificate.renewalPercent",
        ),
        (
            "bad-attr",
            with("attributes", json!({"Bad Key": "x"})),
            "spec.attributes",
        ),
        (
            "bad-usage",
            with("certificate.usages", json!(["codeSigning"])),
            "spec.certificate.usages[0]",
        ),
    ];
    let count = cases.len();
    for (name, spec, field) in cases {
        let msg = rejected(&client, &ns.name, MI_KIND, name, spec).await;
        assert!(
            msg.contains(field),
            "{name}: message does not name {field}: {msg}"
        );
    }
    let long = "x".repeat(64);
    let msg = rejected(&client, &ns.name, MI_KIND, &long, base()).await;
    assert!(msg.contains("metadata.name"), "{msg}");
    eprintln!("{} kinds of invalid manifest rejected", count + 1);

    // secretName is immutable.
    api.create(&PostParams::default(), &identity("immutable", base()))
        .await
        .unwrap();
    let patch = json!({"spec": {"secretName": "other"}});
    match api
        .patch("immutable", &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Err(kube::Error::Api(s)) => assert!(
            s.message.contains("secretName is immutable"),
            "{}",
            s.message
        ),
        other => panic!("changing secretName was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn what_the_schema_cannot_catch_becomes_a_condition() {
    let mut env = OperatorNamespace::start("cond", &["--max-ttl", "2h"]).await;
    let api = env.identities();
    env.create_identity(
        "too-long",
        json!({"owner": {"team": "t"}, "secretName": "tl", "certificate": {"ttl": "3h"}}),
    )
    .await;
    let mi = wait_for(
        Duration::from_secs(5),
        "TTLOutOfBounds condition",
        || async {
            api.get("too-long")
                .await
                .ok()
                .filter(|m| condition(m, "Ready").is_some_and(|c| c.reason == "TTLOutOfBounds"))
        },
    )
    .await;
    let c = condition(&mi, "Ready").unwrap();
    assert_eq!(c.status, "False");
    assert!(c.message.contains("spec.certificate.ttl"), "{}", c.message);
    assert!(env.op.alive(), "the operator must not crash on a bad spec");
    // Fixing the spec makes it Ready.
    let patch = json!({"spec": {"certificate": {"ttl": "1h"}}});
    api.patch("too-long", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_ready(&api, "too-long", Duration::from_secs(5)).await;
}

#[tokio::test]
async fn kubectl_explain_and_printer_columns_describe_identities() {
    for (field, expect) in [
        ("mi.spec.owner", "accountable"),
        ("mi.spec.certificate.ttl", "Lifetime of each certificate"),
        ("mi.spec.certificate.keyAlgorithm", "Key algorithm"),
        ("mi.spec.secretName", "cannot be changed once set"),
        ("mi.status.thumbprintSHA256", "SHA-256"),
    ] {
        let out = kubectl().args(["explain", field]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(expect),
            "kubectl explain {field}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let client = client().await;
    let ns = TestNamespace::create(&client, "columns").await;
    let api: Api<MachineIdentity> = Api::namespaced(client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &identity(
            "cols",
            json!({"owner": {"team": "columns-team"}, "secretName": "c", "reviewBy": "2030-01-01"}),
        ),
    )
    .await
    .unwrap();
    let out = kubectl()
        .args(["get", "mi", "-n", &ns.name])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let header = table.lines().next().unwrap_or_default();
    for col in ["READY", "EXPIRES", "OWNER", "REVIEW-BY", "AGE"] {
        assert!(
            header.contains(col),
            "printer column {col} missing: {table}"
        );
    }
    assert!(
        table.contains("columns-team") && table.contains("2030-01-01"),
        "{table}"
    );
}
