//! The ClusterTrustBundle's content from the CA's trust bundle: Kubernetes accepts only CA
//! certificates, each once, in plain PEM; a provided CA's `ca.crt` may hold more (a leaf, a
//! duplicate, text between blocks), which would make the API refuse the whole bundle.

use std::collections::BTreeSet;

use x509_parser::prelude::{FromDer, X509Certificate};

/// The CA certificates of `bundle_pem`, each once, in their order, re-encoded as plain PEM;
/// an error when none is left.
pub fn cluster_trust_bundle(bundle_pem: &str) -> Result<String, String> {
    let blocks =
        pem::parse_many(bundle_pem).map_err(|e| format!("the CA bundle does not parse: {e}"))?;
    let mut seen = BTreeSet::new();
    let mut out = String::new();
    for block in blocks.iter().filter(|b| b.tag() == "CERTIFICATE") {
        let Ok((_, cert)) = X509Certificate::from_der(block.contents()) else {
            continue;
        };
        if !cert.is_ca() || !seen.insert(block.contents().to_vec()) {
            continue;
        }
        out.push_str(&pem::encode(&pem::Pem::new(
            "CERTIFICATE",
            block.contents().to_vec(),
        )));
    }
    if out.is_empty() {
        return Err("the CA bundle holds no CA certificate".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use time::{Duration, OffsetDateTime};

    fn root(name: &str) -> String {
        let now = OffsetDateTime::now_utc();
        let m = CertificateAuthority::generate_root(name, Duration::days(30), now).unwrap();
        CertificateAuthority::from_material(&m, now)
            .unwrap()
            .trust_bundle_pem()
            .to_string()
    }

    #[test]
    fn only_ca_certificates_each_once_in_plain_pem() {
        let (a, b) = (root("a"), root("b"));
        let leaf = rcgen::generate_simple_self_signed(vec!["x.example".into()]).unwrap();
        let messy = format!("a note\n{a}\n{}{b}{a}", leaf.cert.pem());
        let out = cluster_trust_bundle(&messy).unwrap();
        assert_eq!(out.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(!out.contains("a note"));
        assert_eq!(cluster_trust_bundle(&out).unwrap(), out, "stable");
        assert!(cluster_trust_bundle(&leaf.cert.pem()).is_err());
    }
}
