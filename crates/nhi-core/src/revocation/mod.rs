//! The revocation record: every revoked certificate until it would have expired anyway, and the
//! CRL number (pure). It is what the CRL is signed from, and it is persisted before any
//! revocation is reported done. Its quotas and the CRL's size are in the submodules.

pub mod crl_size;
pub mod quota;

use std::collections::BTreeMap;

use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// Why a certificate was revoked (the CRL entry's reason code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The identity was deleted or its workload is gone.
    CessationOfOperation,
    /// The identity's review lapsed, or a grant it carried was withdrawn.
    PrivilegeWithdrawn,
    /// A person asked for it (`kubectl nhi revoke`): assume the key is compromised.
    KeyCompromise,
}

impl Reason {
    fn word(self) -> &'static str {
        match self {
            Reason::CessationOfOperation => "cessationOfOperation",
            Reason::PrivilegeWithdrawn => "privilegeWithdrawn",
            Reason::KeyCompromise => "keyCompromise",
        }
    }

    fn from_word(w: &str) -> Option<Reason> {
        [
            Reason::CessationOfOperation,
            Reason::PrivilegeWithdrawn,
            Reason::KeyCompromise,
        ]
        .into_iter()
        .find(|r| r.word() == w)
    }

    /// The reason code the CRL entry carries. A deleted identity's certificates (the bulk of
    /// any mass revocation) carry none, which keeps their entries about a third smaller; the
    /// record keeps the reason.
    fn crl_reason(self) -> Option<RevocationReason> {
        match self {
            Reason::CessationOfOperation => None,
            Reason::PrivilegeWithdrawn => Some(RevocationReason::PrivilegeWithdrawn),
            Reason::KeyCompromise => Some(RevocationReason::KeyCompromise),
        }
    }

    /// Whether the CRL entry carries a reason code.
    pub(crate) fn in_crl(self) -> bool {
        self.crl_reason().is_some()
    }
}

/// One certificate to revoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Serial number, lowercase hexadecimal (as in `status.serialNumber`).
    pub serial_hex: String,
    /// When the certificate expires: it leaves the CRL then.
    pub not_after: OffsetDateTime,
    pub reason: Reason,
    /// `namespace/name` of the identity, for people reading the record.
    pub identity: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    not_after: i64,
    revoked_at: i64,
    reason: Reason,
    identity: String,
}

/// Errors reading a persisted record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("line {line} of the revocation record is malformed: {what}")]
    Malformed { line: usize, what: String },
}

/// The revoked certificates not yet expired, by serial.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevocationRecord {
    /// The number of the last CRL signed from this record (monotonic across restarts).
    pub crl_number: u64,
    entries: BTreeMap<String, Entry>,
}

impl RevocationRecord {
    /// Adds revocations at `now`. Already revoked or already expired certificates are skipped.
    /// Returns how many were added.
    pub fn add(&mut self, revocations: &[Revocation], now: OffsetDateTime) -> usize {
        let mut added = 0;
        for r in revocations {
            let serial = normalise_serial(&r.serial_hex);
            if serial.is_empty() || r.not_after <= now || self.entries.contains_key(&serial) {
                continue;
            }
            self.entries.insert(
                serial,
                Entry {
                    not_after: r.not_after.unix_timestamp(),
                    revoked_at: now.unix_timestamp(),
                    reason: r.reason,
                    identity: r.identity.clone(),
                },
            );
            added += 1;
        }
        added
    }

    /// Takes in everything `other` has that this record lacks (another writer's entries), and
    /// the higher CRL number.
    pub fn merge(&mut self, other: &RevocationRecord) {
        self.crl_number = self.crl_number.max(other.crl_number);
        for (serial, e) in &other.entries {
            self.entries
                .entry(serial.clone())
                .or_insert_with(|| e.clone());
        }
    }

    /// The namespaces of the identities whose certificates are on the record.
    pub fn namespaces(&self) -> std::collections::BTreeSet<String> {
        self.entries
            .values()
            .filter_map(|e| e.identity.split_once('/').map(|(ns, _)| ns.to_string()))
            .collect()
    }

