//! Chaos at revocation: the operator SIGKILLed while it revokes half its identities deleted at
//! once; a namespace deleted with every identity in it (the namespace controller deleting them
//! all at once). Nothing acknowledged may miss the CRL, nothing may be issued to an identity
//! once it is gone, nothing may keep the namespace from going.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, ListParams};

use super::{
    CONVERGENCE, Scale, SerialLog, all_ready, check_invariants, create_identities, delete_as_read,
    kill_repeatedly, nothing_issued_after_gone, scale,
};
use crate::support::*;
use nhi_operator::api::MachineIdentity;

#[tokio::test]
async fn sigkill_during_a_mass_revocation_loses_nothing() {
    let Scale { identities, kills } = scale();
    // Each CRL is published 1 s after its revocations are recorded (and their finalizers
    // released): the first kill lands in between.
    let mut env = OperatorNamespace::start("chaosrev", &["--debug-publish-delay", "1s"]).await;
    let (client, ns) = (env.client.clone(), env.ns.clone());
    let api = env.identities();
    create_identities(&api, "r", identities).await;
    all_ready(&api, identities).await;
    let serials = SerialLog::start(&client, &ns).await;

    // Half of them deleted at once, each as read (the serial it held is the one to revoke),
    // while the operator is killed again and again.
    let listed = api.list(&ListParams::default()).await.expect("list").items;
    let victims: Vec<MachineIdentity> = listed.into_iter().step_by(2).collect();
    let held: BTreeMap<String, String> = victims
        .iter()
        .filter_map(|mi| {
            Some((
                mi.metadata.name.clone()?,
                mi.status.as_ref()?.serial_number.clone()?,
            ))
        })
        .collect();
    let deleter_api = api.clone();
    let deleter = tokio::spawn(async move {
        futures::stream::iter(victims)
            .map(|mi| {
                let api = deleter_api.clone();
                async move {
                    let serial = delete_as_read(&api, &mi).await.expect("deleted as read");
                    (mi.metadata.name.unwrap_or_default(), serial)
                }
            })
            .buffer_unordered(32)
            .collect::<BTreeMap<String, String>>()
            .await
    });
    // The first kill: once a revocation is acknowledged (its identity gone), while the CRL
    // does not show it yet.
    let first_gone = wait_for(
        Duration::from_secs(30),
        "a revocation acknowledged",
        || async { serials.gone_names().into_iter().next() },
    )
    .await;
    let (_, crl) = trust_documents(&client, &ns)
        .await
        .expect("trust documents");
    env.op.restart();
    let on_crl = crl_serials(&crl);
    assert!(
        !on_crl.contains(&held[&first_gone]),
        "the first kill was to land between {first_gone}'s recorded revocation and its publication"
    );
    let last_kill = kill_repeatedly(&mut env.op, kills - 1, 900).await;
    let deleted = deleter.await.expect("the deletions");
    assert_eq!(deleted.len(), identities.div_ceil(2));

    all_ready(&api, identities - deleted.len()).await;
    eprintln!(
        "chaos: {} of {identities} identities revoked at once under {kills} kills (the first between a record and its CRL): converged {:?} after the last kill",
        deleted.len(),
        last_kill.elapsed()
    );
    check_invariants(&client, &ns, &deleted, &env.op.log_text()).await;
    nothing_issued_after_gone(&serials, &deleted);
}

#[tokio::test]
async fn a_namespace_deleted_with_all_its_identities_loses_nothing() {
    let identities = scale().identities;
    let client = client().await;
    // The operator's own namespace (CA, revocation record) stays; the tenant's goes.
    let home = TestNamespace::create(&client, "nshome").await;
    let tenant = TestNamespace::create(&client, "nsgone").await;
    let op = Operator::start_named_in(&tenant.name, &home.name, &[], None);
    op.wait_ready(Duration::from_secs(20)).await;
    let api: Api<MachineIdentity> = tenant.api();
    create_identities(&api, "n", identities).await;
    all_ready(&api, identities).await;
    let held: BTreeMap<String, String> = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|mi| Some((mi.metadata.name?, mi.status?.serial_number?)))
        .collect();
    assert_eq!(held.len(), identities);
    let serials = SerialLog::start(&client, &tenant.name).await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let deleted_at = Instant::now();
    namespaces
        .delete(&tenant.name, &DeleteParams::default())
        .await
        .expect("delete the namespace");
    // Gone: every identity's finalizer released once its revocation was recorded, so the
    // namespace controller could finish.
    wait_for(CONVERGENCE, "the namespace gone", || async {
        namespaces
            .get_opt(&tenant.name)
            .await
            .ok()
            .and_then(|ns| ns.is_none().then_some(()))
    })
    .await;
    let gone = deleted_at.elapsed();
    // Every serial the identities held is on the CRL the operator publishes (its /crl.pem: the
    // namespace's own trust ConfigMap went with it).
    let started = Instant::now();
    let missing = || async {
        let (code, crl) = op.get("/crl.pem").await?;
        (code == 200).then_some(())?;
        let on_crl = crl_serials(&crl);
        Some(held.iter().filter(|(_, s)| !on_crl.contains(s)).count())
    };
    while missing().await != Some(0) && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(missing().await, Some(0), "every serial on the CRL");
    eprintln!(
        "chaos: a namespace with {identities} identities deleted: gone in {gone:?}, every serial on the CRL {:?} after",
        started.elapsed()
    );
    nothing_issued_after_gone(&serials, &held);
    let log = op.log_text();
    assert!(!log.contains("panicked"), "a panic in the operator's log");
    assert!(
        matches!(op.get("/readyz").await, Some((200, _))),
        "the operator is still ready"
    );
}
