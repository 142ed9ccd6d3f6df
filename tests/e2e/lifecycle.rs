//! Lifecycle governance against the local control plane: workload lapse, owner-reference garbage
//! collection, review lapse and suspension, the published CRL, and restarts in between.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::*;
use nhi_operator::api::MachineIdentity;
use nhi_operator::verify::{
    Purpose, Revocation, RevocationList, TrustBundle, VerifyError, verify_identity,
};

async fn gone<K>(api: &Api<K>, name: &str, timeout: Duration, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    wait_for(timeout, what, || async {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

async fn serial(api: &Api<MachineIdentity>, name: &str) -> String {
    let mi = wait_ready(api, name, Duration::from_secs(10)).await;
    mi.status.unwrap().serial_number.unwrap()
}

#[tokio::test]
async fn a_missing_workload_past_its_grace_period_is_revoked_and_deleted_and_one_that_returns_is_kept()
 {
    let env = OperatorNamespace::start("lapse", &[]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let deployments: Api<Deployment> = env.api();
    for d in ["web", "api"] {
        deployments
            .create(&PostParams::default(), &deployment_object(d))
            .await
            .unwrap();
    }
    let api = env.identities();
    let make = |name: &str, workload: &str, grace: &str| {
        identity(
            name,
            json!({"owner": {"team": "web"}, "secretName": format!("{name}-identity"),
                   "workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload,
                                   "gracePeriod": grace}}),
        )
    };
    api.create(&PostParams::default(), &make("web", "web", "3s"))
        .await
        .unwrap();
    api.create(&PostParams::default(), &make("api", "api", "1h"))
        .await
        .unwrap();
    let web_serial = serial(&api, "web").await;
    let api_serial = serial(&api, "api").await;
    let web = wait_for(Duration::from_secs(10), "WorkloadFound=True", || async {
        let mi = api.get("web").await.ok()?;
        condition(&mi, "WorkloadFound").filter(|c| c.status == "True")?;
        Some(mi)
    })
    .await;
    assert!(
        web.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"nhi.dev/revoke-certificates".to_string())
    );

    let deleted = Instant::now();
    for d in ["web", "api"] {
        deployments
            .delete(d, &DeleteParams::default())
            .await
            .unwrap();
    }
    // Within the grace period: reported, not acted on.
    let missing = wait_for(Duration::from_secs(5), "WorkloadFound=False", || async {
        let mi = api.get("api").await.ok()?;
        condition(&mi, "WorkloadFound")
            .filter(|c| c.status == "False" && c.reason == "WorkloadMissing")
            .cloned()
    })
    .await;
    assert!(
        missing.message.contains("Deployment api"),
        "{}",
        missing.message
    );
    wait_for_event(client, ns, "api", "WorkloadMissing", Duration::from_secs(5)).await;

    // Past web's grace: revoked, published, deleted with its Secret.
    let took = wait_for_revoked(client, ns, &web_serial, Duration::from_secs(15)).await;
    eprintln!(
        "Deployment deleted -> serial on the published CRL: {:?} (grace 3s)",
        deleted.elapsed()
    );
    let _ = took;
    gone(&api, "web", Duration::from_secs(10), "identity web deleted").await;
    let secrets = env.secrets();
    // Collected by kube-controller-manager's garbage collector, which learns of a new resource
    // type only at its discovery resync (30 s) on a control plane just started.
    gone(
        &secrets,
        "web-identity",
        Duration::from_secs(40),
        "Secret web-identity collected",
    )
    .await;
    let why = wait_for_event(client, ns, "web", "WorkloadLapsed", Duration::from_secs(5)).await;
    assert!(
        why.contains("Deployment web") && why.contains(&web_serial),
        "{why}"
    );

    // api's workload comes back within its grace: found again, nothing revoked, same certificate.
    deployments
        .create(&PostParams::default(), &deployment_object("api"))
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "api WorkloadFound=True again",
        || async {
            let mi = api.get("api").await.ok()?;
            condition(&mi, "WorkloadFound")
                .filter(|c| c.status == "True")
                .map(|_| ())
        },
    )
    .await;
    // Seen the Deployment and done with it: whatever it decided is written by now.
    env.op.settle(Controller::Identities).await;
    let (_, crl) = trust_documents(client, ns).await.unwrap();
    assert!(!crl_serials(&crl).contains(&api_serial));
    assert_eq!(serial(&api, "api").await, api_serial);
}

#[tokio::test]
async fn garbage_collection_of_the_owner_revokes_the_identity() {
    let env = OperatorNamespace::start("gc", &[]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let owner = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let api = env.identities();
    let mut mi = identity(
        "owned",
        json!({"owner": {"team": "ci"}, "secretName": "owned-identity"}),
    );
    mi.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().unwrap(),
            ..Default::default()
        },
    ]);
    api.create(&PostParams::default(), &mi).await.unwrap();
    let serial = serial(&api, "owned").await;
    let deleted = Instant::now();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    wait_for_revoked(client, ns, &serial, Duration::from_secs(60)).await;
    eprintln!(
        "owner deleted -> serial on the CRL (through kube-controller-manager's GC): {:?}",
        deleted.elapsed()
    );
    gone(&api, "owned", Duration::from_secs(30), "identity collected").await;
    let note = wait_for_event(client, ns, "owned", "Revoked", Duration::from_secs(5)).await;
    assert!(note.contains(&serial), "{note}");
}

