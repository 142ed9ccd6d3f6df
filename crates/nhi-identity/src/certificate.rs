//! The public facts of a certificate (serial, thumbprint, validity), read from its DER or PEM.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::pem_chain::pem_certificates;

/// Public facts about a certificate, as shown in status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateInfo {
    /// Serial number, lowercase hexadecimal.
    pub serial_hex: String,
    /// SHA-256 of the DER, lowercase hexadecimal.
    pub thumbprint_sha256: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// SHA-256 of a DER encoding, lowercase hexadecimal.
pub fn thumbprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The public facts of a parsed leaf certificate whose DER is `der`.
pub fn info_of(leaf: &X509Certificate<'_>, der: &[u8]) -> CertificateInfo {
    CertificateInfo {
        serial_hex: hex::encode(leaf.raw_serial()),
        thumbprint_sha256: thumbprint(der),
        not_before: leaf.validity().not_before.to_datetime(),
        not_after: leaf.validity().not_after.to_datetime(),
    }
}

/// The public facts of the leaf (first) certificate of a PEM chain, if it parses.
pub fn leaf_info(chain_pem: &[u8]) -> Option<CertificateInfo> {
    let chain = pem_certificates(std::str::from_utf8(chain_pem).ok()?).ok()?;
    let der = chain.first()?;
    let (_, leaf) = X509Certificate::from_der(der).ok()?;
    Some(info_of(&leaf, der))
}

/// The certificate's SPIFFE ID: its one URI subject alternative name, if it has exactly one.
pub fn spiffe_id_of(cert: &X509Certificate<'_>) -> Option<String> {
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    match (uris.next(), uris.next()) {
        (Some(one), None) => Some(one.to_string()),
        _ => None,
    }
}

/// The SPIFFE ID of the leaf (first) certificate of a PEM chain, if it parses and has one.
pub fn leaf_spiffe_id(chain_pem: &[u8]) -> Option<String> {
    let chain = pem_certificates(std::str::from_utf8(chain_pem).ok()?).ok()?;
    let (_, leaf) = X509Certificate::from_der(chain.first()?).ok()?;
    spiffe_id_of(&leaf)
}

/// The path of a SPIFFE ID (`/ns/<namespace>/mi/<name>`): what names the identity whatever the
/// trust domain.
pub fn spiffe_path(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    rest.find('/').map(|i| &rest[i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_names_the_identity_whatever_the_trust_domain() {
        assert_eq!(
            spiffe_path("spiffe://cluster.local/ns/a/mi/web"),
            Some("/ns/a/mi/web")
        );
        assert_eq!(spiffe_path("spiffe://cluster.local"), None);
        assert_eq!(spiffe_path("https://x/ns/a"), None);
    }
}
