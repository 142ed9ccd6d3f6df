//! Chaos: the operator killed with SIGKILL at random moments while it issues a burst and
//! revokes what is deleted, then the invariants checked once it has converged: every live
//! identity Ready, one CA, no serial in two Secrets, no orphan Secret, every acknowledged
//! revocation on the published CRL, no panic. `make test` runs the short version; `make chaos`
//! (NHI_CHAOS=full) runs 1,000 identities and 20 kills.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use rand::Rng;
use serde_json::json;

use crate::support::*;
use nhi_operator::api::MachineIdentity;

/// How much chaos: the short run inside `make test`, or `make chaos`.
struct Scale {
    identities: usize,
    kills: usize,
}

fn scale() -> Scale {
    match std::env::var("NHI_CHAOS").as_deref() {
        Ok("full") => Scale {
            identities: 1000,
            kills: 20,
        },
        _ => Scale {
            identities: 150,
            kills: 5,
        },
    }
}

/// How long every live identity may take to be Ready after the last kill.
const CONVERGENCE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn sigkill_during_a_burst_and_its_revocations_loses_nothing() {
    let Scale { identities, kills } = scale();
    let mut env = OperatorNamespace::start("chaos", &[]).await;
    let (client, ns) = (env.client.clone(), env.ns.clone());
    let api = env.identities();
    // The burst is paced to span the kills (a kill of an idle operator proves little).
    let window = Duration::from_millis(900) * kills as u32;
    let pause = window / identities as u32;
    let creator = api.clone();
    let burst = tokio::spawn(async move {
        for i in 0..identities {
            let mi = identity(
                &format!("c{i}"),
                json!({"owner": {"team": "t"}, "secretName": format!("c{i}-id")}),
            );
            creator
                .create(&PostParams::default(), &mi)
                .await
                .expect("create an identity");
            tokio::time::sleep(pause).await;
        }
    });
    // Every tenth identity is deleted once it has a certificate: the serial it had is what
    // must end on the CRL, acknowledged by its finalizer's release.
    let deleter_api = api.clone();
    let deleter = tokio::spawn(async move {
        let mut deleted: BTreeMap<String, String> = BTreeMap::new();
        let wanted: Vec<String> = (0..identities)
            .step_by(10)
            .map(|i| format!("c{i}"))
            .collect();
        let started = Instant::now();
        while deleted.len() < wanted.len() && started.elapsed() < Duration::from_secs(300) {
            for name in &wanted {
                if deleted.contains_key(name) {
                    continue;
                }
                let Ok(Some(mi)) = deleter_api.get_opt(name).await else {
                    continue;
                };
                let Some(serial) = mi.status.as_ref().and_then(|s| s.serial_number.clone()) else {
                    continue;
                };
                // Only the version read: the serial seen is the one held when deleted.
                let exactly = DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        resource_version: mi.metadata.resource_version.clone(),
                        uid: None,
                    }),
                    ..Default::default()
                };
                if deleter_api.delete(name, &exactly).await.is_ok() {
                    deleted.insert(name.clone(), serial);
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        deleted
    });

    // SIGKILL at random moments (0.3 to 1.5 s apart) while the burst and the deletions run.
    let mut rng = rand::rng();
    let mut last_kill = Instant::now();
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        env.op.restart();
        last_kill = Instant::now();
    }
    burst.await.expect("the burst");
    let deleted = deleter.await.expect("the deletions");
    assert_eq!(
        deleted.len(),
        identities.div_ceil(10),
        "every tenth identity was deleted"
    );

    // Converged: every live identity Ready, every deleted one gone (its finalizer released).
    wait_for(
        CONVERGENCE,
        "every live identity Ready, the deleted gone",
        || async {
            let list = api.list(&ListParams::default()).await.ok()?;
            let live = identities - deleted.len();
            (list.items.len() == live && list.items.iter().all(is_ready)).then_some(())
        },
    )
    .await;
    eprintln!(
        "chaos: {identities} identities, {kills} kills, {} deleted: converged {:?} after the last kill",
        deleted.len(),
        last_kill.elapsed()
    );
    check_invariants(&client, &ns, &deleted, &env.op.log_text()).await;
}

/// The invariants after convergence, for the identities of `ns`; `revoked` maps each deleted
/// identity (its finalizer released) to the serial it held.
async fn check_invariants(
    client: &kube::Client,
    ns: &str,
    revoked: &BTreeMap<String, String>,
    log: &str,
) {
    let identities: Vec<MachineIdentity> = Api::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list identities")
        .items;
    let secrets: Vec<Secret> = Api::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("nhi.dev/identity"))
        .await
        .expect("list identity Secrets")
        .items;
    // One CA in the published bundle.
    let (ca, crl) = trust_documents(client, ns)
        .await
        .expect("the trust documents");
    let cas = pem::parse_many(&ca).expect("PEM").len();
    assert_eq!(cas, 1, "exactly one CA is published");
    // No serial in two Secrets; each Secret's serial is its identity's.
    let mut holders: HashMap<String, Vec<String>> = HashMap::new();
    for s in &secrets {
        let name = s.metadata.name.clone().unwrap_or_default();
        holders
            .entry(serial_of(s).unwrap_or_default())
            .or_default()
            .push(name);
    }
    let shared: Vec<_> = holders.iter().filter(|(_, h)| h.len() > 1).collect();
    assert!(shared.is_empty(), "serials held by two Secrets: {shared:?}");
    let by_secret: HashMap<String, &MachineIdentity> = identities
        .iter()
        .map(|mi| (mi.spec.secret_name.clone(), mi))
        .collect();
    for s in &secrets {
        let name = s.metadata.name.clone().unwrap_or_default();
        // No orphan: every identity Secret belongs to a live identity, which names its serial.
        let Some(mi) = by_secret.get(&name) else {
            panic!("orphan identity Secret {name}");
        };
        let owned = s
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == mi.metadata.uid.clone().unwrap_or_default());
        assert!(owned, "Secret {name} is owned by its identity");
        let status = mi.status.as_ref().and_then(|st| st.serial_number.clone());
        assert_eq!(
            status,
            serial_of(s),
            "{name}: the status names the Secret's certificate"
        );
    }
    assert_eq!(
        secrets.len(),
        identities.len(),
        "one Secret per live identity"
    );
    // Every acknowledged revocation (recorded before the finalizer is released) is on the
    // published CRL once the publication that follows the record has run: within seconds.
    let missing = |crl: &str| -> Vec<(String, String)> {
        let on_crl = crl_serials(crl);
        revoked
            .iter()
            .filter(|(_, serial)| !on_crl.contains(serial))
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    };
    let started = Instant::now();
    let mut crl = crl;
    while !missing(&crl).is_empty() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        crl = trust_documents(client, ns)
            .await
            .expect("the trust documents")
            .1;
    }
    let missing = missing(&crl);
    assert!(
        missing.is_empty(),
        "revoked but not on the CRL: {missing:?}"
    );
    eprintln!(
        "chaos: every revocation on the CRL {:?} after convergence",
        started.elapsed()
    );
    assert!(!log.contains("panicked"), "a panic in the operator's log");
}