    /// Drops the certificates that have expired by `now`: they need no CRL entry any more.
    /// Returns how many were dropped.
    pub fn prune(&mut self, now: OffsetDateTime) -> usize {
        let before = self.entries.len();
        let now = now.unix_timestamp();
        self.entries.retain(|_, e| e.not_after > now);
        before - self.entries.len()
    }

    /// Whether `serial_hex` is revoked.
    pub fn contains(&self, serial_hex: &str) -> bool {
        self.entries.contains_key(&normalise_serial(serial_hex))
    }

    /// How many certificates are revoked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry: its serial, the identity (`namespace/name`) and the reason.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, &str, Reason)> {
        self.entries
            .iter()
            .map(|(serial, e)| (serial.as_str(), e.identity.as_str(), e.reason))
    }

    /// Bytes of PEM the entries add to one CRL, at most.
    pub fn crl_bytes(&self) -> usize {
        self.entries()
            .map(|(serial, _, reason)| crl_size::entry_pem_bytes(serial, reason.in_crl()))
            .sum()
    }

    /// When the first revoked certificate expires (and the record can shrink).
    pub fn next_expiry(&self) -> Option<OffsetDateTime> {
        let t = self.entries.values().map(|e| e.not_after).min()?;
        OffsetDateTime::from_unix_timestamp(t).ok()
    }

    /// The parameters of the CRL numbered `crl_number`, valid from `now` for `validity` (from a
    /// minute earlier, for clocks slightly behind).
    pub fn crl_params(
        &self,
        now: OffsetDateTime,
        validity: Duration,
    ) -> CertificateRevocationListParams {
        let revoked_certs = self
            .entries
            .iter()
            .filter_map(|(serial, e)| {
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex::decode(serial).ok()?),
                    revocation_time: OffsetDateTime::from_unix_timestamp(e.revoked_at).ok()?,
                    reason_code: e.reason.crl_reason(),
                    invalidity_date: None,
                })
            })
            .collect();
        CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + validity,
            crl_number: SerialNumber::from(self.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
    }

    /// The persisted form: a header line with the CRL number, then one line per revoked
    /// certificate: `<serial> <notAfter unix> <revokedAt unix> <reason> <namespace/name>`.
    pub fn to_text(&self) -> String {
        let mut out = Vec::new();
        // Writing into a Vec cannot fail, and the text is ASCII but for identity names (UTF-8).
        let _ = self.write_text(&mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    /// Writes [`Self::to_text`] into `out` line by line (the whole text is never held: 20,000
    /// entries make 2 MB of it).
    pub fn write_text(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        writeln!(out, "crlNumber {}", self.crl_number)?;
        for (serial, e) in &self.entries {
            writeln!(
                out,
                "{serial} {} {} {} {}",
                e.not_after,
                e.revoked_at,
                e.reason.word(),
                e.identity
            )?;
        }
        Ok(())
    }

    /// Reads the persisted form.
    pub fn from_text(text: &str) -> Result<Self, RecordError> {
        let mut record = RevocationRecord::default();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let bad = |what: &str| RecordError::Malformed {
                line: line_no,
                what: what.to_string(),
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [] => {}
                ["crlNumber", n] => {
                    record.crl_number = n.parse().map_err(|_| bad("CRL number"))?;
                }
                [serial, not_after, revoked_at, reason, identity] => {
                    if hex::decode(serial).is_err() {
                        return Err(bad("serial is not hexadecimal"));
                    }
                    record.entries.insert(
                        normalise_serial(serial),
                        Entry {
                            not_after: not_after.parse().map_err(|_| bad("notAfter"))?,
                            revoked_at: revoked_at.parse().map_err(|_| bad("revokedAt"))?,
                            reason: Reason::from_word(reason).ok_or_else(|| bad("reason"))?,
                            identity: identity.to_string(),
                        },
                    );
                }
                _ => return Err(bad("expected five fields")),
            }
        }
        Ok(record)
    }
}

