//! Offline verification of identity certificates, for relying services: validates the chain to
//! the trust bundle (rustls-webpki), the validity time, the revocation list when given, the
//! SPIFFE ID form, and returns who the caller is and what it is granted. No call to the cluster.
//!
//! ```no_run
//! use nhi_identity::verify::{Purpose, Revocation, RevocationList, TrustBundle, verify_identity};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // `ca.crt` and `crl.pem` as the operator publishes them; the chain as the TLS peer sent it.
//! let trust = TrustBundle::from_pem(&std::fs::read_to_string("ca.crt")?)?;
//! let crl = RevocationList::from_pem(&std::fs::read_to_string("crl.pem")?)?;
//! let chain = nhi_identity::verify::certificates_from_pem(&std::fs::read_to_string("tls.crt")?)?;
//! let now = time::OffsetDateTime::now_utc();
//! let caller = verify_identity(&chain, &trust, Revocation::Check(&crl), Purpose::Client, now)?;
//! if caller.has_grant("payments.process") {
//!     println!("{} may process payments", caller.identity.spiffe_id);
//! }
//! # Ok(()) }
//! ```

pub mod spiffe;

use std::collections::{BTreeMap, BTreeSet};

use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor, UnixTime};
use time::OffsetDateTime;
use webpki::{
    EndEntityCert, ExpirationPolicy, KeyUsage, OwnedCertRevocationList, RevocationCheckDepth,
    RevocationOptionsBuilder, UnknownStatusPolicy,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::delegation::{Delegation, DelegationError, consistent, delegation_of, serial_der};
use crate::extension::{ExtensionError, claims_of};
use crate::pem_chain::pem_certificates;
pub use spiffe::{SpiffeIdentity, parse_spiffe_id};

/// The roots a relying service trusts (the operator's `ca.crt`).
pub struct TrustBundle {
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    /// Reads every certificate of a PEM bundle as a trust anchor.
    pub fn from_pem(pem: &str) -> Result<Self, VerifyError> {
        let ders = pem_certificates(pem).map_err(|e| VerifyError::BadTrustBundle(e.to_string()))?;
        Self::from_der(ders.into_iter().map(CertificateDer::from).collect())
    }

    /// Uses DER certificates as trust anchors.
    pub fn from_der(certs: Vec<CertificateDer<'static>>) -> Result<Self, VerifyError> {
        let anchors = certs
            .iter()
            .map(|c| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| VerifyError::BadTrustBundle(format!("{e:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if anchors.is_empty() {
            return Err(VerifyError::BadTrustBundle(
                "no certificate in the bundle".into(),
            ));
        }
        Ok(TrustBundle { anchors })
    }
}

/// The certificate revocation lists of the operator's `crl.pem`: one, or during a CA rotation one
/// per CA (each certificate is checked against its own issuer's).
pub struct RevocationList {
    crls: Vec<webpki::CertRevocationList<'static>>,
}

impl RevocationList {
    /// Reads every PEM `X509 CRL` block of `pem_text` (at least one).
    pub fn from_pem(pem_text: &str) -> Result<Self, VerifyError> {
        let blocks = pem::parse_many(pem_text).map_err(|e| VerifyError::BadCrl(e.to_string()))?;
        let mut crls = Vec::with_capacity(blocks.len());
        for block in blocks {
            if block.tag() != "X509 CRL" {
                return Err(VerifyError::BadCrl(format!(
                    "expected an X509 CRL, found {}",
                    block.tag()
                )));
            }
            crls.extend(Self::from_der(block.contents())?.crls);
        }
        if crls.is_empty() {
            return Err(VerifyError::BadCrl("no X509 CRL in the text".into()));
        }
        Ok(RevocationList { crls })
    }

    /// Reads DER CRLs (at least one).
    pub fn from_ders(ders: &[CertificateRevocationListDer<'_>]) -> Result<Self, VerifyError> {
        let mut crls = Vec::with_capacity(ders.len());
        for der in ders {
            crls.extend(Self::from_der(der.as_ref())?.crls);
        }
        if crls.is_empty() {
            return Err(VerifyError::BadCrl("no CRL given".into()));
        }
        Ok(RevocationList { crls })
    }

    /// Reads a DER CRL.
    pub fn from_der(der: &[u8]) -> Result<Self, VerifyError> {
        let der = CertificateRevocationListDer::from(der.to_vec());
        let owned = OwnedCertRevocationList::from_der(&der)
            .map_err(|e| VerifyError::BadCrl(format!("{e:?}")))?;
        Ok(RevocationList {
            crls: vec![owned.into()],
        })
    }
}

/// What the certificate is being used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A TLS client (the relying service is the server).
    Client,
    /// A TLS server.
    Server,
}

/// A verified identity: who it is, what it may do, and the certificate that said so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub identity: SpiffeIdentity,
    /// Entitlement names carried by the certificate.
    pub grants: BTreeSet<String>,
    /// Attributes carried by the certificate.
    pub attributes: BTreeMap<String, String>,
    /// Serial number, lowercase hexadecimal.
    pub serial_hex: String,
    pub not_after: OffsetDateTime,
    /// A task certificate's delegation (who authorized it, for what task); None for an
    /// identity's own certificate. Its grants are the task's, never the parent's.
    pub delegation: Option<Delegation>,
}

impl VerifiedIdentity {
    /// Whether the certificate carries `grant`.
    ///
    /// A grant is asserted by whoever may create Entitlements in the identity's namespace. A
    /// service that trusts only some namespaces to grant it access should use
    /// [`Self::has_grant_from`].
    pub fn has_grant(&self, grant: &str) -> bool {
        self.grants.contains(grant)
    }

    /// Whether the certificate carries `grant` and the identity belongs to one of
    /// `trusted_namespaces` of trust domain `trust_domain`: the namespaces whose Entitlement
    /// authors the service trusts to grant it. The trust domain is part of the answer: a trust
    /// bundle may hold the roots of several clusters, each with a `payments` namespace.
    pub fn has_grant_from(
        &self,
        grant: &str,
        trust_domain: &str,
        trusted_namespaces: &[&str],
    ) -> bool {
        self.has_grant(grant)
            && self.identity.trust_domain == trust_domain
            && trusted_namespaces.contains(&self.identity.namespace.as_str())
    }
}

/// Why a certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no certificate was presented")]
    NoCertificate,
    #[error("the trust bundle cannot be used: {0}")]
    BadTrustBundle(String),
    #[error("the revocation list cannot be used: {0}")]
    BadCrl(String),
    #[error("the certificate cannot be parsed: {0}")]
    Malformed(String),
    #[error("the certificate does not chain to a trusted root: {0}")]
    Untrusted(String),
    #[error("the certificate has expired")]
    Expired,
    #[error("the certificate is not valid yet")]
    NotYetValid,
    #[error("the certificate has been revoked")]
    Revoked,
    #[error("the certificate is not valid for {0:?} use")]
    WrongUsage(Purpose),
    #[error("the certificate does not name an identity: {0}")]
    BadSpiffeId(String),
    #[error(transparent)]
    Extension(#[from] ExtensionError),
    #[error(transparent)]
    Delegation(#[from] DelegationError),
    #[error("the task certificate's delegation does not match its SPIFFE ID: {0}")]
    InconsistentDelegation(String),
    #[error("certificate {0} that delegated this task has been revoked")]
    AncestorRevoked(String),
    #[error("{0} is a task certificate; this verification accepts identities only")]
    TaskNotAccepted(String),
}

/// Reads a PEM chain (leaf first) into DER certificates.
pub fn certificates_from_pem(pem_text: &str) -> Result<Vec<CertificateDer<'static>>, VerifyError> {
    let ders = pem_certificates(pem_text).map_err(|e| VerifyError::Malformed(e.to_string()))?;
    Ok(ders.into_iter().map(CertificateDer::from).collect())
}

/// Whether a verification checks revocation. There is no default: a caller that does not check
/// says so, in the code that a reviewer reads.
#[derive(Clone, Copy)]
pub enum Revocation<'a> {
    /// Check against this CRL: a certificate it lists is refused, and a CRL that is not the
    /// issuer's, or is past its nextUpdate, refuses everything (fails closed).
    Check(&'a RevocationList),
    /// Do not check: a revoked certificate is accepted until it expires.
    NotChecked,
}

/// Verifies a certificate chain (leaf first, as a TLS peer sends it) against `trust` at `now`,
/// and its revocation as `revocation` says. Returns the identity with its grants and attributes.
/// A task certificate (one an identity delegated, see [`verify_identity_or_task`]) is refused:
/// a service that authorizes by identity name never takes a task for its parent unless it asks
/// for tasks.
pub fn verify_identity(
    chain: &[CertificateDer<'_>],
    trust: &TrustBundle,
    revocation: Revocation<'_>,
    purpose: Purpose,
    now: OffsetDateTime,
) -> Result<VerifiedIdentity, VerifyError> {
    let verified = verify_identity_or_task(chain, trust, revocation, purpose, now)?;
    match verified.identity.is_task() {
        false => Ok(verified),
        true => Err(VerifyError::TaskNotAccepted(verified.identity.spiffe_id)),
    }
}

/// Like [`verify_identity`], and also accepts task certificates: each is verified as itself (its
/// SPIFFE ID ends in `/task/<id>`, `identity.is_task()`; its grants are the task's), and refused
/// once any certificate that delegated it is on the CRL.
pub fn verify_identity_or_task(
    chain: &[CertificateDer<'_>],
    trust: &TrustBundle,
    revocation: Revocation<'_>,
    purpose: Purpose,
    now: OffsetDateTime,
) -> Result<VerifiedIdentity, VerifyError> {
    let crl = match revocation {
        Revocation::Check(list) => Some(list),
        Revocation::NotChecked => None,
    };
    let (leaf, intermediates) = chain.split_first().ok_or(VerifyError::NoCertificate)?;
    let end_entity =
        EndEntityCert::try_from(leaf).map_err(|e| VerifyError::Malformed(format!("{e:?}")))?;
    let seconds = u64::try_from(now.unix_timestamp()).unwrap_or(0);
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds));
    let crls: Vec<&webpki::CertRevocationList<'static>>;
    let revocation = match crl {
        Some(list) => {
            crls = list.crls.iter().collect();
            let options = RevocationOptionsBuilder::new(&crls)
                .map_err(|e| VerifyError::BadCrl(format!("{e:?}")))?
                .with_depth(RevocationCheckDepth::EndEntity)
                .with_status_policy(UnknownStatusPolicy::Deny)
                .with_expiration_policy(ExpirationPolicy::Enforce)
                .build();
            Some(options)
        }
        None => None,
    };
    let usage = match purpose {
        Purpose::Client => KeyUsage::client_auth(),
        Purpose::Server => KeyUsage::server_auth(),
    };
    end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &trust.anchors,
            intermediates,
            time,
            usage,
            revocation,
            None,
        )
        .map_err(|e| map_webpki_error(e, purpose))?;
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    let identity = parse_spiffe_id(&single_uri_san(&cert)?).map_err(VerifyError::BadSpiffeId)?;
    let claims = claims_of(&cert)?;
    let delegation = delegation_of(&cert)?;
    consistent(&identity, delegation.as_ref()).map_err(VerifyError::InconsistentDelegation)?;
    if let (Some(list), Some(d)) = (crl, &delegation) {
        ancestors_unrevoked(list, d)?;
    }
    Ok(VerifiedIdentity {
        identity,
        grants: claims.grants,
        attributes: claims.attributes,
        serial_hex: hex::encode(cert.raw_serial()),
        not_after: cert.validity().not_after.to_datetime(),
        delegation,
    })
}

/// Refuses a task certificate (`leaf`) once any certificate that delegated it is on `list`; an
/// identity's own certificate has no ancestors and passes. For verifiers that check the chain and
/// the leaf's own revocation themselves (a rustls verifier built with the same CRLs).
pub fn check_ancestors(
    leaf: &CertificateDer<'_>,
    list: &RevocationList,
) -> Result<(), VerifyError> {
    let (_, cert) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| VerifyError::Malformed(e.to_string()))?;
    match delegation_of(&cert)? {
        Some(d) => ancestors_unrevoked(list, &d),
        None => Ok(()),
    }
}

