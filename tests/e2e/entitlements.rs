//! Entitlements end to end: grants carried in certificates, an example relying service deciding
//! over real mTLS, re-issue on every change, just-in-time grants, thumbprint bindings, admission.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::relying::*;
use crate::support::*;
use nhi_operator::verify::{
    Purpose, Revocation, TrustBundle, VerifiedIdentity, certificates_from_pem, verify_identity,
};

/// Verifies the Secret's certificate offline with the verification library and returns what it
/// says.
fn verified(secret: &Secret) -> VerifiedIdentity {
    let chain = certificates_from_pem(&secret_text(secret, "tls.crt")).unwrap();
    let trust = TrustBundle::from_pem(&secret_text(secret, "ca.crt")).unwrap();
    verify_identity(
        &chain,
        &trust,
        Revocation::NotChecked,
        Purpose::Client,
        OffsetDateTime::now_utc(),
    )
    .expect("the identity certificate verifies")
}

/// Waits until the identity's Secret holds a verifiable certificate whose grants satisfy `want`.
async fn wait_for_grants(
    secrets: &Api<Secret>,
    name: &str,
    timeout: Duration,
    what: &str,
    want: impl Fn(&VerifiedIdentity) -> bool,
) -> (Secret, VerifiedIdentity) {
    wait_for(timeout, what, || async {
        let s = secrets.get_opt(name).await.ok().flatten()?;
        let chain = certificates_from_pem(&secret_text(&s, "tls.crt")).ok()?;
        let trust = TrustBundle::from_pem(&secret_text(&s, "ca.crt")).ok()?;
        let v = verify_identity(
            &chain,
            &trust,
            Revocation::NotChecked,
            Purpose::Client,
            OffsetDateTime::now_utc(),
        )
        .ok()?;
        want(&v).then_some((s, v))
    })
    .await
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.replace_nanosecond(0).unwrap().format(&Rfc3339).unwrap()
}

