//! Helpers the verification tests share: a CA, issuing and reading leaves, CRLs, OpenSSL.

#![allow(dead_code)]

use nhi_api::KeyAlgorithm;
use nhi_core::ca::CertificateAuthority;
use nhi_core::issue::keys::generate_key;
use nhi_core::issue::leaf::{IssuedCertificate, LeafRequest, issue_leaf};
use nhi_identity::verify::*;
use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::Duration;
use time::OffsetDateTime;

pub fn ca() -> CertificateAuthority {
    let now = OffsetDateTime::now_utc();
    let m = CertificateAuthority::generate_root("test root", Duration::days(30), now).unwrap();
    CertificateAuthority::from_material(&m, now).unwrap()
}

pub fn issue(ca: &CertificateAuthority, req: &LeafRequest) -> IssuedCertificate {
    let key = generate_key(KeyAlgorithm::EcdsaP256).unwrap();
    issue_leaf(ca, req, &key, OffsetDateTime::now_utc()).unwrap()
}

pub fn chain(issued: &IssuedCertificate) -> Vec<CertificateDer<'static>> {
    certificates_from_pem(&issued.chain_pem).unwrap()
}

pub fn trust(ca: &CertificateAuthority) -> TrustBundle {
    TrustBundle::from_pem(ca.trust_bundle_pem()).unwrap()
}

/// A CRL listing `serials`, signed by `ca`, in PEM.
pub fn crl_pem(ca: &CertificateAuthority, serials: &[&str]) -> String {
    let now = OffsetDateTime::now_utc();
    CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        next_update: now + Duration::hours(1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&hex::decode(s).unwrap()),
                revocation_time: now,
                reason_code: Some(RevocationReason::CessationOfOperation),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(ca.issuer())
    .unwrap()
    .pem()
    .unwrap()
}

/// Runs `openssl verify` on `leaf_pem` against `ca_pem`; None when openssl is not installed (and
/// the run does not require it: `NHI_REQUIRE_TOOLS`).
pub fn openssl_verify(ca_pem: &str, leaf_pem: &str) -> Option<std::process::Output> {
    let dir = std::env::temp_dir().join(format!("nhi-openssl-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    std::fs::write(dir.join("leaf.pem"), leaf_pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", "sslclient", "-CAfile"])
        .arg(dir.join("ca.pem"))
        .arg(dir.join("leaf.pem"))
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    match out {
        Ok(out) => Some(out),
        Err(_) if std::env::var_os("NHI_REQUIRE_TOOLS").is_none() => None,
        Err(e) => panic!("openssl is required (NHI_REQUIRE_TOOLS) but cannot run: {e}"),
    }
}
