use super::*;

fn t0() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

const ID: &str = "spiffe://cluster.local/ns/support/mi/agent";

fn parent() -> Parent {
    Parent {
        identity: "support/agent".into(),
        policy: Some(DelegationPolicy {
            max_child_ttl: Duration::minutes(5),
            max_depth: 2,
            delegable: None,
            max_depth_by: None,
        }),
        policy_denial: None,
        standing: Standing::Current,
        current_grants: set(&["orders.read", "payments.refund"]),
        grant_ends: Default::default(),
        certificate: ParentCertificate {
            serial_hex: "8f3a".into(),
            spiffe_id: ID.into(),
            not_after: t0() + Duration::minutes(40),
            grants: set(&["orders.read", "payments.refund"]),
            attributes: [("model".to_string(), "m-2026-11".to_string())].into(),
            delegation: None,
        },
    }
}

fn task(grants: &[&str]) -> TaskRequest {
    TaskRequest {
        task_id: "T-1".into(),
        purpose: "refund order 1042".into(),
        input_digest: Some([1; DIGEST_LEN]),
        grants: set(grants),
        ttl: None,
    }
}

fn refused(r: Result<ChildPlan, Refusal>) -> Refusal {
    r.expect_err("refused")
}

#[test]
fn a_child_holds_what_it_asked_for_under_the_parent_and_names_its_chain() {
    let child = decide(&parent(), &task(&["payments.refund"]), t0()).unwrap();
    assert_eq!(child.spiffe_id, format!("{ID}/task/T-1"));
    assert_eq!(child.grants, set(&["payments.refund"]));
    assert_eq!(
        child.not_after,
        t0() + Duration::minutes(5),
        "the policy's cap"
    );
    assert_eq!(child.attributes["model"], "m-2026-11");
    assert_eq!(child.delegation.depth(), 1);
    assert_eq!(child.delegation.ancestors[0].serial_hex, "8f3a");
    assert_eq!(
        child.delegation.ancestors[0].attributes["model"],
        "m-2026-11"
    );
    assert_eq!(child.delegation.task_id, "T-1");
    assert_eq!(child.delegation.input_digest, Some([1; DIGEST_LEN]));
}

#[test]
fn a_grant_the_parent_lacks_is_refused_by_name_never_dropped() {
    let r = refused(decide(
        &parent(),
        &task(&["payments.refund", "patients.read"]),
        t0(),
    ));
    assert_eq!(r.reason, GRANT_NOT_HELD);
    assert!(
        r.message.contains("patients.read") && !r.message.contains("payments.refund"),
        "{}",
        r.message
    );
    // Held by the certificate but withdrawn from the identity since: not delegated.
    let mut p = parent();
    p.current_grants = set(&["orders.read"]);
    let r = refused(decide(&p, &task(&["payments.refund"]), t0()));
    assert_eq!(r.reason, GRANT_NOT_HELD);
}

#[test]
fn listing_a_grant_as_delegable_never_gives_it() {
    // Who may edit the identity (not its Entitlements) lists a grant the identity lacks.
    let mut p = parent();
    p.policy.as_mut().unwrap().delegable = Some(set(&["payments.refund", "admin.all"]));
    let r = refused(decide(&p, &task(&["admin.all"]), t0()));
    assert_eq!(r.reason, GRANT_NOT_HELD);
    assert!(r.message.contains("admin.all"), "{}", r.message);
}

#[test]
fn only_delegable_grants_are_delegated() {
    let mut p = parent();
    p.policy.as_mut().unwrap().delegable = Some(set(&["orders.read"]));
    let r = refused(decide(&p, &task(&["payments.refund"]), t0()));
    assert_eq!(r.reason, GRANT_NOT_DELEGABLE);
    assert!(r.message.contains("payments.refund"), "{}", r.message);
    assert!(decide(&p, &task(&["orders.read"]), t0()).is_ok());
}

#[test]
fn a_child_never_outlives_its_parent_and_a_parent_near_its_end_cannot_delegate() {
    let mut p = parent();
    p.certificate.not_after = t0() + Duration::minutes(2);
    let child = decide(&p, &task(&[]), t0()).unwrap();
    assert_eq!(child.not_after, p.certificate.not_after);
    let mut asked = task(&[]);
    asked.ttl = Some(Duration::seconds(30));
    assert_eq!(
        decide(&p, &asked, t0()).unwrap().not_after,
        t0() + Duration::seconds(30)
    );
    asked.ttl = Some(Duration::hours(2));
    assert_eq!(
        decide(&p, &asked, t0()).unwrap().not_after,
        p.certificate.not_after,
        "capped, not refused"
    );
    p.certificate.not_after = t0() + Duration::seconds(5);
    assert_eq!(
        refused(decide(&p, &task(&[]), t0())).reason,
        PARENT_EXPIRING
    );
}