/// Serials are compared as lowercase hexadecimal with an even number of digits.
pub fn normalise_serial(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    if s.len() % 2 == 1 { format!("0{s}") } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn revocation(serial: &str, not_after: OffsetDateTime) -> Revocation {
        Revocation {
            serial_hex: serial.into(),
            not_after,
            reason: Reason::CessationOfOperation,
            identity: "ns/web".into(),
        }
    }

    #[test]
    fn keeps_a_revocation_until_the_certificate_would_have_expired() {
        let now = datetime!(2026-11-23 10:00 UTC);
        let mut r = RevocationRecord::default();
        assert_eq!(
            r.add(
                &[
                    revocation("0a1b", now + Duration::hours(1)),
                    revocation("0c2d", now + Duration::minutes(10)),
                    revocation("0e3f", now - Duration::seconds(1)),
                ],
                now
            ),
            2,
            "an expired certificate needs no revocation"
        );
        assert!(r.contains("0A1B") && r.contains("c2d"));
        assert_eq!(
            r.add(&[revocation("0a1b", now + Duration::hours(1))], now),
            0
        );
        assert_eq!(r.next_expiry(), Some(now + Duration::minutes(10)));
        assert_eq!(r.prune(now + Duration::minutes(10)), 1);
        assert!(!r.contains("0c2d") && r.contains("0a1b"));
        assert_eq!(r.prune(now + Duration::hours(2)), 1);
        assert!(r.is_empty());
    }

    #[test]
    fn the_persisted_form_reads_back_the_same() {
        let now = datetime!(2026-11-23 10:00 UTC);
        let mut r = RevocationRecord::default();
        r.add(&[revocation("0a1b", now + Duration::hours(1))], now);
        let mut k = revocation("ff", now + Duration::hours(2));
        k.reason = Reason::KeyCompromise;
        r.add(&[k], now);
        r.crl_number = 1;
        let text = r.to_text();
        assert!(text.starts_with("crlNumber 1\n"), "{text}");
        assert_eq!(RevocationRecord::from_text(&text).unwrap(), r);
        assert_eq!(
            RevocationRecord::from_text("").unwrap(),
            RevocationRecord::default()
        );
        assert!(matches!(
            RevocationRecord::from_text("crlNumber 3\nzz 1 2 keyCompromise a/b\n"),
            Err(RecordError::Malformed { line: 2, .. })
        ));
        assert!(RevocationRecord::from_text("0a 1 2 stolen a/b").is_err());
    }

    #[test]
    fn merging_keeps_both_writers_entries_and_the_higher_number() {
        let now = datetime!(2026-11-23 10:00 UTC);
        let mut a = RevocationRecord {
            crl_number: 3,
            ..Default::default()
        };
        a.add(&[revocation("0a", now + Duration::hours(1))], now);
        let mut b = RevocationRecord {
            crl_number: 5,
            ..Default::default()
        };
        let mut other = revocation("0b", now + Duration::hours(1));
        other.identity = "team-b/api".into();
        b.add(&[other], now);
        a.merge(&b);
        assert_eq!(a.crl_number, 5);
        assert!(a.contains("0a") && a.contains("0b"));
        assert_eq!(
            a.namespaces().into_iter().collect::<Vec<_>>(),
            vec!["ns".to_string(), "team-b".to_string()]
        );
    }

    #[test]
    fn the_crl_carries_the_record_number_and_lists_every_entry() {
        let now = datetime!(2026-11-23 10:00 UTC);
        let mut r = RevocationRecord {
            crl_number: 41,
            ..Default::default()
        };
        r.add(
            &[
                revocation("0a1b", now + Duration::hours(1)),
                revocation("0c2d", now + Duration::hours(1)),
            ],
            now,
        );
        let p = r.crl_params(now, Duration::hours(24));
        assert_eq!(p.crl_number, SerialNumber::from(41u64));
        assert_eq!(p.revoked_certs.len(), 2);
        assert_eq!(p.next_update, now + Duration::hours(24));
        assert!(p.this_update < now);
    }
}

#[cfg(test)]
mod crl_size_tests {
    use super::crl_size::{CRL_BUDGET, entry_pem_bytes};
    use super::*;
    use crate::ca::CertificateAuthority;
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
        let plain = entry_pem_bytes(&serial, false);
        let with_reason = entry_pem_bytes(&serial, true);
        assert!(plain < 50 && with_reason < 70, "{plain} {with_reason}");
        // The documented capacity: over 20,000 deleted identities' certificates in one CRL.
        assert!(CRL_BUDGET / plain > 20_000, "{}", CRL_BUDGET / plain);
    }
}
