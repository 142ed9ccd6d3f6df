//! Plan tests: what the namespace's tenant policy refuses is left out, or blocks issuance.

use super::*;

#[test]
fn what_the_policy_refuses_is_left_out_of_the_certificate_and_keeps_it_not_ready() {
    let mut f = facts_of(identity(serde_json::json!({
        "certificate": {"dnsNames": ["api.pay.svc", "payments-api.payments.svc"], "ttl": "2h"},
        "attributes": {"project": "p"},
        "kubernetesAccess": {"enabled": true},
    })));
    f.policy = nhi_core::policy::effective_policy("pay", &Default::default(), &[], "cluster.local");
    let steps = plan(&f, &settings()).steps;
    // Said once, as a Warning naming the field and the policy.
    assert_eq!(events(&steps), vec![(true, "PolicyDenied")]);
    let note = event_note(&steps, "PolicyDenied");
    assert!(
        note.contains("spec.certificate.dnsNames[1]: refused by the built-in default")
            && note.contains("\"payments-api.payments.svc\" is not allowed")
            && note.contains("built-in default")
            && note.contains("spec.kubernetesAccess.enabled"),
        "{note}"
    );
    // Issued without the refused name and without Kubernetes access.
    let i = issuance(&steps);
    assert_eq!(i.request.dns_names, vec!["api.pay.svc"]);
    assert_eq!(i.credential, CredentialPlan::NotWanted);
    let rest = settle(&f, i, written(&f, "0c", None));
    let status = written_status(&rest).unwrap();
    assert_eq!(status.serial_number.as_deref(), Some("0c"));
    let ready = nhi_api::condition::find_condition(&status.conditions, READY).unwrap();
    assert!(!ready.is_true());
    assert_eq!(ready.reason, "PolicyDenied");
    assert!(
        ready.message.contains("(certificate 0c valid until"),
        "{}",
        ready.message
    );
    // Once the status shows the refusal, it is not said again.
    let mut again = facts_of(identity(serde_json::json!({
        "certificate": {"dnsNames": ["api.pay.svc", "payments-api.payments.svc"], "ttl": "2h"},
        "attributes": {"project": "p"},
        "kubernetesAccess": {"enabled": true},
    })));
    again.policy = f.policy.clone();
    with_identity(&mut again, |mi| mi.status = Some(status.clone()));
    let steps = plan(&again, &settings()).steps;
    assert!(
        !events(&steps).contains(&(true, "PolicyDenied")),
        "{:?}",
        events(&steps)
    );
}

#[test]
fn a_refused_key_algorithm_issues_nothing() {
    let mut f = facts_of(identity(serde_json::json!({
        "certificate": {"keyAlgorithm": "Ed25519"},
    })));
    let strict = nhi_api::IdentityPolicy::new(
        "strict",
        nhi_api::IdentityPolicySpec {
            key_algorithms: vec![nhi_api::KeyAlgorithm::EcdsaP256],
            ..nhi_core::policy::effective::built_in_default()
        },
    );
    f.policy = nhi_core::policy::effective_policy("pay", &Default::default(), &[strict], "c");
    let steps = plan(&f, &settings()).steps;
    assert_eq!(events(&steps), vec![(true, "PolicyDenied")]);
    assert!(!has(&steps, |s| matches!(s, Step::Issue(_))));
    assert_eq!(ready_reason(&steps), (false, "PolicyDenied".to_string()));
    assert!(event_note(&steps, "PolicyDenied").contains("Ed25519 is not allowed"));
    assert_eq!(finish(&steps), Requeue::AwaitChange);
}
