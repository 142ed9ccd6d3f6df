//! Decides whether a `crl.pem` can be used with a trust bundle: every block is a CRL that parses,
//! each CRL issued by a CA of the bundle is signed by it and not past its nextUpdate, and there is
//! at least one such CRL. Pure: no I/O, no clock.

use std::path::PathBuf;

use rustls_pki_types::CertificateRevocationListDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::pem_chain::pem_certificates;

/// The name of the CRL file in a trust (or identity) directory, as in the `nhi-trust` ConfigMap.
pub const CRL_FILE: &str = "crl.pem";

/// CRLs that passed every check, ready for the peer verifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidatedCrls {
    /// The CRLs issued by CAs of the bundle, in file order.
    pub ders: Vec<CertificateRevocationListDer<'static>>,
    /// The earliest nextUpdate among them: from then on, peers are refused until a newer
    /// `crl.pem` arrives.
    pub next_update: OffsetDateTime,
}

/// Why a `crl.pem` cannot be used. Public facts only (paths, issuer names, times).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidCrl {
    #[error("{0} does not exist")]
    Missing(PathBuf),
    #[error("reading {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("the CRL file holds no X509 CRL")]
    Empty,
    #[error("the CRL file cannot be parsed: {0}")]
    Malformed(String),
    #[error("the trust bundle cannot be used to check CRLs: {0}")]
    BadTrustBundle(String),
    #[error("no CRL in the file is issued by a CA of the trust bundle")]
    NotFromBundle,
    #[error("the CRL naming {issuer} as issuer is not signed by that CA of the trust bundle")]
    BadSignature { issuer: String },
    #[error("the CRL of {issuer} has no nextUpdate")]
    NoNextUpdate { issuer: String },
    #[error("the CRL of {issuer} is stale: its nextUpdate {next_update} has passed")]
    Stale { issuer: String, next_update: String },
}

/// Checks the CRLs of `crl_pem` (one PEM `X509 CRL` block per issuing CA) against the CAs of
/// `bundle_pem` at `now`. A CRL whose issuer is not a CA of the bundle is set aside rather than
/// refused: during a CA rotation `crl.pem` and `ca.crt` may reach the pod at different moments,
/// and such a CRL could not vouch for any peer anyway. Any other defect refuses the whole file.
pub fn validate_crls(
    crl_pem: &[u8],
    bundle_pem: &[u8],
    now: OffsetDateTime,
) -> Result<ValidatedCrls, InvalidCrl> {
    let cas = bundle_certificates(bundle_pem)?;
    let cas = cas
        .iter()
        .map(|der| X509Certificate::from_der(der).map(|(_, cert)| cert))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| InvalidCrl::BadTrustBundle(e.to_string()))?;
    let blocks = pem::parse_many(crl_pem).map_err(|e| InvalidCrl::Malformed(e.to_string()))?;
    if blocks.is_empty() {
        return Err(InvalidCrl::Empty);
    }
    let mut ders = Vec::new();
    let mut next_update: Option<OffsetDateTime> = None;
    for block in &blocks {
        if block.tag() != "X509 CRL" {
            return Err(InvalidCrl::Malformed(format!(
                "expected an X509 CRL, found {}",
                block.tag()
            )));
        }
        let der = block.contents();
        // What the handshakes will use must parse there too.
        webpki::OwnedCertRevocationList::from_der(der)
            .map_err(|e| InvalidCrl::Malformed(format!("{e:?}")))?;
        let (_, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| InvalidCrl::Malformed(e.to_string()))?;
        let issuer = crl.issuer().to_string();
        let named: Vec<_> = cas
            .iter()
            .filter(|ca| ca.subject().as_raw() == crl.issuer().as_raw())
            .collect();
        if named.is_empty() {
            tracing::debug!(%issuer, "CRL of a CA outside the trust bundle set aside");
            continue;
        }
        if !named
            .iter()
            .any(|ca| crl.verify_signature(ca.public_key()).is_ok())
        {
            return Err(InvalidCrl::BadSignature { issuer });
        }
        let until = crl
            .next_update()
            .ok_or_else(|| InvalidCrl::NoNextUpdate {
                issuer: issuer.clone(),
            })?
            .to_datetime();
        if until <= now {
            return Err(InvalidCrl::Stale {
                issuer,
                next_update: crate::timestamp::rfc3339(until),
            });
        }
        next_update = Some(next_update.map_or(until, |earliest| earliest.min(until)));
        ders.push(CertificateRevocationListDer::from(der.to_vec()));
    }
    match next_update {
        Some(next_update) => Ok(ValidatedCrls { ders, next_update }),
        None => Err(InvalidCrl::NotFromBundle),
    }
}

fn bundle_certificates(bundle_pem: &[u8]) -> Result<Vec<Vec<u8>>, InvalidCrl> {
    let text =
        std::str::from_utf8(bundle_pem).map_err(|e| InvalidCrl::BadTrustBundle(e.to_string()))?;
    pem_certificates(text).map_err(|e| InvalidCrl::BadTrustBundle(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::test_layout::TestCa;
    use time::Duration;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn check(crl_pem: &str, ca: &TestCa) -> Result<ValidatedCrls, InvalidCrl> {
        validate_crls(crl_pem.as_bytes(), ca.bundle().as_bytes(), now())
    }

    #[test]
    fn accepts_the_crl_of_the_bundle_and_reports_when_it_goes_stale() {
        let ca = TestCa::new();
        let until = now() + Duration::hours(24);
        let ok = check(&ca.crl(&[], until), &ca).unwrap();
        assert_eq!(ok.ders.len(), 1);
        assert_eq!(ok.next_update.unix_timestamp(), until.unix_timestamp());
    }

    #[test]
    fn sets_aside_the_crl_of_another_ca_but_needs_one_of_the_bundle() {
        let (ca, other) = (TestCa::new(), TestCa::new());
        let until = now() + Duration::hours(24);
        let both = format!("{}{}", other.crl(&[], until), ca.crl(&[], until));
        assert_eq!(check(&both, &ca).unwrap().ders.len(), 1);
        assert_eq!(
            check(&other.crl(&[], until), &ca),
            Err(InvalidCrl::NotFromBundle)
        );
    }

    #[test]
    fn refuses_a_crl_in_the_name_of_the_bundle_ca_signed_by_another_key() {
        let ca = TestCa::new();
        let impostor = ca.impostor();
        let err = check(&impostor.crl(&[], now() + Duration::hours(1)), &ca).unwrap_err();
        assert!(matches!(err, InvalidCrl::BadSignature { .. }), "{err}");
    }

    #[test]
    fn refuses_a_stale_crl() {
        let ca = TestCa::new();
        let err = check(&ca.crl(&[], now() - Duration::minutes(1)), &ca).unwrap_err();
        assert!(matches!(err, InvalidCrl::Stale { .. }), "{err}");
    }

    #[test]
    fn refuses_garbage_and_other_pem_blocks() {
        let ca = TestCa::new();
        assert_eq!(check("", &ca), Err(InvalidCrl::Empty));
        assert!(matches!(
            check(&ca.bundle(), &ca),
            Err(InvalidCrl::Malformed(_))
        ));
        let garbled = "-----BEGIN X509 CRL-----\nMAA=\n-----END X509 CRL-----\n";
        assert!(matches!(check(garbled, &ca), Err(InvalidCrl::Malformed(_))));
    }
}
