//! The key type of a PodCertificateRequest, read from its stub CSR, and how it compares with the
//! key algorithm an identity issues.

use nhi_api::KeyAlgorithm;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// A key type as the kubelet names it (`keyType` of a `podCertificate` volume).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeletKeyType {
    Rsa3072,
    Rsa4096,
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Ed25519,
    /// Anything else (an RSA size or curve the kubelet does not generate), described.
    Other(String),
}

impl KubeletKeyType {
    /// The kubelet's name for it.
    pub fn name(&self) -> String {
        match self {
            KubeletKeyType::Rsa3072 => "RSA3072".into(),
            KubeletKeyType::Rsa4096 => "RSA4096".into(),
            KubeletKeyType::EcdsaP256 => "ECDSAP256".into(),
            KubeletKeyType::EcdsaP384 => "ECDSAP384".into(),
            KubeletKeyType::EcdsaP521 => "ECDSAP521".into(),
            KubeletKeyType::Ed25519 => "ED25519".into(),
            KubeletKeyType::Other(s) => s.clone(),
        }
    }
}

/// The kubelet key type that matches an identity's key algorithm, if the kubelet can make one.
pub fn kubelet_key_type(alg: KeyAlgorithm) -> Option<KubeletKeyType> {
    match alg {
        KeyAlgorithm::EcdsaP256 => Some(KubeletKeyType::EcdsaP256),
        KeyAlgorithm::EcdsaP384 => Some(KubeletKeyType::EcdsaP384),
        KeyAlgorithm::Ed25519 => Some(KubeletKeyType::Ed25519),
        KeyAlgorithm::Rsa3072 => Some(KubeletKeyType::Rsa3072),
        KeyAlgorithm::Rsa2048 => None,
    }
}

/// Why a stub CSR cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsrError {
    #[error("the stub PKCS#10 request does not parse: {0}")]
    Unparsable(String),
    #[error("the stub PKCS#10 request's signature does not verify with its own public key")]
    BadSignature,
}

/// The requested key's type and its SubjectPublicKeyInfo (DER), from the stub CSR (DER). The
/// signature is checked too (the apiserver did already: this is only a second look).
pub fn requested_key(stub_csr_der: &[u8]) -> Result<(KubeletKeyType, Vec<u8>), CsrError> {
    let (rest, csr) = X509CertificationRequest::from_der(stub_csr_der)
        .map_err(|e| CsrError::Unparsable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Unparsable(
            "trailing bytes after the request".into(),
        ));
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    let spki = &csr.certification_request_info.subject_pki;
    let algorithm = &spki.algorithm.algorithm;
    let kind = if *algorithm == OID_SIG_ED25519 {
        KubeletKeyType::Ed25519
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => KubeletKeyType::EcdsaP256,
            Some(c) if c == OID_NIST_EC_P384 => KubeletKeyType::EcdsaP384,
            Some(c) if c == OID_NIST_EC_P521 => KubeletKeyType::EcdsaP521,
            Some(c) => KubeletKeyType::Other(format!("ECDSA on curve {c}")),
            None => KubeletKeyType::Other("ECDSA without a named curve".into()),
        }
    } else if *algorithm == OID_PKCS1_RSAENCRYPTION {
        match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => match rsa.key_size() {
                3072 => KubeletKeyType::Rsa3072,
                4096 => KubeletKeyType::Rsa4096,
                bits => KubeletKeyType::Other(format!("RSA{bits}")),
            },
            _ => KubeletKeyType::Other("RSA with an unreadable modulus".into()),
        }
    } else {
        KubeletKeyType::Other(format!("key algorithm {algorithm}"))
    };
    Ok((kind, spki.raw.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::keys::generate_key;
    use rcgen::{CertificateParams, KeyPair};

    fn stub_csr(key: &KeyPair) -> Vec<u8> {
        // What the kubelet sends: an empty subject, signed with the new key.
        CertificateParams::default()
            .serialize_request(key)
            .unwrap()
            .der()
            .to_vec()
    }

    #[test]
    fn each_identity_algorithm_the_kubelet_can_make_is_recognised() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::Rsa3072,
        ] {
            let key = generate_key(alg).unwrap();
            let (kind, spki) = requested_key(&stub_csr(&key)).unwrap();
            assert_eq!(Some(kind), kubelet_key_type(alg), "{alg:?}");
            assert_eq!(spki, rcgen::PublicKeyData::subject_public_key_info(&key));
        }
    }

    #[test]
    fn rsa_2048_is_named_but_matches_no_kubelet_type() {
        let key = generate_key(KeyAlgorithm::Rsa2048).unwrap();
        let (kind, _) = requested_key(&stub_csr(&key)).unwrap();
        assert_eq!(kind, KubeletKeyType::Other("RSA2048".into()));
        assert_eq!(kubelet_key_type(KeyAlgorithm::Rsa2048), None);
    }

    #[test]
    fn garbage_and_a_forged_signature_are_refused() {
        assert!(matches!(
            requested_key(b"not a csr"),
            Err(CsrError::Unparsable(_))
        ));
        let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
        let mut der = stub_csr(&key);
        let last = der.len() - 1;
        der[last] ^= 0x01;
        assert!(requested_key(&der).is_err());
    }
}