#[test]
fn depth_is_bounded_by_the_identity_and_a_child_of_a_child_holds_no_more() {
    let first = decide(&parent(), &task(&["payments.refund"]), t0()).unwrap();
    // The child, authenticated with its own certificate, delegates further.
    let mut as_child = parent();
    as_child.certificate = ParentCertificate {
        serial_hex: "1c".into(),
        spiffe_id: first.spiffe_id.clone(),
        not_after: first.not_after,
        grants: first.grants.clone(),
        attributes: first.attributes.clone(),
        delegation: Some(first.delegation.clone()),
    };
    let mut sub = task(&["payments.refund"]);
    sub.task_id = "T-1.a".into();
    let second = decide(&as_child, &sub, t0()).unwrap();
    assert_eq!(second.spiffe_id, format!("{ID}/task/T-1/task/T-1.a"));
    assert_eq!(second.delegation.depth(), 2);
    assert_eq!(
        second
            .delegation
            .ancestors
            .iter()
            .map(|a| a.serial_hex.as_str())
            .collect::<Vec<_>>(),
        ["8f3a", "1c"]
    );
    // More than the child holds (the identity still holds it): refused.
    let r = refused(decide(&as_child, &task(&["orders.read"]), t0()));
    assert_eq!(r.reason, GRANT_NOT_HELD);
    // A third level: beyond max_depth 2.
    as_child.certificate.delegation = Some(second.delegation.clone());
    let r = refused(decide(&as_child, &sub, t0()));
    assert_eq!(r.reason, DEPTH_EXCEEDED);
    assert!(
        r.message
            .ends_with("MachineIdentity support/agent allows 2"),
        "{}",
        r.message
    );
    // A namespace's policy that bounds the depth tighter is named instead.
    let mut bounded = parent();
    if let Some(policy) = bounded.policy.as_mut() {
        policy.max_depth = 1;
        policy.max_depth_by = Some("IdentityPolicy agents".into());
    }
    bounded.certificate.delegation = Some(first.delegation.clone());
    let r = refused(decide(&bounded, &sub, t0()));
    assert_eq!(r.reason, DEPTH_EXCEEDED);
    assert!(
        r.message.ends_with("IdentityPolicy agents allows 1"),
        "{}",
        r.message
    );
}

#[test]
fn no_delegation_unless_enabled_and_the_parent_stands() {
    let mut p = parent();
    p.policy = None;
    assert_eq!(refused(decide(&p, &task(&[]), t0())).reason, NOT_ENABLED);
    // Allowed by the identity, refused by its namespace's policy: before anything else.
    let mut p = parent();
    p.policy_denial = Some("refused by IdentityPolicy agents: no delegation".into());
    p.standing = Standing::Deleting;
    let r = refused(decide(&p, &task(&[]), t0()));
    assert_eq!(r.reason, POLICY_DENIED);
    assert!(r.message.contains("IdentityPolicy agents"), "{}", r.message);
    for (standing, reason) in [
        (
            Standing::Suspended("review lapsed".into()),
            PARENT_SUSPENDED,
        ),
        (Standing::Deleting, PARENT_DELETING),
        (Standing::Revoked("8f3a".into()), PARENT_REVOKED),
    ] {
        let mut p = parent();
        p.standing = standing;
        assert_eq!(refused(decide(&p, &task(&[]), t0())).reason, reason);
    }
}

#[test]
fn a_task_id_that_cannot_be_a_spiffe_segment_is_refused() {
    for id in ["", "a/b", "..", "x y"] {
        let mut t = task(&[]);
        t.task_id = id.into();
        assert_eq!(
            refused(decide(&parent(), &t, t0())).reason,
            BAD_TASK,
            "{id:?}"
        );
    }
    let mut t = task(&[]);
    t.purpose = "two\nlines".into();
    assert_eq!(refused(decide(&parent(), &t, t0())).reason, BAD_TASK);
}

#[test]
fn a_child_never_outlives_a_just_in_time_grant_it_carries_and_only_those() {
    let mut p = parent();
    p.grant_ends = [("payments.refund".to_string(), t0() + Duration::minutes(2))].into();
    let child = decide(&p, &task(&["payments.refund"]), t0()).unwrap();
    assert_eq!(child.not_after, t0() + Duration::minutes(2));
    let lasting = decide(&p, &task(&["orders.read"]), t0()).unwrap();
    assert_eq!(
        lasting.not_after,
        t0() + Duration::minutes(5),
        "a grant the child does not carry does not bind it"
    );
    p.grant_ends = [("payments.refund".to_string(), t0() + Duration::seconds(5))].into();
    let r = refused(decide(&p, &task(&["payments.refund"]), t0()));
    assert_eq!(r.reason, PARENT_EXPIRING);
    assert!(
        r.message.contains("a grant it would carry"),
        "{}",
        r.message
    );
}