#[tokio::test]
async fn an_overdue_review_suspends_the_identity_until_it_is_reviewed_again() {
    let env = OperatorNamespace::start("review", &[]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let api = env.identities();
    let secrets = env.secrets();
    env.create_identity("batch",
            json!({"owner": {"team": "data"}, "secretName": "batch-identity", "reviewBy": today_plus(5)})).await;
    let first = serial(&api, "batch").await;
    // Within the 14-day warning window: due, and said.
    let due = wait_for(Duration::from_secs(5), "ReviewDue=True", || async {
        let mi = api.get("batch").await.ok()?;
        condition(&mi, "ReviewDue")
            .filter(|c| c.status == "True")
            .cloned()
    })
    .await;
    assert_eq!(due.reason, "ReviewDue");
    wait_for_event(client, ns, "batch", "ReviewDue", Duration::from_secs(5)).await;
    let leaf_pem = secret_text(&secrets.get("batch-identity").await.unwrap(), "tls.crt");

    // The review date passes.
    api.patch(
        "batch",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"reviewBy": today_plus(-1)}})),
    )
    .await
    .unwrap();
    let suspended = wait_for(
        Duration::from_secs(10),
        "Ready=False ReviewOverdue",
        || async {
            let mi = api.get("batch").await.ok()?;
            condition(&mi, "Ready")
                .filter(|c| c.status == "False" && c.reason == "ReviewOverdue")?;
            Some(mi)
        },
    )
    .await;
    let took = wait_for_revoked(client, ns, &first, Duration::from_secs(5)).await;
    eprintln!("review lapsed -> serial on the CRL within {took:?} of Ready=False");
    let revocation = suspended
        .status
        .unwrap()
        .last_revocation
        .expect("lastRevocation");
    assert_eq!(revocation.reason, "ReviewOverdue");
    assert!(revocation.serial_numbers.contains(&first));
    let secret = secrets.get("batch-identity").await.unwrap();
    assert!(
        secret_text(&secret, "tls.key").is_empty(),
        "the key is removed"
    );
    assert!(!secret_text(&secret, "identity.pem").contains("PRIVATE KEY"));
    assert!(
        !secret_text(&secret, "ca.crt").is_empty(),
        "the trust bundle stays"
    );
    wait_for_event(client, ns, "batch", "Suspended", Duration::from_secs(5)).await;

    // The published CRL makes the verification library refuse the suspended certificate.
    let (ca, crl) = trust_documents(client, ns).await.unwrap();
    let chain = nhi_operator::verify::certificates_from_pem(&leaf_pem).unwrap();
    let trust = TrustBundle::from_pem(&ca).unwrap();
    let list = RevocationList::from_pem(&crl).unwrap();
    let now = time::OffsetDateTime::now_utc();
    assert_eq!(
        verify_identity(
            &chain,
            &trust,
            Revocation::Check(&list),
            Purpose::Client,
            now
        )
        .unwrap_err(),
        VerifyError::Revoked
    );
    assert!(
        verify_identity(&chain, &trust, Revocation::NotChecked, Purpose::Client, now).is_ok(),
        "valid but for the CRL"
    );
    // The same CRL is served over HTTP.
    let (code, body) = env.op.get("/crl.pem").await.expect("HTTP");
    assert_eq!(code, 200);
    assert_eq!(crl_serials(&body), crl_serials(&crl));

    // No renewal while suspended: a change that makes the operator look again (an annotation)
    // issues nothing, once it has looked (a reconcile begun after the change has ended).
    let before = env.op.settle(Controller::Identities).await;
    let secret_version = secrets
        .get("batch-identity")
        .await
        .unwrap()
        .metadata
        .resource_version;
    api.patch(
        "batch",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"touched": "1"}}})),
    )
    .await
    .unwrap();
    env.op
        .wait_reconciled_since(Controller::Identities, before)
        .await;
    let still = api.get("batch").await.unwrap();
    assert!(!is_ready(&still));
    assert_eq!(
        still.status.unwrap().serial_number.as_deref(),
        Some(first.as_str())
    );
    let secret = secrets.get("batch-identity").await.unwrap();
    assert!(secret_text(&secret, "tls.key").is_empty());
    assert_eq!(
        secret.metadata.resource_version, secret_version,
        "the Secret was written while suspended"
    );

    // Reviewed again: a new certificate.
    api.patch(
        "batch",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"reviewBy": today_plus(90)}})),
    )
    .await
    .unwrap();
    let back = serial(&api, "batch").await;
    assert_ne!(back, first);
}

