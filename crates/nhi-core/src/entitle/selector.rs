//! Label selector matching (the semantics of Kubernetes' `metav1.LabelSelector`), as a pure
//! function.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Why `selector` cannot be evaluated, if it cannot: an unknown operator, In/NotIn without
/// values, Exists/DoesNotExist with values. Checks every requirement (matching stops at the first
/// one that fails, so it would miss a broken one after it).
pub fn selector_problem(selector: &LabelSelector) -> Option<String> {
    selector.match_expressions.iter().flatten().find_map(|req| {
        let has_values = req.values.as_ref().is_some_and(|v| !v.is_empty());
        match (req.operator.as_str(), has_values) {
            ("In" | "NotIn", true) | ("Exists" | "DoesNotExist", false) => None,
            ("In" | "NotIn", false) => Some(format!(
                "selector operator {} on {:?} needs values",
                req.operator, req.key
            )),
            ("Exists" | "DoesNotExist", true) => Some(format!(
                "selector operator {} on {:?} takes no values",
                req.operator, req.key
            )),
            (other, _) => Some(format!(
                "selector operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"
            )),
        }
    })
}

/// Whether `labels` match `selector`. Every `matchLabels` entry and every `matchExpressions`
/// requirement must hold. An unknown operator is an error (the Entitlement reports it) and
/// selects nothing.
pub fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            return Ok(false);
        }
    }
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default();
        let present = labels.get(&req.key);
        if matches!(req.operator.as_str(), "In" | "NotIn") && values.is_empty() {
            return Err(format!(
                "selector operator {} on {:?} needs values",
                req.operator, req.key
            ));
        }
        let holds = match req.operator.as_str() {
            "In" => present.is_some_and(|v| values.contains(v)),
            "NotIn" => present.is_none_or(|v| !values.contains(v)),
            "Exists" => present.is_some(),
            "DoesNotExist" => present.is_none(),
            other => {
                return Err(format!(
                    "selector operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"
                ));
            }
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let l = labels(&[("team", "pay"), ("tier", "api")]);
        let by_labels = LabelSelector {
            match_labels: Some(labels(&[("team", "pay")])),
            match_expressions: None,
        };
        assert_eq!(selector_matches(&by_labels, &l), Ok(true));
        assert_eq!(
            selector_matches(&by_labels, &labels(&[("team", "ops")])),
            Ok(false)
        );
        let cases = [
            (req("tier", "In", &["api", "web"]), true),
            (req("tier", "In", &["web"]), false),
            (req("tier", "NotIn", &["web"]), true),
            (req("absent", "NotIn", &["x"]), true),
            (req("tier", "NotIn", &["api"]), false),
            (req("team", "Exists", &[]), true),
            (req("absent", "Exists", &[]), false),
            (req("absent", "DoesNotExist", &[]), true),
            (req("team", "DoesNotExist", &[]), false),
        ];
        for (r, want) in cases {
            let s = LabelSelector {
                match_labels: Some(labels(&[("team", "pay")])),
                match_expressions: Some(vec![r.clone()]),
            };
            assert_eq!(selector_matches(&s, &l), Ok(want), "{r:?}");
        }
        let bad = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![req("team", "Like", &["p"])]),
        };
        assert!(selector_matches(&bad, &l).is_err());
        let no_values = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![req("team", "NotIn", &[])]),
        };
        assert!(selector_matches(&no_values, &l).is_err());
    }
}
