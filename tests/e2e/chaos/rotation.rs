//! Chaos at a CA rotation: the operator SIGKILLed at random moments from the rotation's request
//! to its end (publishing the next root, switching, re-issuing every identity). It must finish:
//! every identity Ready under the new CA, the bundle the rotation's one or two roots, the
//! invariants whole.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Scale, all_ready, check_invariants, create_identities, kill_repeatedly, scale};
use crate::support::*;
use k8s_openapi::api::core::v1::Secret;

/// The DER of the first certificate in a PEM text.
fn first_der(pem_text: &str) -> Vec<u8> {
    pem::parse_many(pem_text)
        .expect("PEM")
        .first()
        .expect("a certificate")
        .contents()
        .to_vec()
}

/// Whether the leaf certificate in `secret` is signed by the CA certificate `ca_der`.
fn signed_by(secret: &Secret, ca_der: &[u8]) -> bool {
    let leaf_der = first_der(&secret_text(secret, "tls.crt"));
    let (_, leaf) = X509Certificate::from_der(&leaf_der).expect("a leaf certificate");
    let (_, ca) = X509Certificate::from_der(ca_der).expect("the CA certificate");
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

#[tokio::test]
async fn sigkill_during_a_ca_rotation_loses_nothing() {
    let Scale { identities, kills } = scale();
    let identities = identities / 2;
    // A rotation whose steps take seconds: publication, re-issues spread over 6 s, the old root
    // retired once no certificate it signed can be unexpired (30 s certificates, renewed at
    // about 20 s: renewals run through the rotation too).
    let mut env = OperatorNamespace::start(
        "chaosca",
        &[
            "--ca-rotation-propagation",
            "3s",
            "--ca-rotation-spread",
            "6s",
            "--default-ttl",
            "30s",
            "--min-ttl",
            "10s",
            "--max-ttl",
            "30s",
        ],
    )
    .await;
    let (client, ns) = (env.client.clone(), env.ns.clone());
    let api = env.identities();
    create_identities(&api, "k", identities).await;
    all_ready(&api, identities).await;
    let secrets: Api<Secret> = env.secrets();
    let old_ca = first_der(&secret_text(
        &secrets.get("nhi-ca").await.unwrap(),
        "tls.crt",
    ));

    secrets
        .patch(
            "nhi-ca",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"nhi.dev/rotate-ca": "chaos-1"}}})),
        )
        .await
        .expect("request a CA rotation");
    let requested = Instant::now();
    // Kills 0.3 to 2.5 s apart: across the publication, the switch and the re-issues.
    let last_kill = kill_repeatedly(&mut env.op, kills.max(4), 2500).await;

    // Finished: the rotation recorded complete, every identity Ready under the new CA.
    let new_ca = wait_for(
        Duration::from_secs(180),
        "the rotation complete, every identity re-issued under the new CA",
        || async {
            let ca = secrets.get("nhi-ca").await.ok()?;
            let annotations = ca.metadata.annotations.clone().unwrap_or_default();
            let done = annotations.contains_key("nhi.dev/ca-rotation-completed-at")
                && !annotations.contains_key("nhi.dev/ca-rotation-phase");
            let new_ca = first_der(&secret_text(&ca, "tls.crt"));
            if !done || new_ca == old_ca {
                return None;
            }
            let mis = api.list(&ListParams::default()).await.ok()?.items;
            let ready = mis.len() == identities && mis.iter().all(is_ready);
            let under_new = secrets
                .list(&ListParams::default().labels("nhi.dev/identity"))
                .await
                .ok()?
                .items
                .iter()
                .all(|s| signed_by(s, &new_ca));
            (ready && under_new).then_some(new_ca)
        },
    )
    .await;
    eprintln!(
        "chaos: CA rotation over {identities} identities under {} kills: complete {:?} after the request, {:?} after the last kill",
        kills.max(4),
        requested.elapsed(),
        last_kill.elapsed()
    );
    // The old root is retired once no certificate it signed can be unexpired: the bundle is
    // the new root alone.
    wait_for(
        Duration::from_secs(30),
        "the new CA alone in the published bundle",
        || async {
            let (bundle, _) = trust_documents(&client, &ns).await?;
            let roots: Vec<Vec<u8>> = pem::parse_many(&bundle)
                .ok()?
                .iter()
                .map(|p| p.contents().to_vec())
                .collect();
            (roots == [new_ca.clone()]).then_some(())
        },
    )
    .await;
    check_invariants(&client, &ns, &BTreeMap::new(), &env.op.log_text()).await;
}
