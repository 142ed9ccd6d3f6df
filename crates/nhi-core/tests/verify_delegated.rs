//! Task certificates as the delegation decision plans them verify with the workload library as
//! themselves (their task, their grants, their chain), and die with any certificate above them:
//! a CRL listing an ancestor's serial refuses every descendant, without listing them.

mod common;

use std::collections::BTreeSet;

use common::*;
use nhi_api::Usage;
use nhi_core::ca::CertificateAuthority;
use nhi_core::delegate::decide::{
    ChildPlan, DelegationPolicy, Parent, ParentCertificate, Standing, TaskRequest, decide,
};
use nhi_core::issue::leaf::{IssuedCertificate, LeafRequest};
use nhi_identity::delegation::{
    DELEGATION_OID, Delegation, canonical_serial_hex, encode as encode_delegation,
};
use nhi_identity::extension::{EXTENSION_OID, IdentityClaims, encode as encode_claims};
use nhi_identity::verify::*;
use time::{Duration, OffsetDateTime};

const AGENT: &str = "spiffe://cluster.local/ns/support/mi/agent";

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn leaf(
    spiffe_id: &str,
    grants: &BTreeSet<String>,
    delegation: Option<&Delegation>,
    ttl: Duration,
) -> LeafRequest {
    let claims = IdentityClaims {
        grants: grants.clone(),
        attributes: [("model".to_string(), "m-2026-11".to_string())].into(),
    };
    let mut extensions = vec![(EXTENSION_OID.to_vec(), encode_claims(&claims).unwrap())];
    if let Some(d) = delegation {
        extensions.push((DELEGATION_OID.to_vec(), encode_delegation(d).unwrap()));
    }
    LeafRequest {
        spiffe_id: spiffe_id.into(),
        common_name: None,
        namespace: "support".into(),
        dns_names: vec![],
        usages: vec![Usage::Client],
        ttl,
        not_after_cap: None,
        extensions,
    }
}

fn verified(
    ca: &CertificateAuthority,
    issued: &IssuedCertificate,
    crl: Option<&str>,
) -> Result<VerifiedIdentity, VerifyError> {
    let list = crl.map(|pem| RevocationList::from_pem(pem).unwrap());
    let revocation = match &list {
        Some(l) => Revocation::Check(l),
        None => Revocation::NotChecked,
    };
    verify_identity_or_task(
        &chain(issued),
        &trust(ca),
        revocation,
        Purpose::Client,
        OffsetDateTime::now_utc(),
    )
}

/// The parent as the delegation endpoint would see it, from its verified certificate.
fn parent_of(v: &VerifiedIdentity) -> Parent {
    Parent {
        identity: "support/agent".into(),
        policy: Some(DelegationPolicy {
            max_child_ttl: Duration::minutes(5),
            max_depth: 3,
            delegable: None,
            max_depth_by: None,
        }),
        policy_denial: None,
        standing: Standing::Current,
        current_grants: set(&["orders.read", "payments.refund"]),
        grant_ends: Default::default(),
        certificate: ParentCertificate {
            serial_hex: v.serial_hex.clone(),
            spiffe_id: v.identity.spiffe_id.clone(),
            not_after: v.not_after,
            grants: v.grants.clone(),
            attributes: v.attributes.clone(),
            delegation: v.delegation.clone(),
        },
    }
}

fn child_of(
    ca: &CertificateAuthority,
    parent: &VerifiedIdentity,
    task_id: &str,
    grants: &[&str],
) -> (ChildPlan, IssuedCertificate) {
    let now = OffsetDateTime::now_utc();
    let request = TaskRequest {
        task_id: task_id.into(),
        purpose: format!("task {task_id}"),
        input_digest: None,
        grants: set(grants),
        ttl: None,
    };
    let plan = decide(&parent_of(parent), &request, now).unwrap();
    let issued = issue(
        ca,
        &leaf(
            &plan.spiffe_id,
            &plan.grants,
            Some(&plan.delegation),
            plan.not_after - now,
        ),
    );
    (plan, issued)
}

