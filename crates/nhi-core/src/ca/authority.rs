//! The certificate authority in memory: its signing key, certificate chain and trust bundle.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P384_SHA384, PublicKeyData,
};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use nhi_identity::pem_chain::{pem_certificates, to_pem_chain};

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
    /// Its fingerprint (see [`CertificateAuthority::bundle_fingerprint`]), computed once: every
    /// reconcile compares an identity Secret's against it.
    bundle_fingerprint: String,
    /// DER of the CA's SubjectPublicKeyInfo, to recognise its signatures.
    public_key_der: Vec<u8>,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    /// Whether the CA is a self-signed root alone (one the operator may replace by rotation).
    self_signed_root: bool,
    /// During a rotation, the previous CA: its root stays in the bundle and it signs the CRL for
    /// the certificates it issued, but it issues nothing.
    retiring: Option<Arc<CertificateAuthority>>,
    /// During a rotation's publishing phase, the next CA: its root is in the bundle and it signs
    /// a CRL already (so relying parties hold its CRL before it issues anything), but it issues
    /// nothing yet.
    next: Option<Arc<CertificateAuthority>>,
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
                not_before: nhi_identity::timestamp::rfc3339(not_before),
                not_after: nhi_identity::timestamp::rfc3339(not_after),
            });
        }
        let self_signed_root = certs.len() == 1
            && cert.subject() == cert.issuer()
            && cert.verify_signature(None).is_ok();
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
            bundle_fingerprint: bundle_fingerprint(&trust_bundle_pem),
            trust_bundle_pem,
            public_key_der,
            not_before,
            not_after,
            self_signed_root,
            retiring: None,
            next: None,
        })
    }

    /// This CA with `retiring` as the previous CA of a rotation under way.
    pub fn with_retiring(mut self, retiring: CertificateAuthority) -> Self {
        self.retiring = Some(Arc::new(retiring));
        self
    }

    /// This CA with `next` as the CA a rotation under way will switch to.
    pub fn with_next(mut self, next: CertificateAuthority) -> Self {
        self.next = Some(Arc::new(next));
        self
    }

    /// Every CA that signs a CRL, oldest first: the retiring CA, this one, the next one. Relying
    /// parties that read only the first CRL of `crl.pem` keep checking the older certificates.
    pub fn crl_signers(&self) -> Vec<&CertificateAuthority> {
        self.retiring
            .as_deref()
            .into_iter()
            .chain(std::iter::once(self))
            .chain(self.next.as_deref())
            .collect()
    }

    /// Whether `signer`'s CRL lists the revoked certificates: every CRL signer's but the next
    /// CA's, which has issued nothing yet (it lists them once it is the current CA).
    pub fn lists_revocations(&self, signer: &CertificateAuthority) -> bool {
        !self
            .next
            .as_deref()
            .is_some_and(|next| std::ptr::eq(next, signer))
    }

    /// How many CRLs list every revoked certificate: two while a retiring CA's certificates may
    /// still be in use, else one.
    pub fn listing_crls(&self) -> usize {
        1 + usize::from(self.retiring.is_some())
    }

    /// How many CRLs the revocation capacity is kept for: two from the moment a rotation
    /// publishes its next root. The next CA's CRL lists nothing yet, but at the switch it lists
    /// every entry beside the retiring CA's, and the switch must fit in a trust ConfigMap.
    pub fn budgeted_crls(&self) -> usize {
        1 + usize::from(self.retiring.is_some() || self.next.is_some())
    }

    /// The previous CA of a rotation under way, if any.
    pub fn retiring(&self) -> Option<&CertificateAuthority> {
        self.retiring.as_deref()
    }

    /// Whether the CA is a self-signed root alone, as the operator bootstraps it: one it can
    /// replace by rotation (a provided CA is the provider's to replace).
    pub fn is_self_signed_root(&self) -> bool {
        self.self_signed_root
    }

    /// A short fingerprint of the trust bundle (16 hex digits of its SHA-256): identity Secrets
    /// carry it, so which bundle each holds is known from metadata alone.
    pub fn bundle_fingerprint(&self) -> &str {
        &self.bundle_fingerprint
    }

    /// Whether `other` signs with the same key, publishes the same bundle and has the same
    /// retiring CA: replacing one with the other changes nothing.
    pub fn same_as(&self, other: &CertificateAuthority) -> bool {
        self.cert_der == other.cert_der
            && self.trust_bundle_pem == other.trust_bundle_pem
            && self.retiring.as_ref().map(|r| &r.cert_der)
                == other.retiring.as_ref().map(|r| &r.cert_der)
            && self.next.as_ref().map(|r| &r.cert_der) == other.next.as_ref().map(|r| &r.cert_der)
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
        // Each root's name is its own: during a rotation the old and new roots are trusted side
        // by side, and relying parties pick a certificate's issuer, and its CRL, by name.
        let generation = format!(
            "generation {:04}{:02}{:02}T{:02}{:02}{:02}Z-{:04x}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            rand::random::<u16>()
        );
        dn.push(DnType::OrganizationalUnitName, generation);
        params.distinguished_name = dn;
        // pathLen 0: the root signs identities itself, never an intermediate.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + lifetime;
        params.serial_number = Some(crate::serial::random_serial());
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

/// The fingerprint of a trust bundle (see [`CertificateAuthority::bundle_fingerprint`]).
pub fn bundle_fingerprint(bundle_pem: &str) -> String {
    hex::encode(&Sha256::digest(bundle_pem.as_bytes())[..8])
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
        // pathLen 0: it signs identities, never an intermediate.
        use x509_parser::prelude::FromDer;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(ca.cert_der()).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
    }

    #[test]
    fn a_generated_root_is_self_signed_and_an_intermediate_chain_is_not() {
        let m = CertificateAuthority::generate_root("root", Duration::days(2), now()).unwrap();
        let root = CertificateAuthority::from_material(&m, now()).unwrap();
        assert!(root.is_self_signed_root());
        // The same CA with another certificate above it in tls.crt: provided, not ours to replace.
        let other = CertificateAuthority::generate_root("other", Duration::days(2), now()).unwrap();
        let chained = CaMaterial {
            cert_chain_pem: format!("{}{}", m.cert_chain_pem, other.cert_chain_pem),
            key_pem: m.key_pem.clone(),
            trust_bundle_pem: None,
        };
        let chained = CertificateAuthority::from_material(&chained, now()).unwrap();
        assert!(!chained.is_self_signed_root());
        assert!(!root.same_as(&chained));
        let again = CertificateAuthority::from_material(&m, now()).unwrap();
        assert!(root.same_as(&again));
        assert_eq!(root.bundle_fingerprint().len(), 16);
        let retiring = CertificateAuthority::from_material(&other, now()).unwrap();
        let rotating = again.with_retiring(retiring);
        assert!(!root.same_as(&rotating));
        assert!(rotating.retiring().is_some());
        // Oldest first: the retiring CA's CRL, then this one's, then the next one's.
        let next = CertificateAuthority::from_material(&m, now()).unwrap();
        let rotating = rotating.with_next(next);
        let signers: Vec<&[u8]> = rotating
            .crl_signers()
            .iter()
            .map(|c| c.cert_der())
            .collect();
        assert_eq!(
            signers,
            vec![
                rotating.retiring().unwrap().cert_der(),
                rotating.cert_der(),
                m_der(&m).as_slice()
            ]
        );
        assert_eq!(root.crl_signers().len(), 1);
        // The next CA's CRL lists nothing: it has issued nothing.
        let listing: Vec<bool> = rotating
            .crl_signers()
            .iter()
            .map(|c| rotating.lists_revocations(c))
            .collect();
        assert_eq!(listing, vec![true, true, false]);
        assert_eq!(rotating.listing_crls(), 2);
        assert_eq!(root.listing_crls(), 1);
        assert_eq!(rotating.budgeted_crls(), 2);
        assert_eq!(root.budgeted_crls(), 1);
        // Publishing: the next root's CRL lists nothing yet, but the capacity is kept for it.
        let publishing = CertificateAuthority::from_material(&m, now())
            .unwrap()
            .with_next(CertificateAuthority::from_material(&m, now()).unwrap());
        assert_eq!(publishing.listing_crls(), 1);
        assert_eq!(publishing.budgeted_crls(), 2);
        assert!(root.lists_revocations(root.crl_signers()[0]));
    }

    fn m_der(m: &CaMaterial) -> Vec<u8> {
        pem_certificates(&m.cert_chain_pem).unwrap().remove(0)
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
