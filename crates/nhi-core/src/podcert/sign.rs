//! The certificate for a pod's key: the identity's leaf, signed for the public key of the
//! request's stub CSR, and the chain the PodCertificateRequest carries.

use rcgen::SubjectPublicKeyInfo;
use time::OffsetDateTime;

use crate::ca::CertificateAuthority;
use crate::issue::leaf::{IssueError, LeafRequest, SignedLeaf, sign_leaf};

/// A pod certificate: `status.certificateChain` and the leaf's facts.
#[derive(Clone, Debug)]
pub struct PodCertificate {
    /// The leaf, then the CA's intermediates if it has any (a self-signed root is left out: pods
    /// take it from the ClusterTrustBundle).
    pub chain_pem: String,
    pub leaf: SignedLeaf,
}

/// Signs `req` for the SubjectPublicKeyInfo `spki_der` (from
/// [`requested_key`](super::key_type::requested_key)).
pub fn sign_pod_certificate(
    ca: &CertificateAuthority,
    req: &LeafRequest,
    spki_der: &[u8],
    now: OffsetDateTime,
) -> Result<PodCertificate, IssueError> {
    let public_key = SubjectPublicKeyInfo::from_der(spki_der).map_err(IssueError::Signing)?;
    let leaf = sign_leaf(ca, req, &public_key, now)?;
    let chain_pem = match ca.is_self_signed_root() {
        true => leaf.leaf_pem.clone(),
        false => format!("{}{}", leaf.leaf_pem, ca.chain_pem()),
    };
    Ok(PodCertificate { chain_pem, leaf })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::keys::generate_key;
    use crate::issue::leaf::{leaf_common_name, spiffe_id};
    use crate::podcert::key_type::requested_key;
    use ::time::Duration;
    use nhi_api::{KeyAlgorithm, Usage};
    use rcgen::CertificateParams;
    use x509_parser::prelude::*;

    #[test]
    fn the_certificate_binds_the_pods_key_to_the_identity_and_chains_to_the_ca() {
        let now = OffsetDateTime::now_utc();
        let m = CertificateAuthority::generate_root("t", Duration::days(30), now).unwrap();
        let ca = CertificateAuthority::from_material(&m, now).unwrap();
        let id = spiffe_id("cluster.local", "shop", "web");
        let req = LeafRequest {
            common_name: leaf_common_name(&id),
            spiffe_id: id.clone(),
            namespace: "shop".into(),
            dns_names: vec![],
            usages: vec![Usage::Client],
            ttl: Duration::hours(1),
            not_after_cap: None,
            extensions: vec![],
        };
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::Rsa3072,
        ] {
            let pod_key = generate_key(alg).unwrap();
            let csr = CertificateParams::default()
                .serialize_request(&pod_key)
                .unwrap();
            let (_, spki) = requested_key(csr.der()).unwrap();
            let cert = sign_pod_certificate(&ca, &req, &spki, now).unwrap();
            assert_eq!(
                cert.chain_pem.matches("BEGIN CERTIFICATE").count(),
                1,
                "a root is left out"
            );
            let (_, leaf) = X509Certificate::from_der(&cert.leaf.leaf_der).unwrap();
            assert_eq!(
                leaf.public_key().raw,
                spki.as_slice(),
                "{alg:?}: the pod's key"
            );
            let (_, root) = X509Certificate::from_der(ca.cert_der()).unwrap();
            leaf.verify_signature(Some(root.public_key())).unwrap();
            let san = leaf.subject_alternative_name().unwrap().unwrap();
            assert!(
                san.value
                    .general_names
                    .iter()
                    .any(|n| matches!(n, GeneralName::URI(u) if *u == id))
            );
        }
    }
}