#[tokio::test]
async fn a_granted_identity_is_authorized_over_mtls_until_the_entitlement_goes() {
    let env = OperatorNamespace::start("ent", &[]).await;
    let ns = env.ns.as_str();
    let mis = env.identities();
    let ents = env.entitlements();
    let secrets = env.secrets();
    let server_name = format!("payments-api.{}.svc", ns);
    for (name, spec) in [
        (
            "payments-api",
            json!({"owner": {"team": "payments"}, "secretName": "payments-api-identity",
                   "certificate": {"dnsNames": [server_name], "usages": ["server"]}}),
        ),
        (
            "checkout",
            json!({"owner": {"team": "shop"}, "secretName": "checkout-identity",
                   "certificate": {"usages": ["client"]}, "attributes": {"project": "shop"}}),
        ),
        (
            "browser",
            json!({"owner": {"team": "shop"}, "secretName": "browser-identity",
                   "certificate": {"usages": ["client"]}}),
        ),
    ] {
        env.create_identity(name, spec).await;
    }
    for name in ["payments-api", "checkout", "browser"] {
        wait_ready(&mis, name, Duration::from_secs(10)).await;
    }
    let before_grant = serial_of(&secrets.get("checkout-identity").await.unwrap()).unwrap();

    let created = Instant::now();
    env.create_entitlement(
        "checkout-pays",
        json!({"subjects": {"names": ["checkout"]}, "grants": ["payments.process"],
               "justification": "PAY-7: checkout submits card payments"}),
    )
    .await;
    let (checkout, claims) = wait_for_grants(
        &secrets,
        "checkout-identity",
        Duration::from_secs(5),
        "checkout's certificate to carry payments.process",
        |v| v.has_grant("payments.process"),
    )
    .await;
    eprintln!(
        "Entitlement created -> certificate carrying the grant: {:?}",
        created.elapsed()
    );
    assert_ne!(serial_of(&checkout).unwrap(), before_grant);
    assert_eq!(claims.attributes["project"], "shop");
    assert_eq!(claims.identity.name, "checkout");

    // The entitlement-to-thumbprint map names the certificate in the Secret.
    let leaf = certificates_from_pem(&secret_text(&checkout, "tls.crt")).unwrap()[0].clone();
    let thumbprint = nhi_identity::certificate::thumbprint(leaf.as_ref());
    let bound = wait_for(
        Duration::from_secs(10),
        "the Entitlement to be bound",
        || async {
            let e = ents.get("checkout-pays").await.ok()?;
            let status = e.status.clone()?;
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (ready && status.bindings.first()?.thumbprint_sha256 == thumbprint).then_some(status)
        },
    )
    .await;
    assert_eq!(bound.bound_count, 1);
    assert_eq!(bound.bindings[0].identity, "checkout");
    assert_eq!(bound.bindings[0].serial_number, claims.serial_hex);
    assert_eq!(
        bound.justification.as_deref(),
        Some("PAY-7: checkout submits card payments")
    );
    let mi = mis.get("checkout").await.unwrap();
    assert_eq!(mi.status.unwrap().entitlements, vec!["payments.process"]);

    // The example relying service decides from the client certificate alone.
    let dir = tempfile::tempdir().unwrap();
    let (server_dir, checkout_dir, browser_dir) = (
        dir.path().join("server"),
        dir.path().join("checkout"),
        dir.path().join("browser"),
    );
    project(
        &secrets.get("payments-api-identity").await.unwrap(),
        &server_dir,
    );
    project(&checkout, &checkout_dir);
    project(
        &secrets.get("browser-identity").await.unwrap(),
        &browser_dir,
    );
    let service = RelyingService::start(&server_dir, &["/payments=payments.process"], &[ns]);
    assert_eq!(
        service.status_for(&server_name, &checkout_dir, "/payments"),
        200
    );
    assert_eq!(
        service.status_for(&server_name, &browser_dir, "/payments"),
        403
    );
    assert_eq!(
        service.status_for(&server_name, &checkout_dir, "/elsewhere"),
        404
    );

    // Deleting the Entitlement re-issues checkout, and only checkout, without the grant.
    let unrelated = [
        serial_of(&secrets.get("payments-api-identity").await.unwrap()).unwrap(),
        serial_of(&secrets.get("browser-identity").await.unwrap()).unwrap(),
    ];
    let granted_serial = serial_of(&checkout).unwrap();
    let deleted = Instant::now();
    ents.delete("checkout-pays", &DeleteParams::default())
        .await
        .unwrap();
    let reissued = wait_for_reissue(
        &secrets,
        "checkout-identity",
        &granted_serial,
        Duration::from_secs(5),
        "checkout to be re-issued after the Entitlement was deleted",
    )
    .await;
    eprintln!(
        "Entitlement deleted -> re-issued without the grant: {:?}",
        deleted.elapsed()
    );
    assert!(verified(&reissued).grants.is_empty());
    project(&reissued, &checkout_dir);
    assert_eq!(
        service.status_for(&server_name, &checkout_dir, "/payments"),
        403
    );
    // The operator has finished with the deletion: checkout's status names the new certificate
    // (written at the end of its reconcile), and every reconcile begun since has ended.
    let reissued_serial = serial_of(&reissued).unwrap();
    wait_for(
        Duration::from_secs(5),
        "checkout's status to name the new certificate",
        || async {
            let status = mis.get("checkout").await.ok()?.status?;
            (status.serial_number.as_deref() == Some(reissued_serial.as_str())).then_some(())
        },
    )
    .await;
    env.op.settle(Controller::Identities).await;
    let after = [
        serial_of(&secrets.get("payments-api-identity").await.unwrap()).unwrap(),
        serial_of(&secrets.get("browser-identity").await.unwrap()).unwrap(),
    ];
    assert_eq!(
        unrelated, after,
        "identities the Entitlement never selected were re-issued"
    );
    drop(service);
}

