//! The certificate authority in memory: its signing key, certificate chain and trust bundle.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P384_SHA384, PublicKeyData,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::pem_util::{pem_certificates, to_pem_chain};

/// Errors loading or creating a certificate authority.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("the CA Secret has no {0}")]
    MissingKey(&'static str),
    #[error("the CA certificate cannot be parsed: {0}")]
    BadCertificate(String),
    #[error("the CA private key cannot be parsed (contents not shown)")]
    BadPrivateKey,
    #[error("the CA private key does not match the CA certificate")]
    KeyMismatch,
    #[error("the CA certificate is not a CA (basicConstraints cA is not true)")]
    NotACa,
    #[error(
        "the CA certificate has expired or is not yet valid (valid {not_before} to {not_after})"
    )]
    OutsideValidity {
        not_before: String,
        not_after: String,
    },
    #[error("creating the CA failed: {0}")]
    Create(#[from] rcgen::Error),
}

/// A loaded certificate authority that signs identity certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// DER of the CA's own certificate.
    cert_der: Vec<u8>,
    /// PEM of the chain to append to issued leaves: the CA certificate and any intermediates
    /// above it, as found in the CA Secret's `tls.crt`.
    chain_pem: String,
    /// PEM of the trust bundle relying parties should trust.
    trust_bundle_pem: String,
    /// DER of the CA's SubjectPublicKeyInfo, to recognise its signatures.
    public_key_der: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// PEM-encoded CA material, as stored in the CA Secret.
pub struct CaMaterial {
    /// `tls.crt`: the CA certificate first, then any intermediates up to the root.
    pub cert_chain_pem: String,
    /// `tls.key`: the CA private key.
    pub key_pem: String,
    /// `ca.crt`: the trust bundle, when given separately (a provided intermediate CA).
    pub trust_bundle_pem: Option<String>,
}

impl fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads a CA from its PEM material, checking that the key matches, that it is a CA and that
    /// it is valid at `now`.
    pub fn from_material(material: &CaMaterial, now: OffsetDateTime) -> Result<Self, CaError> {
        let certs = pem_certificates(&material.cert_chain_pem)
            .map_err(|e| CaError::BadCertificate(e.to_string()))?;
        let first = certs
            .first()
            .ok_or(CaError::MissingKey("certificate in tls.crt"))?;
        let (_, cert) =
            X509Certificate::from_der(first).map_err(|e| CaError::BadCertificate(e.to_string()))?;
        if !cert.is_ca() {
            return Err(CaError::NotACa);
        }
        let key = KeyPair::from_pem(&material.key_pem).map_err(|_| CaError::BadPrivateKey)?;
        let public_key_der = cert.public_key().raw.to_vec();
        if key.subject_public_key_info() != public_key_der {
            return Err(CaError::KeyMismatch);
        }
        let not_before = cert.validity().not_before.to_datetime();
        let not_after = cert.validity().not_after.to_datetime();
        if now < not_before || now >= not_after {
            return Err(CaError::OutsideValidity {
                not_before: super::rfc3339(not_before),
                not_after: super::rfc3339(not_after),
            });
        }
        let issuer = Issuer::from_ca_cert_der(&first.clone().into(), key)?;
        let chain_pem = to_pem_chain(&certs);
        let trust_bundle_pem = match &material.trust_bundle_pem {
            Some(b) if !b.trim().is_empty() => b.clone(),
            // Self-contained chain: trust its last certificate (the root, or the CA itself).
            _ => to_pem_chain(&certs[certs.len() - 1..]),
        };
        Ok(CertificateAuthority {
            issuer,
            cert_der: first.clone(),
            chain_pem,
            trust_bundle_pem,
            public_key_der,
            not_before,
            not_after,
        })
    }

    /// Creates a new self-signed root CA with an ECDSA P-384 key.
    pub fn generate_root(
        common_name: &str,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<CaMaterial, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "nhi-operator");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + lifetime;
        params.serial_number = Some(crate::issue::leaf::random_serial());
        let cert = params.self_signed(&key)?;
        Ok(CaMaterial {
            cert_chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            trust_bundle_pem: None,
        })
    }

    /// The signer for issued certificates.
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// PEM of the CA chain appended to every issued leaf.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// PEM of the trust bundle (`ca.crt`).
    pub fn trust_bundle_pem(&self) -> &str {
        &self.trust_bundle_pem
    }

    /// DER of the CA certificate.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// DER of the CA's SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    /// End of the CA certificate's validity: no leaf may outlive it.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Start of the CA certificate's validity.
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn generated_root_loads_and_is_a_ca() {
        let m =
            CertificateAuthority::generate_root("test root", Duration::days(365), now()).unwrap();
        let ca = CertificateAuthority::from_material(&m, now()).unwrap();
        assert!(ca.not_after() > now() + Duration::days(364));
        assert!(ca.trust_bundle_pem().contains("BEGIN CERTIFICATE"));
        assert_eq!(ca.chain_pem(), ca.trust_bundle_pem());
    }

    #[test]
    fn refuses_a_key_that_does_not_match() {
        let a = CertificateAuthority::generate_root("a", Duration::days(1), now()).unwrap();
        let b = CertificateAuthority::generate_root("b", Duration::days(1), now()).unwrap();
        let mixed = CaMaterial {
            cert_chain_pem: a.cert_chain_pem,
            key_pem: b.key_pem,
            trust_bundle_pem: None,
        };
        assert!(matches!(
            CertificateAuthority::from_material(&mixed, now()),
            Err(CaError::KeyMismatch)
        ));
    }

    #[test]
    fn refuses_an_expired_ca() {
        let m = CertificateAuthority::generate_root("old", Duration::days(1), now()).unwrap();
        let later = now() + Duration::days(2);
        assert!(matches!(
            CertificateAuthority::from_material(&m, later),
            Err(CaError::OutsideValidity { .. })
        ));
    }

    #[test]
    fn refuses_garbage_without_echoing_the_key() {
        let m = CaMaterial {
            cert_chain_pem: "not a pem".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n".into(),
            trust_bundle_pem: None,
        };
        let err = CertificateAuthority::from_material(&m, now())
            .unwrap_err()
            .to_string();
        assert!(!err.contains("c2VjcmV0"));
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let m = CertificateAuthority::generate_root("r", Duration::days(1), now()).unwrap();
        assert!(!format!("{m:?}").contains("PRIVATE"));
    }
}
