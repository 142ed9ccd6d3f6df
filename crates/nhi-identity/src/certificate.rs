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