#[tokio::test]
async fn a_just_in_time_grant_caps_the_certificate_and_expires_by_itself() {
    let env = OperatorNamespace::start("jit", &[]).await;
    let mis = env.identities();
    let ents = env.entitlements();
    let secrets = env.secrets();
    let mut oncall = identity(
        "oncall-bot",
        json!({"owner": {"team": "sre"}, "secretName": "oncall-bot-identity"}),
    );
    oncall.metadata.labels =
        Some([("subject.nhi.dev/role".to_string(), "oncall".to_string())].into());
    mis.create(&PostParams::default(), &oncall).await.unwrap();
    wait_ready(&mis, "oncall-bot", Duration::from_secs(10)).await;

    // Selected by label, for 25 seconds.
    let expires_at =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::seconds(25);
    env.create_entitlement(
        "break-glass",
        json!({"subjects": {"selector": {"matchLabels": {"subject.nhi.dev/role": "oncall"}}},
               "grants": ["db.admin"], "expiresAt": rfc3339(expires_at),
               "justification": "INC-99: database failover"}),
    )
    .await;
    let (granted, claims) = wait_for_grants(
        &secrets,
        "oncall-bot-identity",
        Duration::from_secs(5),
        "the certificate to carry db.admin",
        |v| v.has_grant("db.admin"),
    )
    .await;
    assert_eq!(
        claims.not_after, expires_at,
        "the certificate must not outlive the grant it carries"
    );
    let granted_serial = serial_of(&granted).unwrap();

    // After expiresAt the identity holds a certificate without the grant, within 5 s.
    let wait = (expires_at - OffsetDateTime::now_utc()).unsigned_abs();
    tokio::time::sleep(wait).await;
    let expired_at = Instant::now();
    let reissued = wait_for_reissue(
        &secrets,
        "oncall-bot-identity",
        &granted_serial,
        Duration::from_secs(5),
        "a certificate without db.admin after expiresAt",
    )
    .await;
    eprintln!(
        "expiresAt -> re-issued without the grant: {:?}",
        expired_at.elapsed()
    );
    let v = verified(&reissued);
    assert!(!v.has_grant("db.admin"));
    assert!(
        v.not_after > expires_at + time::Duration::minutes(30),
        "back to the full TTL"
    );
    let (_, status) = wait_for_entitlement_condition(
        &ents,
        "break-glass",
        "Expired",
        Duration::from_secs(5),
        |c| c.status == "True",
    )
    .await;
    assert!(status.bindings.is_empty());
}

