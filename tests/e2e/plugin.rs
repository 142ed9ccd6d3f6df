//! The `kubectl-nhi` plugin against the local control plane: list, inspect, review and revoke, run
//! as the real binary with the tests' kubeconfig, the way kubectl would run it.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::support::*;
use nhi_operator::api::MachineIdentity;
use nhi_operator::labels::{REVIEWED_AT, REVIEWED_BY, REVOKE_REQUESTED};

/// What one run of the plugin did.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// The plugin, a binary of the workspace crate `kubectl-nhi`: it is built next to the operator's
/// binary (`cargo build --bins`, which `make e2e-test` runs).
fn plugin_binary() -> std::path::PathBuf {
    let path =
        std::path::Path::new(env!("CARGO_BIN_EXE_nhi-operator")).with_file_name("kubectl-nhi");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bins`",
        path.display()
    );
    path
}

/// Runs `kubectl-nhi` with the tests' kubeconfig.
fn nhi(args: &[&str]) -> Run {
    nhi_with(&kubeconfig_path(), args)
}

/// Runs `kubectl-nhi` with `kubeconfig`.
fn nhi_with(kubeconfig: &std::path::Path, args: &[&str]) -> Run {
    let out = Command::new(plugin_binary())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("kubectl-nhi runs");
    let run = Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "$ kubectl nhi {}\n{}{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    run
}

/// Runs the plugin and expects success.
fn nhi_ok(args: &[&str]) -> String {
    let run = nhi(args);
    assert!(
        run.ok,
        "kubectl nhi {} failed: {}",
        args.join(" "),
        run.stderr
    );
    run.stdout
}

/// Creates a Deployment `name` in `ns` for a workloadRef to find.
async fn deployment(client: &Client, ns: &str, name: &str) {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment_object(name))
        .await
        .expect("create Deployment");
}

/// The STATE the plugin should show for an identity, from its Ready condition.
fn expected_state(mi: &MachineIdentity) -> String {
    match condition(mi, "Ready") {
        None => "Pending".into(),
        Some(c) if c.status == "True" => "Ready".into(),
        Some(c) => c.reason.to_string(),
    }
}

/// The serials (hex) on the CRL the operator publishes in `ns`, when it publishes one.
async fn published_crl_serials(client: &Client, ns: &str) -> Option<Vec<String>> {
    let (_, crl) = trust_documents(client, ns).await?;
    Some(crl_serials(&crl))
}

fn annotations(mi: &MachineIdentity) -> BTreeMap<String, String> {
    mi.metadata.annotations.clone().unwrap_or_default()
}

#[tokio::test]
async fn plugin_list_shows_owner_workload_review_flags_expiry_grants_and_state() {
    let env = OperatorNamespace::start("plugin-list", &[]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let mis = env.identities();
    deployment(client, ns, "checkout").await;
    let (later, soon, lapsed) = (today_plus(120), today_plus(5), today_plus(-3));
    for (name, review_by, extra) in [
        (
            "checkout",
            &later,
            json!({"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"}}),
        ),
        ("reports", &soon, json!({})),
        ("old-batch", &lapsed, json!({})),
    ] {
        let mut spec = json!({"owner": {"team": format!("team-{name}"), "contact": "ops@example.com"},
                              "reviewBy": review_by, "secretName": format!("{name}-identity")});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        env.create_identity(name, spec).await;
    }
    env.create_entitlement("checkout-pays",
            json!({"subjects": {"names": ["checkout"]}, "grants": ["payments.process", "payments.refund"],
                   "justification": "PAY-1"})).await;
    wait_for(
        Duration::from_secs(15),
        "checkout Ready with its grants",
        || async {
            let mi = mis.get("checkout").await.ok()?;
            let grants = &mi.status.as_ref()?.entitlements;
            (is_ready(&mi) && grants.len() == 2).then_some(())
        },
    )
    .await;
    wait_ready(&mis, "reports", Duration::from_secs(10)).await;
    // The lapsed identity is Ready without the lifecycle controller and ReviewOverdue with it;
    // either way the plugin shows what its Ready condition says.
    let old_batch = wait_for(
        Duration::from_secs(15),
        "old-batch to have a Ready condition",
        || async {
            let mi = mis.get("old-batch").await.ok()?;
            condition(&mi, "Ready").is_some().then_some(mi)
        },
    )
    .await;

    // The table.
    let table = nhi_ok(&["list", "-n", ns]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three identities:\n{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "OWNER",
            "WORKLOAD",
            "REVIEW-BY",
            "EXPIRES",
            "GRANTS",
            "POD-CERTS",
            "STATE"
        ]
    );
    // Cells are separated by at least three spaces; a cell holds at most single spaces.
    let cells = |name: &str| -> Vec<String> {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no line for {name}:\n{table}"));
        line.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect()
    };
    let checkout = cells("checkout");
    assert_eq!(
        checkout[..4],
        [
            "checkout",
            "team-checkout",
            "Deployment/checkout",
            later.as_str()
        ],
        "{table}"
    );
    assert!(
        checkout[4].starts_with("in ") && checkout[4].ends_with('m'),
        "a 1h certificate expires in minutes: {table}"
    );
    assert_eq!(
        checkout[5..],
        ["payments.process,payments.refund", "-", "Ready"],
        "{table}"
    );
    let reports = cells("reports");
    assert_eq!(reports[2], "-", "no workload: {table}");
    assert_eq!(reports[3], format!("{soon} (due in 5d)"), "{table}");
    assert_eq!(reports[5], "-", "no grants: {table}");
    let old = cells("old-batch");
    assert_eq!(old[3], format!("{lapsed} (overdue)"), "{table}");

    // Every namespace: NAMESPACE first.
    let all = nhi_ok(&["list", "-A"]);
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with(&format!("{} ", ns)) && l.contains(" checkout ")),
        "{all}"
    );

    // JSON: the documented fields, and the same verdicts.
    let rows: Vec<Value> = serde_json::from_str(&nhi_ok(&["list", "-n", ns, "-o", "json"]))
        .expect("list -o json is a JSON array");
    assert_eq!(rows.len(), 3);
    let row = |name: &str| rows.iter().find(|r| r["name"] == name).unwrap().clone();
    let c = row("checkout");
    let status = mis.get("checkout").await.unwrap().status.unwrap();
    assert_eq!(c["namespace"], ns);
    assert_eq!(c["owner"], "team-checkout");
    assert_eq!(c["contact"], "ops@example.com");
    assert_eq!(c["workload"], "Deployment/checkout");
    assert_eq!(c["reviewBy"], later.as_str());
    assert_eq!(c["review"], "current");
    assert_eq!(c["reviewDaysLeft"], 120);
    assert_eq!(c["grants"], json!(["payments.process", "payments.refund"]));
    assert_eq!(c["notAfter"], json!(status.not_after));
    assert_eq!(c["serialNumber"], json!(status.serial_number));
    assert_eq!(c["state"], "Ready");
    let r = row("reports");
    assert_eq!(r["review"], "dueSoon");
    assert_eq!(r["reviewDaysLeft"], 5);
    assert_eq!(r["workload"], Value::Null);
    assert_eq!(r["grants"], json!([]));
    let o = row("old-batch");
    assert_eq!(o["review"], "overdue");
    assert_eq!(o["reviewDaysLeft"], -3);
    // The state of a changing object: allow the operator to move it once between the reads.
    let now_state = expected_state(&mis.get("old-batch").await.unwrap());
    assert!(
        o["state"] == now_state.as_str() || o["state"] == expected_state(&old_batch).as_str(),
        "state {} against the Ready condition {now_state}",
        o["state"]
    );

    // YAML carries the same rows.
    let yaml: Vec<Value> =
        serde_yaml::from_str(&nhi_ok(&["list", "-n", ns, "-o", "yaml"])).unwrap();
    assert_eq!(yaml.len(), 3);
    assert_eq!(yaml[0]["name"], "checkout");
}

#[tokio::test]
async fn plugin_inspect_decodes_a_secret_and_a_pem_file() {
    let env = OperatorNamespace::start("plugin-inspect", &[]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let mis = env.identities();
    let secrets = env.secrets();
    env.create_identity(
        "checkout",
        json!({"owner": {"team": "payments"}, "secretName": "checkout-identity",
               "attributes": {"project": "shop", "tier": "gold"},
               "certificate": {"keyAlgorithm": "ECDSA-P384"}}),
    )
    .await;
    env.create_entitlement(
        "checkout-pays",
        json!({"subjects": {"names": ["checkout"]}, "grants": ["payments.process"],
               "justification": "PAY-2"}),
    )
    .await;
    let mi = wait_for(
        Duration::from_secs(15),
        "checkout Ready with its grant",
        || async {
            let mi = mis.get("checkout").await.ok()?;
            (is_ready(&mi) && !mi.status.as_ref()?.entitlements.is_empty()).then_some(mi)
        },
    )
    .await;
    let status = mi.status.unwrap();
    let spiffe = format!("spiffe://cluster.local/ns/{}/mi/checkout", ns);

    // The trust ConfigMap decides what the plugin can say about revocation: wait until the
    // operator has published it (asynchronously, after the identity is Ready), so that the Secret
    // and the file below are judged against the same one; read it before and after, so that a
    // CRL published in between does not make the check flaky.
    wait_for(
        Duration::from_secs(10),
        "the nhi-trust ConfigMap",
        || async { trust_documents(client, ns).await.map(|_| ()) },
    )
    .await;
    let inspect_json = |args: &[&str]| -> Value {
        serde_json::from_str(&nhi_ok(args)).expect("inspect -o json is JSON")
    };
    let (report, crl) = loop {
        let before = published_crl_serials(client, ns).await;
        let report = inspect_json(&["inspect", "checkout-identity", "-n", ns, "-o", "json"]);
        if published_crl_serials(client, ns).await == before {
            break (report, before);
        }
    };
    assert_eq!(
        report["source"],
        format!("secret {}/checkout-identity (tls.crt)", ns)
    );
    assert_eq!(report["spiffeID"], spiffe.as_str());
    assert_eq!(report["serialNumber"], json!(status.serial_number));
    assert_eq!(report["thumbprintSHA256"], json!(status.thumbprint_sha256));
    assert_eq!(report["notAfter"], json!(status.not_after));
    assert_eq!(report["grants"], json!(["payments.process"]));
    assert_eq!(
        report["attributes"],
        json!({"project": "shop", "tier": "gold"})
    );
    assert_eq!(report["keyAlgorithm"], "ECDSA-P384");
    assert_eq!(report["expired"], false);
    match crl {
        Some(_) => assert_eq!(report["revocation"]["status"], "notRevoked", "{report}"),
        None => {
            assert_eq!(report["revocation"]["status"], "unknown");
            assert_eq!(
                report["revocation"]["detail"],
                format!("no nhi-trust ConfigMap in {}", ns)
            );
        }
    }

    // The text form.
    let text = nhi_ok(&["inspect", "checkout-identity", "-n", ns]);
    for want in [
        format!("SPIFFE ID:     {spiffe}"),
        format!("Serial:        {}", status.serial_number.clone().unwrap()),
        format!(
            "SHA-256:       {}",
            status.thumbprint_sha256.clone().unwrap()
        ),
        "Grants:        payments.process".to_string(),
        "Attributes:    project=shop, tier=gold".to_string(),
        "Key algorithm: ECDSA-P384".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} missing in\n{text}");
    }
    assert!(
        text.contains("Revocation:    not revoked (CRL in ConfigMap")
            || text.contains(&format!(
                "Revocation:    unknown (no nhi-trust ConfigMap in {})",
                ns
            )),
        "{text}"
    );

    // A PEM file: the identity.pem bundle starts with the private key, which is skipped and
    // never printed; the namespace for the CRL comes from the SPIFFE ID.
    let secret = secrets.get("checkout-identity").await.unwrap();
    let bundle = secret_text(&secret, "identity.pem");
    assert!(bundle.starts_with("-----BEGIN PRIVATE KEY-----"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("identity.pem");
    std::fs::write(&path, &bundle).unwrap();
    let from_file = nhi_ok(&["inspect", path.to_str().unwrap(), "-o", "yaml"]);
    assert!(!from_file.contains("PRIVATE KEY"));
    let key_body: String = bundle.lines().nth(1).unwrap().to_string();
    assert!(!from_file.contains(&key_body), "key material printed");
    let file_report: Value = serde_yaml::from_str(&from_file).unwrap();
    assert_eq!(file_report["serialNumber"], report["serialNumber"]);
    assert_eq!(
        file_report["thumbprintSHA256"],
        json!(status.thumbprint_sha256)
    );
    assert_eq!(file_report["grants"], json!(["payments.process"]));
    // The CRL is looked up in the certificate's namespace (not the kubeconfig's default).
    assert_eq!(
        file_report["revocation"]["status"],
        report["revocation"]["status"]
    );
    if report["revocation"]["status"] == "unknown" {
        assert_eq!(
            file_report["revocation"]["detail"],
            report["revocation"]["detail"]
        );
    }
    let text = nhi_ok(&["inspect", path.to_str().unwrap()]);
    assert!(!text.contains("PRIVATE KEY") && !text.contains(&key_body));

    // Errors: a missing Secret, a Secret without tls.crt.
    let missing = nhi(&["inspect", "nope", "-n", ns]);
    assert!(!missing.ok);
    assert!(
        missing
            .stderr
            .contains(&format!("secret {}/nope not found", ns)),
        "{}",
        missing.stderr
    );
}

#[tokio::test]
async fn plugin_review_moves_the_review_date_and_records_who_and_when() {
    let env = OperatorNamespace::start("plugin-review", &[]).await;
    let ns = env.ns.as_str();
    let mis = env.identities();
    let soon = today_plus(3);
    env.create_identity(
        "ci-runner",
        json!({"owner": {"team": "platform"}, "secretName": "ci-runner-identity",
               "reviewBy": soon}),
    )
    .await;
    wait_ready(&mis, "ci-runner", Duration::from_secs(10)).await;

    // A past or malformed date is refused before any call, and nothing changes.
    for bad in [
        today_plus(-1),
        "next-week".to_string(),
        "2026-02-30".to_string(),
    ] {
        let run = nhi(&["review", "ci-runner", "-n", ns, "--until", &bad]);
        assert!(!run.ok, "{bad} accepted");
        assert!(
            run.stderr.contains("is in the past") || run.stderr.contains("YYYY-MM-DD"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(
        mis.get("ci-runner")
            .await
            .unwrap()
            .spec
            .review_by
            .as_deref(),
        Some(soon.as_str())
    );

    let until = today_plus(90);
    let before = OffsetDateTime::now_utc() - time::Duration::seconds(2);
    let out = nhi_ok(&["review", "ci-runner", "-n", ns, "--until", &until]);
    assert!(
        out.contains(&format!("reviewBy {soon} -> {until}")),
        "{out}"
    );
    let mi = mis.get("ci-runner").await.unwrap();
    assert_eq!(mi.spec.review_by.as_deref(), Some(until.as_str()));
    let notes = annotations(&mi);
    let reviewer = notes.get(REVIEWED_BY).expect("reviewed-by set");
    // The admin kubeconfig's client certificate says CN=admin; the apiserver says so too.
    assert_eq!(reviewer, "admin");
    let at =
        nhi_identity::timestamp::parse_rfc3339(notes.get(REVIEWED_AT).expect("reviewed-at set"))
            .expect("reviewed-at is RFC 3339");
    assert!(at >= before && at <= OffsetDateTime::now_utc() + time::Duration::seconds(2));
    // The plugin's patch is recorded under its own field manager.
    assert!(
        mi.metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|f| f.manager.as_deref() == Some("kubectl-nhi"))
    );

    let missing = nhi(&["review", "nope", "-n", ns, "--until", &until]);
    assert!(!missing.ok);
    assert!(
        missing
            .stderr
            .contains(&format!("machineidentity {}/nope not found", ns)),
        "{}",
        missing.stderr
    );
}

/// Needs the lifecycle controller: a lapsed review suspends the identity; `kubectl nhi review`
/// brings it back with a new certificate.
#[tokio::test]
async fn plugin_review_brings_a_suspended_identity_back() {
    let env = OperatorNamespace::start("plugin-resume", &[]).await;
    let ns = env.ns.as_str();
    let mis = env.identities();
    env.create_identity(
        "nightly",
        json!({"owner": {"team": "data"}, "secretName": "nightly-identity",
               "reviewBy": today_plus(-1), "onReviewLapse": "Suspend"}),
    )
    .await;
    let suspended = wait_for(
        Duration::from_secs(15),
        "nightly suspended (Ready=False, ReviewOverdue)",
        || async {
            let mi = mis.get("nightly").await.ok()?;
            (expected_state(&mi) == "ReviewOverdue").then_some(mi)
        },
    )
    .await;
    let listed = nhi_ok(&["list", "-n", ns]);
    assert!(
        listed.contains("(overdue)") && listed.contains("ReviewOverdue"),
        "{listed}"
    );
    let old_serial = suspended.status.and_then(|s| s.serial_number);

    nhi_ok(&["review", "nightly", "-n", ns, "--until", &today_plus(30)]);
    let back = wait_ready(&mis, "nightly", Duration::from_secs(15)).await;
    let new_serial = back.status.and_then(|s| s.serial_number);
    assert!(new_serial.is_some());
    assert_ne!(new_serial, old_serial, "a new certificate after the review");
}

#[tokio::test]
async fn plugin_revoke_without_waiting_sets_the_request_and_waiting_without_an_operator_times_out()
{
    let client = client().await;
    let ns = TestNamespace::create(&client, "plugin-ask").await;
    // No operator in this namespace: nobody answers.
    let mis: Api<MachineIdentity> = Api::namespaced(client.clone(), &ns.name);
    mis.create(
        &PostParams::default(),
        &identity(
            "orphan",
            json!({"owner": {"team": "platform"}, "secretName": "orphan-identity"}),
        ),
    )
    .await
    .unwrap();

    let out = nhi_ok(&["revoke", "orphan", "-n", &ns.name, "--wait=false"]);
    let first = annotations(&mis.get("orphan").await.unwrap())
        .get(REVOKE_REQUESTED)
        .cloned()
        .expect("revoke-requested set");
    assert!(out.contains(&first), "{out}");
    assert!(first.len() > 20, "a time and a random suffix: {first}");

    let started = std::time::Instant::now();
    let run = nhi(&["revoke", "orphan", "-n", &ns.name, "--timeout", "2s"]);
    assert!(!run.ok);
    assert!(
        run.stderr
            .contains("the operator has not answered within 2s: is it running?"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let second = annotations(&mis.get("orphan").await.unwrap())
        .get(REVOKE_REQUESTED)
        .cloned()
        .unwrap();
    assert_ne!(first, second, "every request is a new value");

    let missing = nhi(&["revoke", "nope", "-n", &ns.name]);
    assert!(!missing.ok);
    assert!(
        missing
            .stderr
            .contains(&format!("machineidentity {}/nope not found", ns.name)),
        "{}",
        missing.stderr
    );
}

/// Needs the lifecycle controller: it answers the request in `status.lastRevocation`, publishes
/// the serial in the namespace's CRL and issues a new certificate.
#[tokio::test]
async fn plugin_revoke_puts_the_serial_on_the_published_crl_and_a_new_certificate_is_issued() {
    let env = OperatorNamespace::start("plugin-revoke", &[]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let mis = env.identities();
    let secrets = env.secrets();
    env.create_identity(
        "checkout",
        json!({"owner": {"team": "payments"}, "secretName": "checkout-identity"}),
    )
    .await;
    let ready = wait_ready(&mis, "checkout", Duration::from_secs(10)).await;
    let old_serial = ready.status.unwrap().serial_number.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let old_pem = dir.path().join("tls.crt");
    let secret = secrets.get("checkout-identity").await.unwrap();
    std::fs::write(&old_pem, secret_text(&secret, "tls.crt")).unwrap();

    let out = nhi_ok(&["revoke", "checkout", "-n", ns, "--timeout", "20s"]);
    let mi = mis.get("checkout").await.unwrap();
    let request = annotations(&mi).get(REVOKE_REQUESTED).cloned().unwrap();
    let status = mi.status.unwrap();
    let last = status.last_revocation.expect("status.lastRevocation");
    assert_eq!(last.request.as_deref(), Some(request.as_str()));
    assert!(last.serial_numbers.contains(&old_serial));
    assert!(
        out.contains("revoked serials:") && out.contains(&old_serial),
        "{out}"
    );
    let new_serial = wait_for(Duration::from_secs(10), "a new certificate", || async {
        let s = mis.get("checkout").await.ok()?.status?.serial_number?;
        (s != old_serial).then_some(s)
    })
    .await;
    assert!(
        out.contains(&format!("new serial:      {new_serial}")) || out.contains("not issued yet"),
        "{out}"
    );

    // The serial is on the published CRL, and inspect says so from it.
    let serials = wait_for(
        Duration::from_secs(5),
        "the serial in nhi-trust's CRL",
        || async {
            published_crl_serials(client, ns)
                .await
                .filter(|s| s.contains(&old_serial))
        },
    )
    .await;
    assert!(!serials.contains(&new_serial));
    let report: Value = serde_json::from_str(&nhi_ok(&[
        "inspect",
        old_pem.to_str().unwrap(),
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(report["revocation"]["status"], "revoked", "{report}");
    let current = nhi_ok(&["inspect", "checkout-identity", "-n", ns]);
    assert!(current.contains("not revoked"), "{current}");
}

#[tokio::test]
async fn plugin_policy_shows_what_applies_and_why_something_is_refused() {
    // A namespace out of admission (so a refused spec reaches the cluster), under the default
    // policy: the plugin names the policy, the namespace's own service names, and each refusal.
    let client = client().await;
    let ns = TestNamespace::create_labelled(
        &client,
        "ppol",
        &[(crate::tenant_setup::ADMISSION_OFF_LABEL, "off")],
    )
    .await;
    let mis: Api<MachineIdentity> = ns.api();
    let spec = serde_json::json!({"owner": {"team": "t"}, "secretName": "api-id",
        "certificate": {"dnsNames": [format!("api.{}.svc", ns.name), "api.payments.svc"]}});
    mis.create(&Default::default(), &identity("api", spec))
        .await
        .unwrap();
    let ents: Api<nhi_operator::api::Entitlement> = ns.api();
    let by_label = serde_json::json!({"subjects": {"selector": {"matchLabels": {"tier": "web"}}},
                                      "grants": ["web.read"], "justification": "j"});
    ents.create(&Default::default(), &entitlement("web", by_label))
        .await
        .unwrap();
    let out = nhi_ok(&["policy", "-n", &ns.name, "api"]);
    assert!(out.contains("IdentityPolicy nhi-default"), "{out}");
    assert!(out.contains(&format!("<service>.{}.svc", ns.name)), "{out}");
    assert!(
        out.contains("machineidentity api: issued without what is refused")
            && out.contains(
                "refused by IdentityPolicy nhi-default: \"api.payments.svc\" is not allowed"
            ),
        "{out}"
    );
    assert!(
        out.contains("entitlement web: refused") && out.contains("\"tier\" is not protected"),
        "{out}"
    );
    let missing = nhi(&["policy", "-n", &ns.name, "nope"]);
    assert!(
        !missing.ok && missing.stderr.contains("not found"),
        "{}",
        missing.stderr
    );

    // A tenant (edit in the namespace, the nhi.dev kinds there) sees the same: IdentityPolicies
    // are readable by every authenticated user.
    let kinds = ["machineidentities", "entitlements"];
    crate::tenancy::grant_tenant(&client, &ns.name, "tina", true, &kinds).await;
    let dir = tempfile::tempdir().unwrap();
    let mut kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig_path()).unwrap();
    for user in &mut kubeconfig.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.impersonate = Some("tina".into());
            auth.impersonate_groups = Some(vec!["system:authenticated".into()]);
        }
    }
    let path = dir.path().join("tina.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&kubeconfig).unwrap()).unwrap();
    let as_tina = nhi_with(&path, &["policy", "-n", &ns.name, "api"]);
    assert!(as_tina.ok, "{}", as_tina.stderr);
    assert!(
        as_tina
            .stdout
            .contains("refused by IdentityPolicy nhi-default"),
        "{}",
        as_tina.stdout
    );
}

/// Needs the revocation service's quotas: a revoke loop on one identity is refused past its
/// quota (the CLI says so, a condition and one Event), the certificate stays as it was, and
/// another identity of the namespace is still revoked.
#[tokio::test]
async fn plugin_revoke_in_a_loop_is_cut_off_by_the_identity_quota() {
    let env = OperatorNamespace::start(
        "plugin-revoke-quota",
        &["--revocation-quota-per-identity", "3"],
    )
    .await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let mis = env.identities();
    for name in ["looped", "other"] {
        env.create_identity(
            name,
            json!({"owner": {"team": "payments"}, "secretName": format!("{name}-identity")}),
        )
        .await;
        wait_ready(&mis, name, Duration::from_secs(10)).await;
    }
    for _ in 0..3 {
        nhi_ok(&["revoke", "looped", "-n", ns, "--timeout", "20s"]);
        // The next request must find the re-issued certificate to revoke.
        wait_ready(&mis, "looped", Duration::from_secs(10)).await;
    }
    let before = mis.get("looped").await.unwrap().status.unwrap();
    let serial = before.serial_number.clone().unwrap();
    for attempt in 0..3 {
        let run = nhi(&["revoke", "looped", "-n", ns, "--timeout", "20s"]);
        assert!(!run.ok, "attempt {attempt} past the quota was accepted");
        assert!(
            run.stderr.contains("refused") && run.stderr.contains("RevocationQuotaExceeded"),
            "{}",
            run.stderr
        );
    }
    let mi = mis.get("looped").await.unwrap();
    let refused = condition(&mi, "RevocationRefused")
        .expect("a RevocationRefused condition")
        .clone();
    let status = mi.status.unwrap();
    assert_eq!(status.serial_number.as_deref(), Some(serial.as_str()));
    assert!(
        refused.reason == "RevocationQuotaExceeded" && refused.message.contains("quota 3"),
        "{refused:?}"
    );
    let crl = published_crl_serials(client, ns).await.unwrap_or_default();
    assert!(!crl.contains(&serial), "a refused revocation was published");
    let warnings: Vec<_> = events_for(client, ns, "looped")
        .await
        .into_iter()
        .filter(|(r, _)| r == "RevocationQuotaExceeded")
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    // The quota is per identity: another one in the namespace is still revoked.
    let out = nhi_ok(&["revoke", "other", "-n", ns, "--timeout", "20s"]);
    assert!(out.contains("revoked serials:"), "{out}");
    // An identity whose quota a loop spent is still deletable: its last certificate is revoked
    // (a deletion is held to its namespace's quota, not its own) and it goes.
    mis.delete("looped", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(15), "looped deleted", || async {
        mis.get_opt("looped").await.ok()?.is_none().then_some(())
    })
    .await;
    wait_for(
        Duration::from_secs(10),
        "its last serial on the CRL",
        || async {
            published_crl_serials(client, ns)
                .await
                .filter(|s| s.contains(&serial))
        },
    )
    .await;
    // (A request the operator looks at again before its cache shows the refusal is refused
    // again: at least one refusal per request.)
    let metrics = env.op.get("/metrics").await.unwrap().1;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("nhi_revocations_refused_total{reason=\"RevocationQuotaExceeded\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        refused >= 3,
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("revocation"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
