//! A certificate the identity controller remembers, with the Secret version it was seen at, in
//! fixed-size binary form: one is kept per identity (100,000 on one replica), and its text form
//! (serial, thumbprint and inputs hash in hexadecimal, the version as a string) took four heap
//! allocations and twice the bytes. Anything that does not fit the compact form exactly is kept
//! as it came, so the memory gives back what it was given.

use crate::controller::compact_text::decimal;
use nhi_core::issue::assess::KnownCertificate;
use nhi_identity::certificate::CertificateInfo;
use time::OffsetDateTime;

/// The longest serial number X.509 allows (RFC 5280: 20 octets).
const MAX_SERIAL: usize = 20;

/// A remembered certificate and the Secret version it was seen at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RememberedCertificate {
    Compact(Box<Compact>),
    /// What does not fit [`Compact`] exactly (never the operator's own certificates).
    AsGiven(Box<(String, KnownCertificate)>),
}

/// The binary form of what the operator writes: a decimal resourceVersion, lowercase hex
/// serial (at most 20 octets), SHA-256 thumbprint and 16-byte inputs hash, whole-second UTC
/// validity, no Kubernetes client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compact {
    resource_version: u64,
    serial: [u8; MAX_SERIAL],
    serial_len: u8,
    thumbprint: [u8; 32],
    inputs_hash: [u8; 16],
    ca_key_sha256: [u8; 32],
    not_before: i64,
    not_after: i64,
}

impl RememberedCertificate {
    /// `cert` at Secret version `resource_version`, compact when it fits.
    pub fn new(resource_version: String, cert: KnownCertificate) -> Self {
        match compact(&resource_version, &cert) {
            Some(c) => RememberedCertificate::Compact(Box::new(c)),
            None => RememberedCertificate::AsGiven(Box::new((resource_version, cert))),
        }
    }

    /// The certificate, if the Secret is still at `resource_version`.
    pub fn at_version(&self, resource_version: &str) -> Option<KnownCertificate> {
        match self {
            RememberedCertificate::Compact(c) => {
                (decimal(resource_version) == Some(c.resource_version)).then(|| c.known())
            }
            RememberedCertificate::AsGiven(g) => (g.0 == resource_version).then(|| g.1.clone()),
        }
    }

    /// The certificate's public facts, whatever the version.
    pub fn info(&self) -> CertificateInfo {
        match self {
            RememberedCertificate::Compact(c) => c.info(),
            RememberedCertificate::AsGiven(g) => g.1.info.clone(),
        }
    }
}

impl Compact {
    fn info(&self) -> CertificateInfo {
        CertificateInfo {
            serial_hex: hex::encode(&self.serial[..usize::from(self.serial_len)]),
            thumbprint_sha256: hex::encode(self.thumbprint),
            not_before: utc(self.not_before),
            not_after: utc(self.not_after),
        }
    }

    fn known(&self) -> KnownCertificate {
        KnownCertificate {
            info: self.info(),
            inputs_hash: hex::encode(self.inputs_hash),
            ca_key_sha256: self.ca_key_sha256,
            kube_client_not_after: None,
        }
    }
}

/// The compact form of `cert` at `resource_version`, when converting it back gives it exactly.
fn compact(resource_version: &str, cert: &KnownCertificate) -> Option<Compact> {
    if cert.kube_client_not_after.is_some() {
        return None;
    }
    let serial_bytes = lower_hex(&cert.info.serial_hex)?;
    if serial_bytes.len() > MAX_SERIAL {
        return None;
    }
    let mut serial = [0u8; MAX_SERIAL];
    serial[..serial_bytes.len()].copy_from_slice(&serial_bytes);
    let c = Compact {
        resource_version: decimal(resource_version)?,
        serial,
        serial_len: serial_bytes.len() as u8,
        thumbprint: lower_hex(&cert.info.thumbprint_sha256)?.try_into().ok()?,
        inputs_hash: lower_hex(&cert.inputs_hash)?.try_into().ok()?,
        ca_key_sha256: cert.ca_key_sha256,
        not_before: whole_utc_seconds(cert.info.not_before)?,
        not_after: whole_utc_seconds(cert.info.not_after)?,
    };
    (c.known() == *cert).then_some(c)
}

/// The bytes of `text` when it is lowercase hexadecimal (the form that encodes back to it).
fn lower_hex(text: &str) -> Option<Vec<u8>> {
    let bytes = hex::decode(text).ok()?;
    (hex::encode(&bytes) == text).then_some(bytes)
}

fn whole_utc_seconds(t: OffsetDateTime) -> Option<i64> {
    (t.offset().is_utc() && t.nanosecond() == 0).then(|| t.unix_timestamp())
}

fn utc(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(serial: &str, thumbprint: &str, inputs: &str) -> KnownCertificate {
        let nb = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let info = CertificateInfo {
            serial_hex: serial.into(),
            thumbprint_sha256: thumbprint.into(),
            not_before: nb,
            not_after: nb + time::Duration::hours(1),
        };
        KnownCertificate::new(info, inputs, b"ca")
    }

    fn operators() -> KnownCertificate {
        cert(&"4a".repeat(16), &"ab".repeat(32), &"0f".repeat(16))
    }

    #[test]
    fn the_operators_own_certificates_are_kept_compact_and_given_back_exactly() {
        let r = RememberedCertificate::new("12345".into(), operators());
        assert!(matches!(r, RememberedCertificate::Compact(_)));
        assert_eq!(r.at_version("12345"), Some(operators()));
        assert_eq!(r.info(), operators().info);
        // Another version, or the same number written differently, is not the version seen.
        for other in ["12346", "012345", "+12345", ""] {
            assert_eq!(r.at_version(other), None, "{other}");
        }
    }

    #[test]
    fn what_does_not_fit_is_kept_as_given() {
        let odd = [
            ("7", cert("4A", &"ab".repeat(32), &"0f".repeat(16))), // upper case
            (
                "7",
                cert(&"01".repeat(21), &"ab".repeat(32), &"0f".repeat(16)),
            ), // 21 octets
            ("7", cert("4a", "ab", &"0f".repeat(16))),             // short thumbprint
            ("7", cert("4a", &"ab".repeat(32), "h")),              // not hex
            ("v7", operators()),                                   // not a number
            (
                "7",
                operators().with_kube_client_not_after(Some("2027-01-01T00:00:00Z".into())),
            ),
            ("7", {
                let mut c = operators();
                c.info.not_after += time::Duration::milliseconds(5);
                c
            }),
        ];
        for (rv, c) in odd {
            let r = RememberedCertificate::new(rv.into(), c.clone());
            assert!(matches!(r, RememberedCertificate::AsGiven(_)), "{c:?}");
            assert_eq!(r.at_version(rv), Some(c.clone()));
            assert_eq!(r.info(), c.info);
            assert_eq!(r.at_version("8"), None);
        }
    }

    #[test]
    fn a_remembered_certificate_is_small() {
        // The map holds the enum inline: one pointer and its tag.
        assert!(std::mem::size_of::<RememberedCertificate>() <= 16);
        assert!(std::mem::size_of::<Compact>() <= 128);
    }
}
