//! Decides whether an identity snapshot is safe to serve: the key matches the leaf, the leaf
//! chains to the trust bundle, and it is within its validity. Pure: no I/O, no clock.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use time::OffsetDateTime;
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Public facts about the identity being served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityInfo {
    /// Serial number of the leaf, lowercase hexadecimal.
    pub serial_hex: String,
    /// SHA-256 of the leaf's DER, lowercase hexadecimal.
    pub thumbprint_sha256: String,
    /// The leaf's URI SAN when it has one (the SPIFFE ID of an nhi-operator identity).
    pub spiffe_id: Option<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// Why an identity was refused. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdentity {
    #[error("the certificate file holds no certificate")]
    NoCertificate,
    #[error("the leaf certificate cannot be parsed: {0}")]
    MalformedCertificate(String),
    #[error("the key file holds no private key")]
    NoPrivateKey,
    #[error("the private key cannot be used (contents not shown)")]
    UnusableKey,
    #[error("the private key does not match the leaf certificate")]
    KeyMismatch,
    #[error("the trust bundle cannot be used: {0}")]
    BadTrustBundle(String),
    #[error("the leaf certificate does not chain to the trust bundle: {0}")]
    Untrusted(String),
    #[error("the leaf certificate expired at {not_after}")]
    Expired { not_after: String },
    #[error("the leaf certificate is not valid before {not_before}")]
    NotYetValid { not_before: String },
}

/// An identity that passed every check, ready to be swapped in.
pub struct ValidatedIdentity {
    /// The leaf, its chain and its signing key.
    pub certified_key: Arc<CertifiedKey>,
    /// The trust bundle as rustls roots.
    pub roots: Arc<RootCertStore>,
    pub info: IdentityInfo,
}

impl fmt::Debug for ValidatedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatedIdentity")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Checks an identity given as PEM texts: `cert_pem` (leaf first, then its chain), `key_pem`
/// (the first private key found is used, so `identity.pem` can be passed as both) and
/// `bundle_pem` (the trusted roots), at `now`.
pub fn validate_identity(
    cert_pem: &[u8],
    key_pem: &[u8],
    bundle_pem: &[u8],
    now: OffsetDateTime,
    provider: &CryptoProvider,
) -> Result<ValidatedIdentity, InvalidIdentity> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| InvalidIdentity::MalformedCertificate(e.to_string()))?;
    let (leaf, intermediates) = chain.split_first().ok_or(InvalidIdentity::NoCertificate)?;
    let info = leaf_info(leaf)?;
    check_validity(&info, now)?;

    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => InvalidIdentity::NoPrivateKey,
        _ => InvalidIdentity::UnusableKey,
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| InvalidIdentity::UnusableKey)?;
    let certified_key = CertifiedKey::new(chain.clone(), signing_key);
    match certified_key.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(InvalidIdentity::KeyMismatch);
        }
        // A key whose public half cannot be compared is refused rather than trusted.
        Err(_) => return Err(InvalidIdentity::UnusableKey),
    }

    let roots = trust_roots(bundle_pem)?;
    check_chain(leaf, intermediates, &roots, now)?;
    Ok(ValidatedIdentity {
        certified_key: Arc::new(certified_key),
        roots: Arc::new(roots),
        info,
    })
}

/// Reads the facts of a leaf certificate.
pub fn leaf_info(leaf: &CertificateDer<'_>) -> Result<IdentityInfo, InvalidIdentity> {
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| InvalidIdentity::MalformedCertificate(e.to_string()))?;
    let spiffe_id = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|g| match g {
                x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
        });
    let facts = crate::certificate::info_of(&cert, leaf);
    Ok(IdentityInfo {
        serial_hex: facts.serial_hex,
        thumbprint_sha256: facts.thumbprint_sha256,
        spiffe_id,
        not_before: facts.not_before,
        not_after: facts.not_after,
    })
}

fn check_validity(info: &IdentityInfo, now: OffsetDateTime) -> Result<(), InvalidIdentity> {
    if now < info.not_before {
        return Err(InvalidIdentity::NotYetValid {
            not_before: crate::timestamp::rfc3339(info.not_before),
        });
    }
    if now >= info.not_after {
        return Err(InvalidIdentity::Expired {
            not_after: crate::timestamp::rfc3339(info.not_after),
        });
    }
    Ok(())
}