#[tokio::test]
async fn grants_follow_not_before_and_label_changes_within_seconds() {
    let env = OperatorNamespace::start("entlbl", &[]).await;
    let mis = env.identities();
    let ents = env.entitlements();
    let secrets = env.secrets();
    for name in ["batch", "bystander"] {
        env.create_identity(
            name,
            json!({"owner": {"team": "data"}, "secretName": format!("{name}-identity")}),
        )
        .await;
        wait_ready(&mis, name, Duration::from_secs(10)).await;
    }
    let bystander = serial_of(&secrets.get("bystander-identity").await.unwrap()).unwrap();

    // A grant that starts 8 s from now is not in the certificate until then.
    let idle = env.op.settle(Controller::Identities).await;
    let not_before =
        OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + time::Duration::seconds(8);
    env.create_entitlement(
        "nightly-reports",
        json!({"subjects": {"names": ["batch"]}, "grants": ["reports.read"],
               "notBefore": rfc3339(not_before), "justification": "DATA-3: nightly export"}),
    )
    .await;
    let (_, scheduled) = wait_for_entitlement_condition(
        &ents,
        "nightly-reports",
        "Ready",
        Duration::from_secs(5),
        |c| c.reason == "NotYetActive",
    )
    .await;
    assert!(scheduled.bindings.is_empty());
    // The identity controller has looked at batch since (the Entitlement names it).
    env.op
        .wait_reconciled_since(Controller::Identities, idle)
        .await;
    let before = secrets.get("batch-identity").await.unwrap();
    assert!(!verified(&before).has_grant("reports.read"));
    tokio::time::sleep((not_before - OffsetDateTime::now_utc()).unsigned_abs()).await;
    let started = Instant::now();
    wait_for_grants(
        &secrets,
        "batch-identity",
        Duration::from_secs(5),
        "reports.read once notBefore passed",
        |v| v.has_grant("reports.read"),
    )
    .await;
    eprintln!(
        "notBefore -> certificate carrying the grant: {:?}",
        started.elapsed()
    );

    // A label change brings an identity under a selector: re-issued with both grants.
    env.create_entitlement(
        "frontend-catalog",
        json!({"subjects": {"selector": {"matchExpressions": [{"key": "subject.nhi.dev/tier", "operator": "In", "values": ["frontend"]}]}},
               "grants": ["catalog.read"], "justification": "CAT-1: product pages"}),
    )
    .await;
    // The operator's Entitlement cache has it (its controller, fed by the same watch, saw it).
    wait_for_entitlement_observed(&ents, "frontend-catalog", Duration::from_secs(5)).await;
    let labelled = Instant::now();
    mis.patch(
        "batch",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"subject.nhi.dev/tier": "frontend"}}})),
    )
    .await
    .unwrap();
    wait_for_grants(
        &secrets,
        "batch-identity",
        Duration::from_secs(5),
        "catalog.read after the label change",
        |v| v.has_grant("catalog.read") && v.has_grant("reports.read"),
    )
    .await;
    eprintln!(
        "label change -> certificate carrying the grant: {:?}",
        labelled.elapsed()
    );
    // And removing the label takes the grant away again.
    mis.patch(
        "batch",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"subject.nhi.dev/tier": null}}})),
    )
    .await
    .unwrap();
    wait_for_grants(
        &secrets,
        "batch-identity",
        Duration::from_secs(5),
        "catalog.read removed after the label went",
        |v| !v.has_grant("catalog.read") && v.has_grant("reports.read"),
    )
    .await;
    env.op.settle(Controller::Identities).await;
    assert_eq!(
        serial_of(&secrets.get("bystander-identity").await.unwrap()).unwrap(),
        bystander,
        "an identity no Entitlement selects was re-issued"
    );
}

#[tokio::test]
async fn invalid_entitlements_are_rejected_with_a_message() {
    let client = client().await;
    let ns = TestNamespace::create(&client, "entval").await;
    let names = json!({"names": ["a"]});
    let cases = [
        (
            "bad-grant",
            json!({"subjects": names, "grants": ["Payments.Process"], "justification": "j"}),
            "spec.grants[0]",
        ),
        (
            "no-subjects",
            json!({"subjects": {}, "grants": ["a.b"], "justification": "j"}),
            "subjects needs names, a selector, or both",
        ),
        (
            "empty-selector",
            json!({"subjects": {"selector": {}}, "grants": ["a.b"], "justification": "j"}),
            "selector must not be empty",
        ),
        (
            "backwards",
            json!({"subjects": names, "grants": ["a.b"], "justification": "j",
                   "notBefore": "2030-01-02T00:00:00Z", "expiresAt": "2030-01-01T00:00:00Z"}),
            "spec.expiresAt must be after spec.notBefore",
        ),
        (
            "no-justification",
            json!({"subjects": names, "grants": ["a.b"]}),
            "spec.justification: Required value",
        ),
        (
            "no-grants",
            json!({"subjects": names, "grants": [], "justification": "j"}),
            "spec.grants",
        ),
        (
            "not-a-time",
            json!({"subjects": names, "grants": ["a.b"], "justification": "j", "expiresAt": "tomorrow"}),
            "spec.expiresAt",
        ),
    ];
    for (name, spec, expected) in cases {
        let message = rejected(
            &client,
            &ns.name,
            ("Entitlement", "entitlements"),
            name,
            spec,
        )
        .await;
        assert!(
            message.contains(expected),
            "{name}: {message:?} does not contain {expected:?}"
        );
        eprintln!("{name}: {message}");
    }
}

