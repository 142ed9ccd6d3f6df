//! The patterns policies are written in: grant patterns (`payments.process`, `payments.*`, `*`),
//! DNS name patterns (`api.example.com`, `*.example.com`), reserved attribute keys (`key`,
//! `prefix*`), and the names a namespace owns (its service names).

/// Whether grant pattern `pattern` matches `grant`: the grant itself, `prefix.*` (any grant
/// below `prefix`, not `prefix` itself), or `*` (any grant).
pub fn grant_matches(pattern: &str, grant: &str) -> bool {
    if pattern == "*" || pattern == grant {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) if prefix.ends_with('.') => {
            grant.starts_with(prefix) && grant.len() > prefix.len()
        }
        _ => false,
    }
}

/// Whether DNS pattern `pattern` matches `name`: the name itself, or `*.<domain>` for any name
/// below the domain (a wildcard name included: `*.a.example.com` is below `*.example.com`).
pub fn dns_matches(pattern: &str, name: &str) -> bool {
    if pattern == name {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => {
            name.ends_with(suffix) && name.len() > suffix.len()
        }
        _ => false,
    }
}

/// Whether a certificate for `name` would be valid for some name DNS pattern `pattern` covers:
/// `pattern` matches it, or `name` is a wildcard over a name `pattern` covers (`*.example.com`
/// is valid for `api.example.com`). Reservations are checked with this.
pub fn dns_overlaps(pattern: &str, name: &str) -> bool {
    let below = |domain: &str| pattern.ends_with(domain) && pattern.len() > domain.len();
    dns_matches(pattern, name) || name.strip_prefix('*').is_some_and(below)
}

/// Whether `name` is one of namespace `namespace`'s own service names: `<service>.<ns>.svc` or
/// `<service>.<ns>.svc.<cluster_domain>`, with `<service>` a single label (no wildcard).
pub fn own_service_name(name: &str, namespace: &str, cluster_domain: &str) -> bool {
    let Some((service, rest)) = name.split_once('.') else {
        return false;
    };
    let is_label = !service.is_empty()
        && service
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let short = format!("{namespace}.svc");
    let long = format!("{namespace}.svc.{cluster_domain}");
    is_label && (rest == short || rest == long)
}

/// Whether reserved-attribute pattern `pattern` covers attribute key `key`: the key itself, or
/// a prefix ending in `*`.
pub fn attribute_reserved(pattern: &str, key: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => key.starts_with(prefix),
        None => pattern == key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_patterns() {
        assert!(grant_matches("*", "anything.at.all"));
        assert!(grant_matches("payments.process", "payments.process"));
        assert!(grant_matches("payments.*", "payments.process"));
        assert!(grant_matches("payments.*", "payments.refund.partial"));
        assert!(!grant_matches("payments.*", "payments"));
        assert!(!grant_matches("payments.*", "paymentsx.process"));
        assert!(!grant_matches("payments.*", "orders.payments.process"));
        assert!(!grant_matches("payments.process", "payments.processx"));
        assert!(!grant_matches("payments*", "paymentsx"));
    }

    #[test]
    fn dns_patterns() {
        assert!(dns_matches("api.example.com", "api.example.com"));
        assert!(!dns_matches("api.example.com", "x.api.example.com"));
        assert!(dns_matches("*.example.com", "api.example.com"));
        assert!(dns_matches("*.example.com", "a.b.example.com"));
        assert!(dns_matches("*.example.com", "*.example.com"));
        assert!(dns_matches("*.example.com", "*.a.example.com"));
        assert!(!dns_matches("*.example.com", "example.com"));
        assert!(!dns_matches("*.example.com", "badexample.com"));
        assert!(!dns_matches("api.example.com", "*.example.com"));
    }

    #[test]
    fn a_wildcard_name_overlaps_what_is_below_it() {
        assert!(dns_overlaps("api.example.com", "*.example.com"));
        assert!(dns_overlaps("*.a.example.com", "*.example.com"));
        assert!(dns_overlaps("*.example.com", "*.a.example.com"));
        assert!(dns_overlaps("api.example.com", "api.example.com"));
        assert!(!dns_overlaps("api.example.com", "*.other.com"));
        assert!(!dns_overlaps("example.com", "*.example.com"));
        assert!(!dns_overlaps("api.example.com", "web.example.com"));
    }

    #[test]
    fn own_service_names_are_single_labels_in_the_namespace() {
        let own = |n| own_service_name(n, "payments", "cluster.local");
        assert!(own("api.payments.svc"));
        assert!(own("api.payments.svc.cluster.local"));
        assert!(!own("*.payments.svc"));
        assert!(!own("a.b.payments.svc"));
        assert!(!own("api.payments.svc.evil.local"));
        assert!(!own("api.shop.svc"));
        assert!(!own("payments.svc"));
        assert!(!own(".payments.svc"));
        assert!(!own("kubernetes.default.svc"));
        assert!(own_service_name(
            "kubernetes.default.svc",
            "default",
            "cluster.local"
        ));
    }

    #[test]
    fn reserved_attribute_keys() {
        assert!(attribute_reserved("security-level", "security-level"));
        assert!(!attribute_reserved("security-level", "security-levels"));
        assert!(attribute_reserved("compliance.*", "compliance.pci"));
        assert!(!attribute_reserved("compliance.*", "compliance"));
        assert!(attribute_reserved("platform*", "platform-tier"));
    }
}