#[tokio::test]
async fn a_restart_between_recording_and_publishing_loses_no_revocation() {
    // Publication of new revocations waits 60 s: the operator is killed in between.
    let mut env = OperatorNamespace::start("restart", &["--debug-publish-delay", "60s"]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let api = env.identities();
    for name in ["keep", "drop"] {
        env.create_identity(
            name,
            json!({"owner": {"team": "t"}, "secretName": format!("{name}-identity")}),
        )
        .await;
    }
    let dropped = serial(&api, "drop").await;
    serial(&api, "keep").await;
    wait_for(Duration::from_secs(20), "the first CRL published", || {
        trust_documents(client, ns)
    })
    .await;
    api.delete("drop", &DeleteParams::default()).await.unwrap();
    // Recorded (the deletion completes: the finalizer waits for the record, not the CRL) ...
    let record: Api<ConfigMap> = env.api();
    wait_for(
        Duration::from_secs(10),
        "the serial in the revocation record",
        || async {
            let cm = record.get("nhi-revocations").await.ok()?;
            let gz = cm.binary_data?.get("revoked.gz")?.0.clone();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
                .ok()?;
            text.contains(&dropped).then_some(())
        },
    )
    .await;
    gone(
        &api,
        "drop",
        Duration::from_secs(10),
        "identity deleted once recorded",
    )
    .await;
    // ... but not published yet: the operator dies now.
    let (_, crl) = trust_documents(client, ns).await.unwrap();
    assert!(
        !crl_serials(&crl).contains(&dropped),
        "published before the restart: the test proves nothing"
    );
    env.op.kill();
    env.op = Operator::start(ns, &[]);
    let took = wait_for_revoked(client, ns, &dropped, Duration::from_secs(20)).await;
    eprintln!("after the restart the serial was published in {took:?}");
}

#[tokio::test]
async fn trust_configmaps_follow_the_namespaces_with_identities_and_are_put_right() {
    let env = OperatorNamespace::start("trust", &[]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    assert!(
        trust_documents(client, ns).await.is_none(),
        "no identities, no trust ConfigMap"
    );
    // An identity that never gets a certificate (its Secret name is taken), so nothing is revoked.
    let secrets = env.secrets();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "taken"}})).unwrap(),
        )
        .await
        .unwrap();
    let api = env.identities();
    env.create_identity(
        "blocked",
        json!({"owner": {"team": "t"}, "secretName": "taken"}),
    )
    .await;
    let (ca, crl) = wait_for(Duration::from_secs(10), "nhi-trust created", || {
        trust_documents(client, ns)
    })
    .await;
    assert!(ca.contains("BEGIN CERTIFICATE") && crl.contains("BEGIN X509 CRL"));
    let (code, body) = env.op.get("/ca.pem").await.unwrap();
    assert_eq!((code, body), (200, ca.clone()));
    // Someone edits it: put right.
    cms.patch(
        "nhi-trust",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"crl.pem": "tampered"}})),
    )
    .await
    .unwrap();
    wait_for(Duration::from_secs(10), "nhi-trust restored", || async {
        let (_, c) = trust_documents(client, ns).await?;
        (c == crl).then_some(())
    })
    .await;
    // The last identity goes, with nothing revoked: the ConfigMap goes too.
    api.delete("blocked", &DeleteParams::default())
        .await
        .unwrap();
    gone(
        &cms,
        "nhi-trust",
        Duration::from_secs(10),
        "nhi-trust removed",
    )
    .await;
}

