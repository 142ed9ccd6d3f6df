//! The SPIFFE ID form of an identity: `spiffe://<trust-domain>/ns/<namespace>/mi/<name>`.

/// An identity named by its SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpiffeIdentity {
    pub spiffe_id: String,
    pub trust_domain: String,
    pub namespace: String,
    pub name: String,
}

/// Parses a SPIFFE ID of the operator's form, refusing anything else (other paths, query,
/// fragment, port, user info, upper case, empty or dot segments).
pub fn parse_spiffe_id(uri: &str) -> Result<SpiffeIdentity, String> {
    let rest = uri
        .strip_prefix("spiffe://")
        .ok_or_else(|| format!("{uri:?} is not a spiffe:// URI"))?;
    let (trust_domain, path) = rest
        .split_once('/')
        .ok_or_else(|| format!("{uri:?} has no path"))?;
    let td_ok = !trust_domain.is_empty()
        && trust_domain.len() <= 255
        && trust_domain
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'));
    if !td_ok {
        return Err(format!("{uri:?} has an invalid trust domain"));
    }
    let segments: Vec<&str> = path.split('/').collect();
    let [ns_key, namespace, mi_key, name] = segments.as_slice() else {
        return Err(format!(
            "{uri:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/mi/<name>"
        ));
    };
    if *ns_key != "ns" || *mi_key != "mi" || !dns_label(namespace) || !object_name(name) {
        return Err(format!(
            "{uri:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/mi/<name>"
        ));
    }
    Ok(SpiffeIdentity {
        spiffe_id: uri.to_string(),
        trust_domain: trust_domain.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

fn dns_label(s: &str) -> bool {
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| edge(c) || c == '-')
        && s.starts_with(edge)
        && s.ends_with(edge)
}

fn object_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_operator_form() {
        let id = parse_spiffe_id("spiffe://cluster.local/ns/payments/mi/api").unwrap();
        assert_eq!(id.trust_domain, "cluster.local");
        assert_eq!(id.namespace, "payments");
        assert_eq!(id.name, "api");
    }

    #[test]
    fn refuses_other_forms() {
        for bad in [
            "https://cluster.local/ns/a/mi/b",
            "spiffe://cluster.local",
            "spiffe:///ns/a/mi/b",
            "spiffe://Cluster.local/ns/a/mi/b",
            "spiffe://cluster.local:8443/ns/a/mi/b",
            "spiffe://cluster.local/ns/a/sa/b",
            "spiffe://cluster.local/ns/a/mi/b/c",
            "spiffe://cluster.local/ns/a/mi/",
            "spiffe://cluster.local/ns/../mi/b",
            "spiffe://cluster.local/ns/a/mi/b?x=1",
            "spiffe://cluster.local/ns/A/mi/b",
        ] {
            assert!(parse_spiffe_id(bad).is_err(), "{bad}");
        }
    }
}
