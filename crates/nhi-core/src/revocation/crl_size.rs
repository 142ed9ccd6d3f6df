//! How many bytes each revoked certificate adds to a PEM CRL (an upper bound), and the budget a
//! CRL has: every CRL the operator signs goes into the `nhi-trust` ConfigMaps, which hold at
//! most 1 MiB in all.

use super::Reason;

/// What a ConfigMap may hold (the apiserver refuses more): 1 MiB of data.
pub const CONFIGMAP_LIMIT: usize = 1024 * 1024;

/// The part of an `nhi-trust` ConfigMap the CRLs may take: the rest is for the CA bundle (up to
/// three roots during a rotation, a few kB) and each CRL's header and signature.
pub const CRL_BUDGET: usize = CONFIGMAP_LIMIT - 32 * 1024;

/// Bytes of DER a revoked certificate takes in a CRL: the entry's SEQUENCE holding the serial
/// INTEGER (with a leading zero byte when the serial's top bit is set) and the revocation time
/// (UTCTime), plus the reason code extension when the entry carries one.
fn entry_der_bytes(serial_bytes: usize, sign_byte: bool, reason: Reason) -> usize {
    let integer = 2 + serial_bytes + usize::from(sign_byte);
    let time = 2 + 13;
    // SEQUENCE OF Extension { OID 2.5.29.21, OCTET STRING { ENUMERATED } }.
    let reason_code = if reason.in_crl() {
        2 + 2 + 5 + 2 + 3
    } else {
        0
    };
    let content = integer + time + reason_code;
    2 + content
}

/// Bytes of PEM a revoked certificate adds to a CRL, at most: base64 (4 characters for every 3
/// bytes, rounded up) and a line break every 64 characters.
pub fn entry_pem_bytes(serial_hex: &str, reason: Reason) -> usize {
    let serial_bytes = serial_hex.len().div_ceil(2);
    let sign_byte = serial_hex
        .chars()
        .next()
        .and_then(|c| c.to_digit(16))
        .is_none_or(|d| d >= 8);
    let der = entry_der_bytes(serial_bytes, sign_byte, reason);
    let base64 = (der * 4).div_ceil(3);
    base64 + base64.div_ceil(64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::revocation::{Revocation, RevocationRecord};
    use crate::serial::random_serial;
    use time::{Duration, OffsetDateTime};

    fn signed_crl_pem(record: &RevocationRecord, now: OffsetDateTime) -> String {
        let material = CertificateAuthority::generate_root("size", Duration::days(1), now).unwrap();
        let ca = CertificateAuthority::from_material(&material, now).unwrap();
        record
            .crl_params(now, Duration::hours(24))
            .signed_by(ca.issuer())
            .unwrap()
            .pem()
            .unwrap()
    }

    fn record_of(n: usize, reason: Reason, now: OffsetDateTime) -> RevocationRecord {
        let mut r = RevocationRecord::default();
        let revocations: Vec<Revocation> = (0..n)
            .map(|i| Revocation {
                serial_hex: hex::encode(random_serial().as_ref()),
                not_after: now + Duration::hours(1),
                reason,
                identity: format!("ns/id-{i}"),
            })
            .collect();
        r.add(&revocations, now);
        r
    }

    #[test]
    fn the_estimate_bounds_a_real_crl_closely() {
        let now = OffsetDateTime::now_utc();
        for reason in [Reason::CessationOfOperation, Reason::KeyCompromise] {
            let empty = signed_crl_pem(&RevocationRecord::default(), now).len();
            let record = record_of(2000, reason, now);
            let real = signed_crl_pem(&record, now).len() - empty;
            let estimate = record.crl_bytes();
            assert!(
                estimate >= real,
                "{reason:?}: estimate {estimate} below the real {real}"
            );
            assert!(
                estimate * 100 <= real * 103,
                "{reason:?}: estimate {estimate} more than 3% above the real {real}"
            );
        }
    }

    #[test]
    fn deleted_identities_take_less_room_than_revocations_with_a_reason() {
        let serial = hex::encode(random_serial().as_ref());
        let plain = entry_pem_bytes(&serial, Reason::CessationOfOperation);
        let with_reason = entry_pem_bytes(&serial, Reason::KeyCompromise);
        assert!(plain < 50 && with_reason < 70, "{plain} {with_reason}");
        // The documented capacity: over 20,000 deleted identities' certificates in one CRL.
        assert!(CRL_BUDGET / plain > 20_000, "{}", CRL_BUDGET / plain);
    }
}