#[tokio::test]
async fn certificates_carrying_a_withdrawn_grant_are_revoked() {
    let env = OperatorNamespace::start("withdraw", &[]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let api = env.identities();
    let ents = env.entitlements();
    env.create_identity(
        "checkout",
        json!({"owner": {"team": "shop"}, "secretName": "checkout-identity"}),
    )
    .await;
    env.create_entitlement(
        "checkout-pays",
        json!({"subjects": {"names": ["checkout"]}, "grants": ["payments.process"],
               "justification": "PAY-7"}),
    )
    .await;
    let granted = wait_for(
        Duration::from_secs(10),
        "the grant in the certificate",
        || async {
            let mi = api.get("checkout").await.ok()?;
            let status = mi.status.clone()?;
            (is_ready(&mi) && status.entitlements == vec!["payments.process".to_string()])
                .then_some(status.serial_number?)
        },
    )
    .await;
    ents.delete("checkout-pays", &DeleteParams::default())
        .await
        .unwrap();
    let took = wait_for_revoked(client, ns, &granted, Duration::from_secs(10)).await;
    eprintln!("Entitlement deleted -> the certificate carrying its grant on the CRL: {took:?}");
    let mi = wait_ready(&api, "checkout", Duration::from_secs(5)).await;
    let status = mi.status.unwrap();
    assert!(status.entitlements.is_empty());
    assert_ne!(
        status.serial_number.as_deref(),
        Some(granted.as_str()),
        "a new certificate without the grant"
    );
    let (_, crl) = trust_documents(client, ns).await.unwrap();
    assert!(
        !crl_serials(&crl).contains(status.serial_number.as_ref().unwrap()),
        "the new one stays valid"
    );
    wait_for_event(
        client,
        ns,
        "checkout",
        "GrantWithdrawn",
        Duration::from_secs(5),
    )
    .await;
}

/// An immutable ConfigMap named like the revocation record: what a broken apiserver, a quota or
/// a policy would do to the operator's writes.
async fn unwritable_record(namespace: &TestNamespace) {
    let cms: Api<ConfigMap> = namespace.api();
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "nhi-revocations"}, "immutable": true,
                                       "data": {"revoked": "crlNumber 0\n"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_deletion_whose_revocation_cannot_be_recorded_waits_showing_why_and_completes_once_it_can()
 {
    let namespace = TestNamespace::create(&client().await, "unrecorded").await;
    unwritable_record(&namespace).await;
    let env = OperatorNamespace::start_in(namespace, &[]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let api = env.identities();
    env.create_identity(
        "held",
        json!({"owner": {"team": "t"}, "secretName": "held-identity"}),
    )
    .await;
    let serial = serial(&api, "held").await;
    api.delete("held", &DeleteParams::default()).await.unwrap();
    wait_for(
        Duration::from_secs(10),
        "Ready=False RevocationFailed",
        || async {
            let mi = api.get_opt("held").await.ok()??;
            condition(&mi, "Ready")
                .filter(|c| c.reason == "RevocationFailed")
                .cloned()
        },
    )
    .await;
    // The operator has tried again (a positive sign), and still holds the deletion.
    wait_for(
        Duration::from_secs(30),
        "three failed attempts at the revocation",
        || async {
            let metrics = env.op.get("/metrics").await?.1;
            let failures = metrics
                .lines()
                .find_map(|l| l.strip_prefix("nhi_failures_total{reason=\"RevocationFailed\"} "))?
                .trim()
                .parse::<u64>()
                .ok()?;
            (failures >= 3).then_some(())
        },
    )
    .await;
    assert!(
        api.get_opt("held").await.unwrap().is_some(),
        "let go without a revocation"
    );
    let warnings = events_for(client, ns, "held")
        .await
        .into_iter()
        .filter(|(r, _)| r == "RevocationFailed")
        .count();
    assert_eq!(warnings, 1, "one Warning, not one per attempt");
    // Once the record can be written, the deletion completes with the serial on the CRL.
    let cms: Api<ConfigMap> = env.api();
    cms.delete("nhi-revocations", &DeleteParams::default())
        .await
        .unwrap();
    gone(
        &api,
        "held",
        Duration::from_secs(45),
        "identity deleted once its revocation is recorded",
    )
    .await;
    wait_for(Duration::from_secs(10), "the serial on the CRL", || async {
        let (_, crl) = trust_documents(client, ns).await?;
        crl_serials(&crl).contains(&serial).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_revocation_that_cannot_be_recorded_is_given_up_only_past_a_finalizer_timeout_set_on_purpose()
 {
    let namespace = TestNamespace::create(&client().await, "abandon").await;
    unwritable_record(&namespace).await;
    let env = OperatorNamespace::start_in(namespace, &["--finalizer-timeout", "10s"]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let api = env.identities();
    env.create_identity(
        "stuck",
        json!({"owner": {"team": "t"}, "secretName": "stuck-identity"}),
    )
    .await;
    let serial = serial(&api, "stuck").await;
    let deleted = Instant::now();
    api.delete("stuck", &DeleteParams::default()).await.unwrap();
    // Said while it waits: a condition and an Event ...
    let failing = wait_for(
        Duration::from_secs(10),
        "Ready=False RevocationFailed",
        || async {
            let mi = api.get_opt("stuck").await.ok()??;
            condition(&mi, "Ready")
                .filter(|c| c.reason == "RevocationFailed")
                .cloned()
        },
    )
    .await;
    assert!(
        failing.message.contains("revocation"),
        "{}",
        failing.message
    );
    wait_for_event(
        client,
        ns,
        "stuck",
        "RevocationFailed",
        Duration::from_secs(5),
    )
    .await;
    // ... and let go after the timeout, saying so.
    gone(
        &api,
        "stuck",
        Duration::from_secs(30),
        "identity let go after the finalizer timeout",
    )
    .await;
    let waited = deleted.elapsed();
    assert!(
        waited >= Duration::from_secs(10),
        "let go before the timeout: {waited:?}"
    );
    let why = wait_for_event(
        client,
        ns,
        "stuck",
        "RevocationAbandoned",
        Duration::from_secs(5),
    )
    .await;
    assert!(why.contains("stay valid until they expire"), "{why}");
    eprintln!(
        "unrecordable revocation: identity let go after {waited:?} (timeout 10s), serial {serial} not revoked"
    );
}

#[tokio::test]
async fn an_overdue_review_with_delete_revokes_and_deletes_the_identity() {
    let env = OperatorNamespace::start("review-delete", &[]).await;
    let (client, ns) = (&env.client, env.ns.as_str());
    let api = env.identities();
    // A second identity keeps the namespace's trust ConfigMap while the first goes.
    for (name, review) in [("nightly", today_plus(30)), ("keeper", today_plus(90))] {
        env.create_identity(
            name,
            json!({"owner": {"team": "data"}, "secretName": format!("{name}-identity"),
                   "reviewBy": review, "onReviewLapse": "Delete"}),
        )
        .await;
    }
    let serial = serial(&api, "nightly").await;
    api.patch(
        "nightly",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"reviewBy": today_plus(-1)}})),
    )
    .await
    .unwrap();
    wait_for_revoked(client, ns, &serial, Duration::from_secs(10)).await;
    gone(
        &api,
        "nightly",
        Duration::from_secs(10),
        "identity nightly deleted",
    )
    .await;
    // The retirement says why, in its own Event (beside the ReviewDue condition's ReviewOverdue).
    let why = wait_for_event(
        client,
        ns,
        "nightly",
        "ReviewLapsed",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        why.contains("onReviewLapse is Delete") && why.contains(&serial),
        "{why}"
    );
    assert!(
        is_ready(&api.get("keeper").await.unwrap()),
        "the other identity is untouched"
    );
}

#[tokio::test]
async fn identities_find_their_workload_of_every_kind_the_chart_lists() {
    // One object of each workload kind the Helm chart lets the operator list and watch
    // (lifecycle.workloadKinds; nothing runs: suspended or scaled to nothing, and there is no
    // kubelet), and an identity serving each.
    let env = OperatorNamespace::start("kinds", &[]).await;
    let container = json!([{"name": "c", "image": "example.invalid/app:1"}]);
    let pod = |name: &str| {
        json!({"metadata": {"labels": {"app": name}},
               "spec": {"containers": container, "restartPolicy": "Always"}})
    };
    let job_pod = json!({"spec": {"containers": container, "restartPolicy": "Never"}});
    let selector = |name: &str| json!({"matchLabels": {"app": name}});
    let kinds = [
        (
            "apps/v1",
            "Deployment",
            json!({"replicas": 0, "selector": selector("deployment"),
                   "template": pod("deployment")}),
        ),
        (
            "apps/v1",
            "StatefulSet",
            json!({"replicas": 0, "selector": selector("statefulset"),
                   "serviceName": "statefulset",
                   "template": pod("statefulset")}),
        ),
        (
            "apps/v1",
            "DaemonSet",
            json!({"selector": selector("daemonset"),
                   "template": pod("daemonset")}),
        ),
        (
            "batch/v1",
            "Job",
            json!({"suspend": true, "template": job_pod}),
        ),
        (
            "batch/v1",
            "CronJob",
            json!({"schedule": "0 0 1 1 *", "suspend": true,
                   "jobTemplate": {"spec": {"template": job_pod}}}),
        ),
        ("v1", "ServiceAccount", serde_json::Value::Null),
    ];
    for (api_version, kind, spec) in &kinds {
        let name = kind.to_lowercase();
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let (resource, _) = kube::discovery::pinned_kind(&env.client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("{kind} is served: {e}"));
        let mut object = json!({"apiVersion": api_version, "kind": kind,
                                "metadata": {"name": name}});
        if !spec.is_null() {
            object["spec"] = spec.clone();
        }
        Api::<kube::api::DynamicObject>::namespaced_with(env.client.clone(), &env.ns, &resource)
            .create(
                &PostParams::default(),
                &serde_json::from_value(object).unwrap(),
            )
            .await
            .unwrap_or_else(|e| panic!("create {kind} {name}: {e}"));
        env.create_identity(
            &format!("{name}-identity"),
            json!({"owner": {"team": "t"}, "secretName": format!("{name}-identity"),
                   "workloadRef": {"apiVersion": api_version, "kind": kind, "name": name}}),
        )
        .await;
    }
    // Each identity sees its workload: a kind the operator may not list and watch would leave
    // it WorkloadFound=Unknown (WorkloadWatchFailing) instead.
    let api = env.identities();
    for (_, kind, _) in &kinds {
        let name = format!("{}-identity", kind.to_lowercase());
        let found = wait_for(
            Duration::from_secs(15),
            &format!("{name}: WorkloadFound=True"),
            || async {
                let mi = api.get(&name).await.ok()?;
                condition(&mi, "WorkloadFound")
                    .filter(|c| c.status == "True")
                    .cloned()
            },
        )
        .await;
        assert!(found.message.contains(kind), "{kind}: {}", found.message);
    }
}
