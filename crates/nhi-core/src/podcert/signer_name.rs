//! The signer name the operator answers PodCertificateRequests for, and the name of the
//! ClusterTrustBundle it publishes that signer's roots in (which Kubernetes derives from it).

use nhi_identity::verify::spiffe::dns_label;

/// The signer name by default. A second operator on the same cluster (another trust domain, or
/// one scoped to a namespace) serves a name of its own.
pub const DEFAULT_SIGNER_NAME: &str = "nhi.dev/identity";

/// Checks `name` as Kubernetes checks a signer name (`example.com/path`: one `/`, a domain of at
/// least two DNS labels, a path of DNS labels separated by dots), and refuses the names
/// Kubernetes reserves for itself.
pub fn validate_signer_name(name: &str) -> Result<(), String> {
    let shape = || format!("signer name {name:?} must be of the form example.com/signer-name");
    let (domain, path) = name.split_once('/').ok_or_else(shape)?;
    if path.contains('/') || domain.split('.').count() < 2 || domain.len() > 253 || path.len() > 253
    {
        return Err(shape());
    }
    for label in domain.split('.').chain(path.split('.')) {
        if !dns_label(label) {
            return Err(format!(
                "signer name {name:?}: {label:?} is not a DNS label (lowercase letters, digits \
                 and '-', at most 63, starting and ending with a letter or digit)"
            ));
        }
    }
    for reserved in ["kubernetes.io", "k8s.io"] {
        if domain == reserved || domain.ends_with(&format!(".{reserved}")) {
            return Err(format!(
                "signer name {name:?}: the {reserved} domain is reserved for Kubernetes' own signers"
            ));
        }
    }
    Ok(())
}

/// The ClusterTrustBundle holding `signer`'s roots: Kubernetes requires a signer-linked bundle's
/// name to be the signer name with `/` as `:`, then `:` and a suffix of the publisher's choice.
pub fn trust_bundle_name(signer: &str) -> String {
    format!("{}:roots", signer.replace('/', ":"))
}

/// Why the signer stays off (None: it runs). A signer name and its ClusterTrustBundle are
/// cluster-wide: an operator scoped to one namespace that answered the default name would
/// compete with the cluster's operator for every request and overwrite its published roots, so it
/// runs the signer only under a name of its own.
pub fn signer_off_reason(enabled: bool, signer: &str, namespace_scoped: bool) -> Option<String> {
    if !enabled {
        return Some("turned off (--pod-certificates=false)".into());
    }
    if namespace_scoped && signer == DEFAULT_SIGNER_NAME {
        return Some(format!(
            "the operator watches one namespace and {DEFAULT_SIGNER_NAME} is the cluster's signer \
             name: give this operator a name of its own with --pod-certificate-signer"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_and_other_domain_qualified_names_are_accepted() {
        for ok in [
            DEFAULT_SIGNER_NAME,
            "bench.nhi.dev/identity",
            "example.com/team-a.identity",
        ] {
            assert_eq!(validate_signer_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn malformed_and_reserved_names_are_refused_with_the_reason() {
        for (bad, why) in [
            ("identity", "of the form"),
            ("nhi/identity", "of the form"),
            ("nhi.dev/a/b", "of the form"),
            ("nhi.dev/", "not a DNS label"),
            ("Nhi.dev/identity", "not a DNS label"),
            ("nhi.dev/-x", "not a DNS label"),
            ("kubernetes.io/kube-apiserver-client-pod", "reserved"),
            ("x.kubernetes.io/mine", "reserved"),
            ("k8s.io/mine", "reserved"),
        ] {
            let err = validate_signer_name(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn a_namespace_scoped_operator_signs_only_under_a_name_of_its_own() {
        assert_eq!(signer_off_reason(true, DEFAULT_SIGNER_NAME, false), None);
        assert_eq!(signer_off_reason(true, "team.example.com/id", true), None);
        let why = signer_off_reason(true, DEFAULT_SIGNER_NAME, true).expect("off");
        assert!(why.contains("--pod-certificate-signer"), "{why}");
        let why = signer_off_reason(false, "team.example.com/id", false).expect("off");
        assert!(why.contains("--pod-certificates=false"), "{why}");
    }

    #[test]
    fn a_path_longer_than_kubernetes_allows_is_refused() {
        let long = format!("nhi.dev/{}", vec!["a".repeat(60); 5].join("."));
        assert!(validate_signer_name(&long).is_err());
    }

    #[test]
    fn the_bundle_name_is_the_signer_name_with_colons_and_a_suffix() {
        assert_eq!(
            trust_bundle_name(DEFAULT_SIGNER_NAME),
            "nhi.dev:identity:roots"
        );
        assert_eq!(
            trust_bundle_name("bench.nhi.dev/identity"),
            "bench.nhi.dev:identity:roots"
        );
    }
}
