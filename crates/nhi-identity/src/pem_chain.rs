//! PEM encoding and decoding of certificate chains, through rustls-pki-types and pem.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Decodes every `CERTIFICATE` block of a PEM text, in order. Errors on malformed PEM and on a
/// text with no certificate.
pub fn pem_certificates(pem_text: &str) -> Result<Vec<Vec<u8>>, rustls_pki_types::pem::Error> {
    let certs = CertificateDer::pem_slice_iter(pem_text.as_bytes())
        .map(|c| c.map(|c| c.as_ref().to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(rustls_pki_types::pem::Error::NoItemsFound);
    }
    Ok(certs)
}

/// Every certificate of a PEM bundle as a rustls trust root (a bundle without one is an error).
pub fn root_store(bundle_pem: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for der in pem_certificates(bundle_pem).map_err(|e| e.to_string())? {
        roots
            .add(CertificateDer::from(der))
            .map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

/// Encodes DER certificates as a PEM chain, one block each, in order.
pub fn to_pem_chain(certs: &[Vec<u8>]) -> String {
    certs.iter().map(|der| certificate_pem(der)).collect()
}

/// Encodes one DER certificate as a PEM block.
pub fn certificate_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_chain() {
        let chain = to_pem_chain(&[vec![0x30, 0x03, 0x02, 0x01, 0x01], vec![0x30, 0x00]]);
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        let back = pem_certificates(&chain).unwrap();
        assert_eq!(
            back,
            vec![vec![0x30, 0x03, 0x02, 0x01, 0x01], vec![0x30, 0x00]]
        );
    }

    #[test]
    fn empty_text_is_an_error() {
        assert!(pem_certificates("").is_err());
        assert!(pem_certificates("hello").is_err());
    }
}
