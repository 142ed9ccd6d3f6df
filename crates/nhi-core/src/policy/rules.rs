//! Kubernetes RBAC rules against a policy's allowlist: whether every permission a requested
//! rule gives is covered by one allowed rule, with RBAC's own matching of `*` and `*/sub`.

use nhi_api::KubernetesRule;

/// Whether `allowed` covers every (API group, resource, verb) `requested` gives, and its
/// object names: an allowed rule limited to names covers only a request limited to some of them.
pub fn rule_covered(requested: &KubernetesRule, allowed: &[KubernetesRule]) -> bool {
    requested.api_groups.iter().all(|group| {
        requested.resources.iter().all(|resource| {
            requested.verbs.iter().all(|verb| {
                allowed
                    .iter()
                    .any(|a| covers(a, group, resource, verb, &requested.resource_names))
            })
        })
    })
}

fn covers(
    allowed: &KubernetesRule,
    group: &str,
    resource: &str,
    verb: &str,
    names: &[String],
) -> bool {
    let any_or = |list: &[String], item: &str| list.iter().any(|x| x == "*" || x == item);
    let resource_ok = allowed.resources.iter().any(|r| {
        r == "*"
            || r == resource
            || r.strip_prefix("*/")
                .is_some_and(|sub| resource.split_once('/').is_some_and(|(_, s)| s == sub))
    });
    let names_ok = allowed.resource_names.is_empty()
        || (!names.is_empty() && names.iter().all(|n| allowed.resource_names.contains(n)));
    any_or(&allowed.api_groups, group) && resource_ok && any_or(&allowed.verbs, verb) && names_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> KubernetesRule {
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect();
        KubernetesRule {
            api_groups: v(groups),
            resources: v(resources),
            verbs: v(verbs),
            resource_names: v(names),
        }
    }

    #[test]
    fn every_permission_of_the_request_must_be_covered() {
        let allowed = [
            rule(&[""], &["configmaps"], &["get", "list", "watch"], &[]),
            rule(
                &["apps"],
                &["deployments", "deployments/scale"],
                &["get", "patch"],
                &[],
            ),
        ];
        assert!(rule_covered(
            &rule(&[""], &["configmaps"], &["get"], &[]),
            &allowed
        ));
        assert!(rule_covered(
            &rule(&[""], &["configmaps"], &["get"], &["one"]),
            &allowed
        ));
        assert!(!rule_covered(
            &rule(&[""], &["configmaps"], &["get", "delete"], &[]),
            &allowed
        ));
        assert!(!rule_covered(
            &rule(&["", "apps"], &["configmaps"], &["get"], &[]),
            &allowed
        ));
        assert!(rule_covered(
            &rule(&["apps"], &["deployments/scale"], &["patch"], &[]),
            &allowed
        ));
        assert!(!rule_covered(
            &rule(&["apps"], &["deployments"], &["create"], &[]),
            &allowed
        ));
        assert!(!rule_covered(
            &rule(&[""], &["pods"], &["create"], &[]),
            &allowed
        ));
        assert!(!rule_covered(&rule(&[""], &["pods"], &["get"], &[]), &[]));
    }

    #[test]
    fn wildcards_and_names_in_the_allowlist() {
        let allowed = [
            rule(&["batch"], &["*"], &["get"], &[]),
            rule(&[""], &["*/status"], &["get"], &[]),
            rule(&[""], &["configmaps"], &["*"], &["app-config"]),
        ];
        assert!(rule_covered(
            &rule(&["batch"], &["jobs", "cronjobs"], &["get"], &[]),
            &allowed
        ));
        assert!(rule_covered(
            &rule(&[""], &["pods/status"], &["get"], &[]),
            &allowed
        ));
        assert!(!rule_covered(
            &rule(&[""], &["pods"], &["get"], &[]),
            &allowed
        ));
        assert!(rule_covered(
            &rule(&[""], &["configmaps"], &["update"], &["app-config"]),
            &allowed
        ));
        assert!(!rule_covered(
            &rule(&[""], &["configmaps"], &["update"], &[]),
            &allowed
        ));
        assert!(!rule_covered(
            &rule(&[""], &["configmaps"], &["update"], &["app-config", "x"]),
            &allowed
        ));
    }
}