/// Reads every certificate of the bundle as a trust root.
fn trust_roots(bundle_pem: &[u8]) -> Result<RootCertStore, InvalidIdentity> {
    let bad = |e: String| InvalidIdentity::BadTrustBundle(e);
    let text = std::str::from_utf8(bundle_pem).map_err(|e| bad(e.to_string()))?;
    crate::pem_chain::root_store(text).map_err(bad)
}

/// Verifies that the leaf chains to one of the roots, for server or client use (a leaf with an
/// extended key usage must allow at least one of them).
fn check_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &RootCertStore,
    now: OffsetDateTime,
) -> Result<(), InvalidIdentity> {
    let end_entity =
        EndEntityCert::try_from(leaf).map_err(|e| InvalidIdentity::Untrusted(format!("{e:?}")))?;
    let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    let verify = |usage| {
        end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &roots.roots,
            intermediates,
            time,
            usage,
            None,
            None,
        )
    };
    match verify(KeyUsage::server_auth()) {
        Ok(_) => Ok(()),
        Err(webpki::Error::RequiredEkuNotFoundContext(_)) => verify(KeyUsage::client_auth())
            .map(|_| ())
            .map_err(|e| InvalidIdentity::Untrusted(format!("{e:?}"))),
        Err(e) => Err(InvalidIdentity::Untrusted(format!("{e:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::test_layout::{TestCa, provider};
    use time::Duration;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn accepts_a_fresh_leaf_and_reports_its_facts() {
        let ca = TestCa::new();
        let leaf = ca.leaf(now());
        let ok = validate_identity(
            leaf.chain_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
            ca.bundle().as_bytes(),
            now(),
            &provider(),
        )
        .unwrap();
        assert_eq!(ok.info.serial_hex, leaf.info.serial_hex);
        assert_eq!(ok.info.not_after, leaf.info.not_after);
        assert_eq!(
            ok.info.spiffe_id.as_deref(),
            Some("spiffe://cluster.local/ns/test/mi/api")
        );
        assert_eq!(ok.roots.len(), 1);
    }

    #[test]
    fn accepts_identity_pem_as_both_key_and_chain() {
        let ca = TestCa::new();
        let leaf = ca.leaf(now());
        let identity = format!("{}{}", leaf.key_pem, leaf.chain_pem);
        validate_identity(
            identity.as_bytes(),
            identity.as_bytes(),
            ca.bundle().as_bytes(),
            now(),
            &provider(),
        )
        .unwrap();
    }

    #[test]
    fn refuses_a_key_of_another_leaf_without_showing_it() {
        let ca = TestCa::new();
        let a = ca.leaf(now());
        let b = ca.leaf(now());
        let err = validate_identity(
            a.chain_pem.as_bytes(),
            b.key_pem.as_bytes(),
            ca.bundle().as_bytes(),
            now(),
            &provider(),
        )
        .unwrap_err();
        assert_eq!(err, InvalidIdentity::KeyMismatch);
        assert!(!format!("{err} {err:?}").contains("PRIVATE"));
    }

    #[test]
    fn refuses_an_expired_leaf() {
        let ca = TestCa::new();
        let leaf = ca.leaf(now() - Duration::hours(2));
        let err = validate_identity(
            leaf.chain_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
            ca.bundle().as_bytes(),
            now(),
            &provider(),
        )
        .unwrap_err();
        assert!(matches!(err, InvalidIdentity::Expired { .. }), "{err}");
    }

    #[test]
    fn refuses_a_leaf_signed_by_another_ca() {
        let ca = TestCa::new();
        let other = TestCa::new();
        let leaf = other.leaf(now());
        let err = validate_identity(
            leaf.chain_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
            ca.bundle().as_bytes(),
            now(),
            &provider(),
        )
        .unwrap_err();
        assert!(matches!(err, InvalidIdentity::Untrusted(_)), "{err}");
    }

    #[test]
    fn refuses_missing_or_garbled_parts() {
        let ca = TestCa::new();
        let leaf = ca.leaf(now());
        let check = |cert: &str, key: &str, bundle: &str| {
            validate_identity(
                cert.as_bytes(),
                key.as_bytes(),
                bundle.as_bytes(),
                now(),
                &provider(),
            )
            .unwrap_err()
        };
        assert_eq!(
            check("", &leaf.key_pem, &ca.bundle()),
            InvalidIdentity::NoCertificate
        );
        assert_eq!(
            check(&leaf.chain_pem, "", &ca.bundle()),
            InvalidIdentity::NoPrivateKey
        );
        assert!(matches!(
            check(&leaf.chain_pem, &leaf.key_pem, ""),
            InvalidIdentity::BadTrustBundle(_)
        ));
    }
}