/// A task certificate dies with every certificate that delegated it: none of its ancestors'
/// serials may be on a CRL of the list (the parent's own revocation ends its descendants
/// without listing them).
fn ancestors_unrevoked(list: &RevocationList, d: &Delegation) -> Result<(), VerifyError> {
    for ancestor in &d.ancestors {
        let serial = serial_der(&ancestor.serial_hex)
            .ok_or_else(|| VerifyError::Malformed("an ancestor serial is not hex".into()))?;
        for crl in &list.crls {
            let listed = crl
                .find_serial(&serial)
                .map_err(|e| VerifyError::BadCrl(format!("{e:?}")))?;
            if listed.is_some() {
                return Err(VerifyError::AncestorRevoked(ancestor.serial_hex.clone()));
            }
        }
    }
    Ok(())
}

/// The certificate's one URI subject alternative name (an X.509-SVID has exactly one).
fn single_uri_san(cert: &X509Certificate<'_>) -> Result<String, VerifyError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| VerifyError::Malformed(e.to_string()))?
        .ok_or_else(|| VerifyError::BadSpiffeId("no subject alternative names".into()))?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [one] => Ok(one.to_string()),
        other => Err(VerifyError::BadSpiffeId(format!(
            "expected exactly one URI SAN, found {}",
            other.len()
        ))),
    }
}

fn map_webpki_error(e: webpki::Error, purpose: Purpose) -> VerifyError {
    match e {
        webpki::Error::CertExpired { .. } => VerifyError::Expired,
        webpki::Error::CertNotValidYet { .. } => VerifyError::NotYetValid,
        webpki::Error::CertRevoked => VerifyError::Revoked,
        webpki::Error::RequiredEkuNotFoundContext(_) => VerifyError::WrongUsage(purpose),
        other => VerifyError::Untrusted(format!("{other:?}")),
    }
}