#[tokio::test]
async fn a_revoked_caller_is_refused_once_the_crl_file_changes() {
    // The relying service reads its CRL file again when it changes (as kubelet swaps the mounted
    // nhi-trust ConfigMap): a certificate revoked after it started is refused at the next request.
    let env = OperatorNamespace::start("crlfile", &[]).await;
    let ns = env.ns.as_str();
    let mis = env.identities();
    let secrets = env.secrets();
    let server_name = format!("payments-api.{ns}.svc");
    env.create_identity(
        "payments-api",
        json!({"owner": {"team": "payments"}, "secretName": "payments-api-identity",
               "certificate": {"dnsNames": [server_name], "usages": ["server"]}}),
    )
    .await;
    env.create_identity(
        "checkout",
        json!({"owner": {"team": "shop"}, "secretName": "checkout-identity",
               "certificate": {"usages": ["client"]}}),
    )
    .await;
    env.create_entitlement(
        "checkout-pays",
        json!({"subjects": {"names": ["checkout"]}, "grants": ["payments.process"],
               "justification": "PAY-7"}),
    )
    .await;
    wait_ready(&mis, "payments-api", Duration::from_secs(10)).await;
    let (checkout, _) = wait_for_grants(
        &secrets,
        "checkout-identity",
        Duration::from_secs(10),
        "checkout carrying payments.process",
        |v| v.has_grant("payments.process"),
    )
    .await;
    let old_serial = serial_of(&checkout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    project(
        &secrets.get("payments-api-identity").await.unwrap(),
        &dir.path().join("server"),
    );
    project(&checkout, &dir.path().join("client"));
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(env.client.clone(), ns);
    let published_crl = || async {
        let cm = configmaps.get("nhi-trust").await.ok()?;
        cm.data?.get("crl.pem").cloned()
    };
    let crl_path = dir.path().join("crl.pem");
    let first = wait_for(Duration::from_secs(10), "a published CRL", published_crl).await;
    std::fs::write(&crl_path, &first).unwrap();
    let service = RelyingService::start_with_crl(
        &dir.path().join("server"),
        &["/payments=payments.process"],
        &[],
        Some(&crl_path),
    );
    let client = dir.path().join("client");
    assert_eq!(service.status_for(&server_name, &client, "/payments"), 200);

    // Revoked on request; the CRL file is replaced with the published one naming the serial.
    mis.patch(
        "checkout",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"nhi.dev/revoke-requested": "crl-file-test"}}}),
        ),
    )
    .await
    .unwrap();
    let revoked = wait_for(
        Duration::from_secs(10),
        "the serial on the published CRL",
        || async {
            let crl = published_crl().await?;
            crl_serials(&crl)
                .iter()
                .any(|s| s.trim_start_matches('0') == old_serial.trim_start_matches('0'))
                .then_some(crl)
        },
    )
    .await;
    std::fs::write(&crl_path, &revoked).unwrap();
    // The same connection-less client, its certificate now revoked: refused, without a restart.
    assert_eq!(service.status_for(&server_name, &client, "/payments"), 401);
    // A CRL that cannot be read refuses every caller.
    std::fs::write(&crl_path, "not a CRL").unwrap();
    project(
        &wait_for_reissue(
            &secrets,
            "checkout-identity",
            &old_serial,
            Duration::from_secs(10),
            "checkout re-issued",
        )
        .await,
        &client,
    );
    assert_eq!(service.status_for(&server_name, &client, "/payments"), 401);
}