#[test]
fn a_task_certificate_verifies_as_the_task_with_its_grants_and_chain() {
    let ca = ca();
    let agent = issue(
        &ca,
        &leaf(
            AGENT,
            &set(&["orders.read", "payments.refund"]),
            None,
            Duration::hours(1),
        ),
    );
    let agent_v = verified(&ca, &agent, None).unwrap();
    assert!(!agent_v.identity.is_task() && agent_v.delegation.is_none());

    let (plan, child) = child_of(&ca, &agent_v, "T-1", &["payments.refund"]);
    let v = verified(&ca, &child, Some(&crl_pem(&ca, &[]))).unwrap();
    assert_eq!(v.identity.spiffe_id, format!("{AGENT}/task/T-1"));
    assert_eq!(v.identity.name, "agent");
    assert_eq!(v.identity.tasks, ["T-1"]);
    assert!(v.identity.is_task());
    assert!(
        v.has_grant("payments.refund") && !v.has_grant("orders.read"),
        "{:?}",
        v.grants
    );
    let d = v.delegation.expect("the chain");
    assert_eq!(d, plan.delegation);
    assert_eq!(
        d.ancestors[0].serial_hex,
        canonical_serial_hex(&agent.info.serial_hex)
    );
    assert_eq!(d.ancestors[0].attributes["model"], "m-2026-11");
    // Only a verification that asks for tasks accepts one: a service that authorizes by identity
    // name never takes it for the agent.
    let identities_only = verify_identity(
        &chain(&child),
        &trust(&ca),
        Revocation::NotChecked,
        Purpose::Client,
        OffsetDateTime::now_utc(),
    );
    assert!(
        matches!(identities_only, Err(VerifyError::TaskNotAccepted(_))),
        "{identities_only:?}"
    );
    assert!(
        verify_identity(
            &chain(&agent),
            &trust(&ca),
            Revocation::NotChecked,
            Purpose::Client,
            OffsetDateTime::now_utc()
        )
        .is_ok()
    );
    // Any TLS stack accepts it: the delegation extension is not critical.
    if let Some(out) = openssl_verify(ca.trust_bundle_pem(), &child.chain_pem) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn revoking_an_ancestor_refuses_every_descendant_and_nothing_else() {
    let ca = ca();
    let agent = issue(
        &ca,
        &leaf(
            AGENT,
            &set(&["orders.read", "payments.refund"]),
            None,
            Duration::hours(1),
        ),
    );
    let agent_v = verified(&ca, &agent, None).unwrap();
    let (_, child) = child_of(&ca, &agent_v, "T-1", &["payments.refund"]);
    let child_v = verified(&ca, &child, None).unwrap();
    let (_, grandchild) = child_of(&ca, &child_v, "T-1.a", &["payments.refund"]);
    let other = issue(
        &ca,
        &leaf(
            "spiffe://cluster.local/ns/support/mi/other",
            &set(&[]),
            None,
            Duration::hours(1),
        ),
    );

    // The agent's certificate revoked: its child and grandchild are refused, not listed.
    let crl = crl_pem(&ca, &[agent.info.serial_hex.as_str()]);
    for descendant in [&child, &grandchild] {
        let err = verified(&ca, descendant, Some(&crl)).unwrap_err();
        assert!(matches!(err, VerifyError::AncestorRevoked(_)), "{err}");
    }
    assert!(matches!(
        verified(&ca, &agent, Some(&crl)),
        Err(VerifyError::Revoked)
    ));
    assert!(
        verified(&ca, &other, Some(&crl)).is_ok(),
        "an unrelated identity is unaffected"
    );

    // Only the child revoked: the grandchild goes with it, the agent stays.
    let crl = crl_pem(&ca, &[child.info.serial_hex.as_str()]);
    assert!(matches!(
        verified(&ca, &grandchild, Some(&crl)),
        Err(VerifyError::AncestorRevoked(_))
    ));
    assert!(verified(&ca, &agent, Some(&crl)).is_ok());
    // Without a CRL check nothing is refused (the caller chose so).
    assert!(verified(&ca, &grandchild, None).is_ok());
}

#[test]
fn a_task_name_without_its_delegation_or_a_delegation_on_another_name_is_refused() {
    let ca = ca();
    let agent = issue(
        &ca,
        &leaf(AGENT, &set(&["payments.refund"]), None, Duration::hours(1)),
    );
    let agent_v = verified(&ca, &agent, None).unwrap();
    let (plan, _) = child_of(&ca, &agent_v, "T-1", &["payments.refund"]);

    let bare_task = issue(
        &ca,
        &leaf(&plan.spiffe_id, &plan.grants, None, Duration::minutes(5)),
    );
    let err = verified(&ca, &bare_task, None).unwrap_err();
    assert!(
        matches!(err, VerifyError::InconsistentDelegation(_)),
        "{err}"
    );

    let as_identity = issue(
        &ca,
        &leaf(
            AGENT,
            &plan.grants,
            Some(&plan.delegation),
            Duration::minutes(5),
        ),
    );
    assert!(matches!(
        verified(&ca, &as_identity, None),
        Err(VerifyError::InconsistentDelegation(_))
    ));

    let mut foreign = plan.delegation.clone();
    foreign.ancestors[0].spiffe_id = "spiffe://cluster.local/ns/support/mi/admin".into();
    let hijacked = issue(
        &ca,
        &leaf(
            &plan.spiffe_id,
            &plan.grants,
            Some(&foreign),
            Duration::minutes(5),
        ),
    );
    assert!(matches!(
        verified(&ca, &hijacked, None),
        Err(VerifyError::InconsistentDelegation(_))
    ));
}
