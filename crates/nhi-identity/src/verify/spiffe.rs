//! The SPIFFE ID form of an identity, `spiffe://<trust-domain>/ns/<namespace>/mi/<name>`, and of
//! a task certificate it delegated: `.../mi/<name>/task/<task-id>`, one `task` pair per level.

/// An identity named by its SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpiffeIdentity {
    pub spiffe_id: String,
    pub trust_domain: String,
    pub namespace: String,
    /// The MachineIdentity: the certificate's holder, or for a task certificate the identity that
    /// delegated (see `tasks`).
    pub name: String,
    /// The task IDs from the identity down (empty: the identity's own certificate). A task
    /// certificate is its own identity, never its parent: check this before trusting `name`.
    pub tasks: Vec<String>,
}

impl SpiffeIdentity {
    /// Whether this is a task certificate (delegated), not an identity's own.
    pub fn is_task(&self) -> bool {
        !self.tasks.is_empty()
    }
}

/// The most `task` levels a SPIFFE ID has.
pub const MAX_TASK_LEVELS: usize = 8;
/// The longest task ID.
pub const MAX_TASK_ID: usize = 64;

/// Whether `id` can be a task ID: one SPIFFE path segment of at most [`MAX_TASK_ID`] letters,
/// digits, '.', '-' or '_', not '.' or '..'.
pub fn valid_task_id(id: &str) -> bool {
    (1..=MAX_TASK_ID).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
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
    let form = || {
        format!(
            "{uri:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/mi/<name>[/task/<id>...]"
        )
    };
    let segments: Vec<&str> = path.split('/').collect();
    let [ns_key, namespace, mi_key, name, rest @ ..] = segments.as_slice() else {
        return Err(form());
    };
    if *ns_key != "ns" || *mi_key != "mi" || !dns_label(namespace) || !object_name(name) {
        return Err(form());
    }
    if rest.len() % 2 != 0 || rest.len() / 2 > MAX_TASK_LEVELS {
        return Err(form());
    }
    let mut tasks = Vec::with_capacity(rest.len() / 2);
    for pair in rest.chunks(2) {
        let [key, id] = pair else {
            return Err(form());
        };
        if *key != "task" || !valid_task_id(id) {
            return Err(form());
        }
        tasks.push(id.to_string());
    }
    Ok(SpiffeIdentity {
        spiffe_id: uri.to_string(),
        trust_domain: trust_domain.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
        tasks,
    })
}

/// Whether `s` is a DNS label (RFC 1123): 1 to 63 lowercase letters, digits and '-', starting
/// and ending with a letter or digit.
pub fn dns_label(s: &str) -> bool {
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
        assert!(!id.is_task());
    }

    #[test]
    fn parses_task_certificates_as_tasks() {
        let id = parse_spiffe_id("spiffe://cluster.local/ns/support/mi/agent/task/T-1/task/T-1.a")
            .unwrap();
        assert_eq!(id.name, "agent");
        assert_eq!(id.tasks, ["T-1", "T-1.a"]);
        assert!(id.is_task());
        let deep = format!(
            "spiffe://cluster.local/ns/a/mi/b{}",
            "/task/t".repeat(MAX_TASK_LEVELS + 1)
        );
        assert!(parse_spiffe_id(&deep).is_err());
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
            "spiffe://cluster.local/ns/a/mi/b/task",
            "spiffe://cluster.local/ns/a/mi/b/task/",
            "spiffe://cluster.local/ns/a/mi/b/task/..",
            "spiffe://cluster.local/ns/a/mi/b/job/t1",
            "spiffe://cluster.local/ns/a/mi/b/task/t%201",
        ] {
            assert!(parse_spiffe_id(bad).is_err(), "{bad}");
        }
    }
}
