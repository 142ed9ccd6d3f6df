//! Issuance, verification, rotation and re-issuance against the local control plane.

use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use rcgen::{KeyPair, PublicKeyData};
use serde_json::json;
use x509_parser::prelude::*;

use crate::support::*;
use nhi_identity::pem_chain::pem_certificates;

/// Checks the Secret's leaf with openssl (an independent verifier) against `ca.crt`, its SANs,
/// and that `tls.key` belongs to it. Returns the leaf's serial (hex).
fn verify_secret(secret: &Secret, spiffe_id: &str, dns: &[&str]) -> String {
    let crt = secret_text(secret, "tls.crt");
    let chain = pem_certificates(&crt).expect("tls.crt is PEM");
    let dir = tempfile::tempdir().unwrap();
    let leaf_path = dir.path().join("leaf.pem");
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(
        &leaf_path,
        nhi_identity::pem_chain::certificate_pem(&chain[0]),
    )
    .unwrap();
    std::fs::write(&ca_path, secret_text(secret, "ca.crt")).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&ca_path)
        .arg(&leaf_path)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl verify failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let san = leaf
        .subject_alternative_name()
        .unwrap()
        .expect("has SANs")
        .value;
    let uris: Vec<&str> = san
        .general_names
        .iter()
        .filter_map(|g| {
            if let GeneralName::URI(u) = g {
                Some(*u)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(uris, vec![spiffe_id]);
    for d in dns {
        assert!(
            san.general_names.contains(&GeneralName::DNSName(d)),
            "missing DNS SAN {d}"
        );
    }
    let key = KeyPair::from_pem(&secret_text(secret, "tls.key")).expect("tls.key parses");
    assert_eq!(
        key.subject_public_key_info(),
        leaf.public_key().raw,
        "tls.key does not match the leaf"
    );
    let identity_pem = secret_text(secret, "identity.pem");
    assert!(identity_pem.starts_with("-----BEGIN PRIVATE KEY-----") && identity_pem.contains(&crt));
    hex::encode(leaf.raw_serial())
}

#[tokio::test]
async fn identity_becomes_ready_within_5s_with_a_verifiable_certificate() {
    let env = OperatorNamespace::start("issue", &["--metrics-per-identity"]).await;
    let api = env.identities();
    let mi = identity(
        "payments-api",
        json!({"owner": {"team": "payments"}, "secretName": "payments-api-identity",
               "certificate": {"dnsNames": ["api.payments.svc", "*.payments.example"]}}),
    );
    let applied = Instant::now();
    api.create(&PostParams::default(), &mi).await.unwrap();
    let ready = wait_ready(&api, "payments-api", Duration::from_secs(5)).await;
    eprintln!("apply to Ready: {:?}", applied.elapsed());

    let out = kubectl()
        .args([
            "wait",
            "--for=condition=Ready",
            "mi/payments-api",
            "-n",
            &env.ns,
            "--timeout=5s",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl wait: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let secrets = env.secrets();
    let secret = secrets.get("payments-api-identity").await.unwrap();
    let spiffe = format!("spiffe://cluster.local/ns/{}/mi/payments-api", env.ns);
    let serial = verify_secret(
        &secret,
        &spiffe,
        &["api.payments.svc", "*.payments.example"],
    );
    let status = ready.status.unwrap();
    assert_eq!(status.spiffe_id.as_deref(), Some(spiffe.as_str()));
    assert_eq!(status.serial_number.as_deref(), Some(serial.as_str()));
    assert_eq!(status.observed_generation, ready.metadata.generation);
    let chain = pem_certificates(&secret_text(&secret, "tls.crt")).unwrap();
    assert_eq!(
        status.thumbprint_sha256.unwrap(),
        nhi_identity::certificate::thumbprint(&chain[0])
    );
    assert!(status.renewal_time.is_some() && status.not_after.is_some());
    // The Secret belongs to the identity (garbage-collected with it) and carries our label.
    let owner = &secret.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "MachineIdentity");
    assert_eq!(owner.controller, Some(true));
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    // No key material in status or Events.
    let status_json =
        serde_json::to_string(&api.get("payments-api").await.unwrap().status).unwrap();
    assert!(!status_json.contains("PRIVATE KEY"));
    let events = kubectl()
        .args(["get", "events", "-n", &env.ns, "-o", "json"])
        .output()
        .unwrap();
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("Issued"), "an Issued event is recorded");
    assert!(!events.contains("PRIVATE KEY"));
    // Metrics count the issuance.
    let (code, metrics) = env.op.get("/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("nhi_certificates_issued_total{reason=\"SecretMissing\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("nhi_certificate_expiry_timestamp_seconds{namespace="));
    assert!(
        metrics.contains("nhi_identities_with_certificate 1"),
        "{metrics}"
    );
    assert_eq!(env.op.get("/livez").await.unwrap().0, 200);

    // Deleting the identity garbage-collects its Secret and its metric series.
    api.delete("payments-api", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "Secret garbage-collected with its identity",
        || async {
            secrets
                .get_opt("payments-api-identity")
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        },
    )
    .await;
    wait_for(Duration::from_secs(5), "expiry series removed", || async {
        let (_, m) = env.op.get("/metrics").await?;
        (!m.contains("name=\"payments-api\"")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn short_lived_certificates_rotate_with_a_new_key_before_expiry() {
    let env =
        OperatorNamespace::start("rotate", &["--min-ttl", "10s", "--default-ttl", "15s"]).await;
    let (api, secrets) = (env.identities(), env.secrets());
    env.create_identity(
        "rot",
        json!({"owner": {"team": "t"}, "secretName": "rot-id"}),
    )
    .await;
    wait_ready(&api, "rot", Duration::from_secs(5)).await;
    let spiffe = format!("spiffe://cluster.local/ns/{}/mi/rot", env.ns);
    let mut seen: Vec<(String, Vec<u8>, ::time::OffsetDateTime)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(45);
    while seen.len() < 3 && Instant::now() < deadline {
        let s = secrets.get("rot-id").await.unwrap();
        let serial = verify_secret(&s, &spiffe, &[]);
        if seen.last().map(|l| &l.0) != Some(&serial) {
            let chain = pem_certificates(&secret_text(&s, "tls.crt")).unwrap();
            let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
            let now = ::time::OffsetDateTime::now_utc();
            if let Some(prev) = seen.last() {
                assert!(
                    now < prev.2,
                    "rotation came after the previous certificate expired"
                );
            }
            seen.push((
                serial,
                leaf.public_key().raw.to_vec(),
                leaf.validity().not_after.to_datetime(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        seen.len() >= 3,
        "expected at least two rotations, saw {} certificates; log:\n{}",
        seen.len(),
        env.op.log_tail()
    );
    for w in seen.windows(2) {
        assert_ne!(w[0].0, w[1].0, "new serial");
        assert_ne!(w[0].1, w[1].1, "new key");
    }
}

#[tokio::test]
async fn deleted_or_corrupted_secret_is_reissued_within_5s() {
    let env = OperatorNamespace::start("reissue", &[]).await;
    let (api, secrets) = (env.identities(), env.secrets());
    env.create_identity("re", json!({"owner": {"team": "t"}, "secretName": "re-id"}))
        .await;
    let first = wait_ready(&api, "re", Duration::from_secs(5))
        .await
        .status
        .unwrap()
        .serial_number
        .unwrap();
    let spiffe = format!("spiffe://cluster.local/ns/{}/mi/re", env.ns);

    secrets
        .delete("re-id", &DeleteParams::default())
        .await
        .unwrap();
    let t = Instant::now();
    let s = wait_for(
        Duration::from_secs(5),
        "re-issued Secret after deletion",
        || async { secrets.get_opt("re-id").await.ok().flatten() },
    )
    .await;
    eprintln!("re-issued after deletion in {:?}", t.elapsed());
    let second = verify_secret(&s, &spiffe, &[]);
    assert_ne!(first, second);

    let corrupt = json!({"data": {"tls.crt": ByteString(b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n".to_vec())}});
    secrets
        .patch("re-id", &PatchParams::default(), &Patch::Merge(&corrupt))
        .await
        .unwrap();
    let t = Instant::now();
    let third = wait_for_reissue(
        &secrets,
        "re-id",
        &second,
        Duration::from_secs(5),
        "re-issued certificate after corruption",
    )
    .await;
    eprintln!("re-issued after corruption in {:?}", t.elapsed());
    verify_secret(&third, &spiffe, &[]);
}

#[tokio::test]
async fn a_changed_spec_is_reissued_and_a_status_change_alone_is_not() {
    let env = OperatorNamespace::start("respec", &[]).await;
    let (api, secrets) = (env.identities(), env.secrets());
    let spec = json!({"owner": {"team": "t"}, "secretName": "rs-id",
        "certificate": {"dnsNames": ["a.example.internal"]}});
    env.create_identity("rs", spec).await;
    let first = wait_ready(&api, "rs", Duration::from_secs(5)).await;
    let first_serial = first.status.unwrap().serial_number.unwrap();
    let spiffe = format!("spiffe://cluster.local/ns/{}/mi/rs", env.ns);

    // A label change (no new generation) triggers a look but no new certificate: once the
    // operator has looked (a reconcile begun after the change has ended), the serial is the same.
    let before = env.op.settle(Controller::Identities).await;
    let label = json!({"metadata": {"labels": {"team": "t"}}});
    api.patch("rs", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    env.op
        .wait_reconciled_since(Controller::Identities, before)
        .await;
    let s = secrets.get("rs-id").await.unwrap();
    assert_eq!(
        verify_secret(&s, &spiffe, &["a.example.internal"]),
        first_serial
    );

    // New DNS names: a new certificate carrying them, within 5 s.
    let change = json!({"spec": {"certificate": {"dnsNames": ["b.example.internal"]}}});
    api.patch("rs", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    let t = Instant::now();
    let s = wait_for_reissue(
        &secrets,
        "rs-id",
        &first_serial,
        Duration::from_secs(5),
        "re-issued for the new DNS names",
    )
    .await;
    eprintln!("re-issued after a spec change in {:?}", t.elapsed());
    verify_secret(&s, &spiffe, &["b.example.internal"]);
    let mi = wait_ready(&api, "rs", Duration::from_secs(5)).await;
    assert_eq!(
        mi.status.unwrap().observed_generation,
        mi.metadata.generation
    );
}

/// An Ed25519 key in the PKCS#8 version 2 form (what earlier versions wrote; OpenSSL 3.0 cannot
/// read it) is re-keyed at once, in the version 1 form every consumer reads.
#[tokio::test]
async fn an_ed25519_key_in_the_old_form_is_rekeyed_at_once() {
    use aws_lc_rs::signature::Ed25519KeyPair;
    let env = OperatorNamespace::start("keyform", &[]).await;
    let (api, secrets) = (env.identities(), env.secrets());
    let spec = json!({"owner": {"team": "t"}, "secretName": "kf-id",
        "certificate": {"keyAlgorithm": "Ed25519", "usages": ["client"]}});
    env.create_identity("kf", spec).await;
    let first = wait_ready(&api, "kf", Duration::from_secs(10)).await;
    let first_serial = first.status.unwrap().serial_number.unwrap();
    let s = secrets.get("kf-id").await.unwrap();
    let v1_pem = secret_text(&s, "tls.key"); // OpenSSL reads it (checked by secret_text)
    // The same key, in the version 2 form, written over the Secret's as an earlier version had.
    let v1_der = ::pem::parse(&v1_pem).unwrap().into_contents();
    let v2_der = Ed25519KeyPair::from_pkcs8(&v1_der)
        .unwrap()
        .to_pkcs8()
        .unwrap();
    assert_ne!(v2_der.as_ref(), v1_der.as_slice(), "a different encoding");
    let v2_pem = ::pem::encode(&::pem::Pem::new("PRIVATE KEY", v2_der.as_ref().to_vec()));
    let crt = secret_text(&s, "tls.crt");
    let data = json!({"data": {
        "tls.key": base64::engine::Engine::encode(&base64::engine::general_purpose::STANDARD, &v2_pem),
        "identity.pem": base64::engine::Engine::encode(
            &base64::engine::general_purpose::STANDARD, format!("{v2_pem}{crt}")),
    }});
    let t = Instant::now();
    secrets
        .patch("kf-id", &PatchParams::default(), &Patch::Merge(&data))
        .await
        .unwrap();
    let s = wait_for_reissue(
        &secrets,
        "kf-id",
        &first_serial,
        Duration::from_secs(10),
        "re-keyed after the old key form was found",
    )
    .await;
    eprintln!("old Ed25519 key form -> re-keyed in {:?}", t.elapsed());
    let key = secret_text(&s, "tls.key");
    assert_ne!(key, v1_pem, "a new key");
    let note = wait_for_event(
        &env.client,
        &env.ns,
        "kf",
        "Reissued",
        Duration::from_secs(5),
    )
    .await;
    assert!(note.contains("(KeyFormat)"), "{note}");
}
