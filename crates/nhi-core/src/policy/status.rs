//! An IdentityPolicy's status, pure: how many namespaces it selects, and whether it is in force
//! as written (a selector or a maxTTL that cannot be read makes it stricter, never looser).

use std::collections::BTreeMap;

use crate::duration::parse_go_duration;
use crate::entitle::selector::selector_problem;
use nhi_api::{Condition, IdentityPolicySpec};

/// The `Ready` condition type of an IdentityPolicy.
pub const READY: &str = "Ready";

/// What a policy's status says: the namespaces it selects among `namespaces` (their labels), and
/// its `Ready` condition (transition time unset).
pub fn policy_status(
    spec: &IdentityPolicySpec,
    namespaces: &[&BTreeMap<String, String>],
) -> (i64, Condition) {
    let selected = namespaces
        .iter()
        .filter(|labels| super::effective::selects(spec, labels))
        .count() as i64;
    let ready = if let Some(e) = selector_problem(&spec.namespace_selector) {
        Condition::new(
            READY,
            false,
            "InvalidSelector",
            format!(
                "spec.namespaceSelector: {e}; the policy applies to every namespace and what it \
                 claims exclusively is given nowhere"
            ),
        )
    } else if let Some(Err(e)) = spec.max_ttl.as_deref().map(parse_go_duration) {
        Condition::new(
            READY,
            false,
            "InvalidMaxTTL",
            format!("spec.maxTTL: {e}; nothing is issued where the policy applies"),
        )
    } else {
        Condition::new(
            READY,
            true,
            "InForce",
            format!("applies to {selected} namespaces"),
        )
    };
    (selected, ready)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::effective::built_in_default;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(team: &str) -> BTreeMap<String, String> {
        [("team".to_string(), team.to_string())].into()
    }

    #[test]
    fn counts_the_namespaces_it_selects() {
        let mut spec = built_in_default();
        spec.namespace_selector.match_labels = Some(labels("pay"));
        let (pay, shop) = (labels("pay"), labels("shop"));
        let (count, ready) = policy_status(&spec, &[&pay, &shop, &pay]);
        assert_eq!(count, 2);
        assert!(ready.is_true());
        assert_eq!(ready.message, "applies to 2 namespaces");
    }

    #[test]
    fn what_cannot_be_read_is_said_with_what_it_means() {
        let mut spec = built_in_default();
        spec.namespace_selector.match_expressions = Some(vec![LabelSelectorRequirement {
            key: "team".into(),
            operator: "Sometimes".into(),
            values: None,
        }]);
        let shop = labels("shop");
        let (count, ready) = policy_status(&spec, &[&shop]);
        assert_eq!((count, ready.reason.as_str()), (1, "InvalidSelector"));
        assert!(ready.message.contains("applies to every namespace"));
        let mut spec = built_in_default();
        spec.max_ttl = Some("99999999999999h".into());
        let (_, ready) = policy_status(&spec, &[&shop]);
        assert_eq!(ready.reason, "InvalidMaxTTL");
    }
}
