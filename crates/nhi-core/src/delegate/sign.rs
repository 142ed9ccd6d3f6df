//! The task certificate for a child's key: the decided plan (its SPIFFE ID, grants, attributes,
//! lifetime and delegation) signed for the public key of the child's PKCS#10 request, whose
//! signature proves the child holds the private key (which never leaves it).

use rcgen::SubjectPublicKeyInfo;
use time::OffsetDateTime;

use super::decide::ChildPlan;
use crate::ca::CertificateAuthority;
use crate::issue::leaf::{IssueError, LeafRequest, SignedLeaf, leaf_common_name, sign_leaf};
use crate::podcert::key_type::{CsrError, KubeletKeyType, requested_key};
use nhi_api::Usage;
use nhi_identity::delegation::{DELEGATION_OID, encode as encode_delegation};
use nhi_identity::extension::{EXTENSION_OID, IdentityClaims, encode as encode_claims};

/// A signed task certificate: the chain the child presents, and the leaf's facts.
#[derive(Clone, Debug)]
pub struct SignedChild {
    /// The leaf, then the CA's chain (as an identity Secret's `tls.crt`).
    pub chain_pem: String,
    pub leaf: SignedLeaf,
}

/// Why a child could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignChildError {
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error("the child's key is {0}; use ECDSA P-256 or P-384, Ed25519, or RSA 3072 or 4096")]
    UnsupportedKey(String),
    #[error("the task certificate cannot be made: {0}")]
    Extension(String),
    #[error(transparent)]
    Issue(#[from] IssueError),
}

/// Signs `plan` in `namespace` (the identity's) for the key of `csr_der`, at `now`. A task
/// certificate authenticates a client: it has the client usage only.
pub fn sign_child(
    ca: &CertificateAuthority,
    plan: &ChildPlan,
    namespace: &str,
    csr_der: &[u8],
    now: OffsetDateTime,
) -> Result<SignedChild, SignChildError> {
    let (kind, spki) = requested_key(csr_der)?;
    if matches!(kind, KubeletKeyType::EcdsaP521 | KubeletKeyType::Other(_)) {
        return Err(SignChildError::UnsupportedKey(kind.name()));
    }
    let claims = IdentityClaims {
        grants: plan.grants.clone(),
        attributes: plan.attributes.clone(),
    };
    let mut extensions = vec![];
    if !claims.is_empty() {
        let der = encode_claims(&claims).map_err(|e| SignChildError::Extension(e.to_string()))?;
        extensions.push((EXTENSION_OID.to_vec(), der));
    }
    let delegation = encode_delegation(&plan.delegation)
        .map_err(|e| SignChildError::Extension(e.to_string()))?;
    extensions.push((DELEGATION_OID.to_vec(), delegation));
    let request = LeafRequest {
        spiffe_id: plan.spiffe_id.clone(),
        common_name: leaf_common_name(&plan.spiffe_id),
        namespace: namespace.to_string(),
        dns_names: vec![],
        usages: vec![Usage::Client],
        ttl: plan.not_after - now,
        not_after_cap: Some(plan.not_after),
        extensions,
    };
    let public_key = SubjectPublicKeyInfo::from_der(&spki)
        .map_err(|e| SignChildError::Issue(IssueError::Signing(e)))?;
    let leaf = sign_leaf(ca, &request, &public_key, now)?;
    let chain_pem = format!("{}{}", leaf.leaf_pem, ca.chain_pem());
    Ok(SignedChild { chain_pem, leaf })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delegate::decide::{
        DelegationPolicy, Parent, ParentCertificate, Standing, TaskRequest, decide,
    };
    use crate::issue::keys::generate_key;
    use nhi_api::KeyAlgorithm;
    use nhi_identity::verify::{
        Purpose, Revocation, TrustBundle, VerifyError, certificates_from_pem,
        verify_identity_or_task,
    };
    use rcgen::CertificateParams;
    use time::Duration;

    fn plan(now: OffsetDateTime) -> ChildPlan {
        let parent = Parent {
            identity: "support/agent".into(),
            policy: Some(DelegationPolicy {
                max_child_ttl: Duration::minutes(5),
                max_depth: 1,
                delegable: None,
                max_depth_by: None,
            }),
            policy_denial: None,
            standing: Standing::Current,
            current_grants: ["payments.refund".to_string()].into(),
            grant_ends: Default::default(),
            certificate: ParentCertificate {
                serial_hex: "7f01".into(),
                spiffe_id: "spiffe://cluster.local/ns/support/mi/agent".into(),
                not_after: now + Duration::minutes(30),
                grants: ["payments.refund".to_string()].into(),
                attributes: [("model".to_string(), "m-1".to_string())].into(),
                delegation: None,
            },
        };
        let task = TaskRequest {
            task_id: "T-1".into(),
            purpose: "refund".into(),
            input_digest: None,
            grants: ["payments.refund".to_string()].into(),
            ttl: None,
        };
        decide(&parent, &task, now).unwrap()
    }

    #[test]
    fn the_child_key_is_certified_as_the_task_with_its_grants_and_chain() {
        let now = OffsetDateTime::now_utc();
        let m = CertificateAuthority::generate_root("t", Duration::days(30), now).unwrap();
        let ca = CertificateAuthority::from_material(&m, now).unwrap();
        let plan = plan(now);
        for alg in [KeyAlgorithm::EcdsaP256, KeyAlgorithm::Ed25519] {
            let child_key = generate_key(alg).unwrap();
            let csr = CertificateParams::default()
                .serialize_request(&child_key)
                .unwrap();
            let signed = sign_child(&ca, &plan, "support", csr.der(), now).unwrap();
            let v = verify_identity_or_task(
                &certificates_from_pem(&signed.chain_pem).unwrap(),
                &TrustBundle::from_pem(ca.trust_bundle_pem()).unwrap(),
                Revocation::NotChecked,
                Purpose::Client,
                now,
            )
            .unwrap();
            assert_eq!(v.identity.tasks, ["T-1"]);
            assert!(v.has_grant("payments.refund"));
            assert_eq!(v.attributes["model"], "m-1");
            assert_eq!(
                v.delegation.as_ref().unwrap().ancestors[0].serial_hex,
                "7f01"
            );
            assert_eq!(v.not_after, plan.not_after.replace_nanosecond(0).unwrap());
            // A client only: it cannot serve TLS as the task.
            let as_server = verify_identity_or_task(
                &certificates_from_pem(&signed.chain_pem).unwrap(),
                &TrustBundle::from_pem(ca.trust_bundle_pem()).unwrap(),
                Revocation::NotChecked,
                Purpose::Server,
                now,
            );
            assert!(
                matches!(as_server, Err(VerifyError::WrongUsage(_))),
                "{as_server:?}"
            );
        }
    }

    #[test]
    fn a_request_whose_signature_does_not_verify_is_refused() {
        let now = OffsetDateTime::now_utc();
        let m = CertificateAuthority::generate_root("t", Duration::days(30), now).unwrap();
        let ca = CertificateAuthority::from_material(&m, now).unwrap();
        let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        let mut csr = CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec();
        let last = csr.len() - 1;
        csr[last] ^= 0x01;
        let err = sign_child(&ca, &plan(now), "support", &csr, now).unwrap_err();
        assert!(matches!(err, SignChildError::Csr(_)), "{err}");
    }
}
