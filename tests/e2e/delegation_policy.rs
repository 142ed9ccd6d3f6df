//! The platform's bound on delegation: a namespace's IdentityPolicies decide whether its
//! identities may delegate and how far. Admission refuses a wider limit naming the policy; the
//! endpoint applies a policy narrowed or withdrawn after the identity was admitted.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use nhi_identity::delegate::child_key::ChildKey;
use nhi_identity::delegate::client::{DelegateError, Delegator, Task};
use serde_json::json;
use time::OffsetDateTime;

use crate::delegation::{endpoint, first_child, identity_dir, reason};
use crate::policy_fixtures::{ClusterPolicy, refused};
use crate::support::*;

#[tokio::test]
async fn a_namespace_policy_bounds_what_its_identities_delegate() {
    let client = client().await;
    let label = format!("dlgpol-{:06x}", rand::random::<u32>() & 0xffffff);
    let namespace =
        TestNamespace::create_labelled(&client, "dlgpol", &[("nhi.dev/identity-policy", &label)])
            .await;
    let policy = ClusterPolicy::create(
        &client,
        &namespace.name,
        json!({"namespaceSelector": {"matchLabels": {"nhi.dev/identity-policy": label}},
               "grants": {"allowed": ["*"]},
               "delegation": {"maxChildTTL": "1m", "maxDepth": 2, "maxPerMinute": 600}}),
    )
    .await;
    let named = format!("IdentityPolicy {}", policy.name);
    let addr = free_port();
    let env =
        OperatorNamespace::start_in(namespace, &["--delegation-addr", &addr.to_string()]).await;
    let mis = env.identities();

    // Admission refuses each limit set wider than the policy's, naming it.
    for (delegation, message) in [
        (
            json!({"maxDepth": 3}),
            "spec.delegation.maxDepth: 3 is more than the maximum 2",
        ),
        (
            json!({"maxChildTTL": "5m"}),
            "spec.delegation.maxChildTTL: 5m is more than the maximum 1m",
        ),
        (
            json!({"maxPerMinute": 1000}),
            "spec.delegation.maxPerMinute: 1000 is more than the maximum 600",
        ),
    ] {
        let spec = json!({"owner": {"team": "t"}, "secretName": "wide-identity",
                          "delegation": delegation});
        let refusal = refused(&mis, &identity("wide", spec)).await;
        assert!(
            refusal.contains(message) && refusal.contains(&named),
            "{refusal}"
        );
    }

    // Within the bounds. The child lifetime left out (5m by default) is narrowed to the policy's
    // 1m.
    env.create_identity(
        "agent",
        json!({"owner": {"team": "t"}, "secretName": "agent-identity",
               "certificate": {"usages": ["client"]}, "delegation": {"maxDepth": 2}}),
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let (agent_dir, child_dir) = (work.path().join("agent"), work.path().join("child"));
    identity_dir(&env, "agent-identity", &[], &agent_dir).await;
    let url = endpoint(addr);
    let asked_at = OffsetDateTime::now_utc();
    let child_key = ChildKey::generate().unwrap();
    let mut agent = Delegator::connect(&url, &agent_dir).await.unwrap();
    first_child(&url, &agent_dir, &Task::new("warm-up", "")).await;
    let child = agent
        .request(&Task::new("T-1", ""), child_key.csr_pem())
        .await
        .expect("a child within the policy");
    let not_after = OffsetDateTime::parse(
        &child.not_after,
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(
        not_after <= OffsetDateTime::now_utc() + time::Duration::seconds(61)
            && not_after >= asked_at + time::Duration::seconds(55),
        "the policy's 1m, not the identity's default 5m: {not_after}"
    );
    child.write_dir(&child_dir, Some(&child_key)).unwrap();

    // The platform narrows the depth after the identity was admitted: the endpoint refuses the
    // child's own delegation naming the policy, and the identity's status says what is refused.
    let policies: kube::Api<nhi_operator::api::IdentityPolicy> = kube::Api::all(client.clone());
    policies
        .patch(
            &policy.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"delegation": {"maxDepth": 1}}})),
        )
        .await
        .unwrap();
    let csr = ChildKey::generate().unwrap();
    let message = wait_for(Duration::from_secs(15), "the narrowed depth", || async {
        let mut from_child = Delegator::connect(&url, &child_dir).await.ok()?;
        match from_child
            .request(&Task::new("T-1a", ""), csr.csr_pem())
            .await
        {
            Err(DelegateError::Refused {
                reason, message, ..
            }) if reason == "DepthExceeded" => Some(message),
            _ => None,
        }
    })
    .await;
    assert!(message.ends_with(&format!("{named} allows 1")), "{message}");
    let denied = wait_for(
        Duration::from_secs(15),
        "the identity's PolicyDenied",
        || async {
            let mi = mis.get("agent").await.ok()?;
            let ready = condition(&mi, "Ready")?;
            (ready.reason == "PolicyDenied").then(|| ready.message.clone())
        },
    )
    .await;
    assert!(
        denied.contains("spec.delegation.maxDepth") && denied.contains(&named),
        "{denied}"
    );

    // An explicit null is no delegation on either side (the apiserver drops it before admission).
    env.create_identity(
        "nulled",
        json!({"owner": {"team": "t"}, "secretName": "nulled-identity", "delegation": null}),
    )
    .await;
    let nulled = mis.get("nulled").await.unwrap();
    assert!(nulled.spec.delegation.is_none());

    // The platform adds a second policy for the namespace, written with `delegation: null`: the
    // policies intersect, so delegation is withdrawn. The endpoint refuses the identity admitted
    // before (admission could not see this), and admission refuses new identities that ask.
    let denying = ClusterPolicy::create(
        &client,
        &format!("{}-deny", policy.name),
        json!({"namespaceSelector": {"matchLabels": {"nhi.dev/identity-policy": label}},
               "grants": {"allowed": ["*"]}, "delegation": null}),
    )
    .await;
    let stored = policies.get(&denying.name).await.unwrap();
    assert!(stored.spec.delegation.is_none(), "the null is dropped");
    let named = format!("IdentityPolicy {}", denying.name);
    let message = wait_for(
        Duration::from_secs(15),
        "the withdrawn delegation",
        || async {
            let mut agent = Delegator::connect(&url, &agent_dir).await.ok()?;
            match agent.request(&Task::new("T-2", ""), csr.csr_pem()).await {
                Err(DelegateError::Refused {
                    reason, message, ..
                }) if reason == "PolicyDenied" => Some(message),
                _ => None,
            }
        },
    )
    .await;
    assert!(message.contains(&named), "{message}");
    let spec = json!({"owner": {"team": "t"}, "secretName": "late-identity", "delegation": {}});
    let refusal = refused(&mis, &identity("late", spec)).await;
    assert!(
        refusal.contains("spec.delegation: delegation is not allowed by")
            && refusal.contains(&named),
        "{refusal}"
    );
    let (r, m) = reason(agent.request(&Task::new("T-3", ""), csr.csr_pem()).await);
    assert_eq!(r, "PolicyDenied", "{m}");
}
