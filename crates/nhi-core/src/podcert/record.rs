//! The durable record of an identity's pod certificates (`status.podCertificates`): what the
//! signer adds before it answers a request, and what is revoked from it when a grant they carry
//! is withdrawn or the identity is suspended, retired or deleted.

use nhi_api::{MachineIdentityStatus, PodCertificateRecord, PodCertificatesStatus};
use nhi_identity::timestamp::{parse_rfc3339, rfc3339};
use time::OffsetDateTime;

use crate::revocation::{Reason, Revocation};

/// The most pod certificates one identity's record holds (the CRD's bound).
pub const MAX_RECORDED: usize = 2048;

/// The record is full of unexpired certificates: no more can be issued until some expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the identity has {MAX_RECORDED} unexpired pod certificates on record, the most it keeps \
     (revocable); more are issued as they expire"
)]
pub struct RecordFull;

/// The record with `new` added, expired certificates left out.
pub fn with_issued(
    current: Option<&PodCertificatesStatus>,
    new: PodCertificateRecord,
    now: OffsetDateTime,
) -> Result<PodCertificatesStatus, RecordFull> {
    let mut certificates: Vec<PodCertificateRecord> = current
        .map(|c| c.certificates.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| unexpired(c, now) && c.serial_number != new.serial_number)
        .collect();
    if certificates.len() >= MAX_RECORDED {
        return Err(RecordFull);
    }
    let pod = new.pod.clone();
    certificates.push(new);
    Ok(PodCertificatesStatus {
        outstanding: i32::try_from(certificates.len()).unwrap_or(i32::MAX),
        last_issued_at: Some(rfc3339(now)),
        last_issued_pod: Some(pod),
        certificates,
    })
}

/// The record with each of `new` added in order (one write for many requests): the record, or
/// None when none fits, and for each entry whether it is in it.
pub fn with_all_issued(
    current: Option<&PodCertificatesStatus>,
    new: Vec<PodCertificateRecord>,
    now: OffsetDateTime,
) -> (Option<PodCertificatesStatus>, Vec<Result<(), RecordFull>>) {
    let mut record: Option<PodCertificatesStatus> = None;
    let mut outcomes = Vec::with_capacity(new.len());
    for entry in new {
        match with_issued(record.as_ref().or(current), entry, now) {
            Ok(next) => {
                record = Some(next);
                outcomes.push(Ok(()));
            }
            Err(full) => outcomes.push(Err(full)),
        }
    }
    (record, outcomes)
}

fn unexpired(c: &PodCertificateRecord, now: OffsetDateTime) -> bool {
    parse_rfc3339(&c.not_after).is_some_and(|t| t > now)
}

/// The revocations of the identity's unexpired pod certificates: those carrying one of
/// `withdrawn` grants (None: every one), except those ending within `grace` (left to expire).
/// Each pod's certificates count as that pod's for the revocation quotas (an identity may cover
/// many pods), as `<namespace>/<identity>/pod/<pod>`.
pub fn pod_revocations(
    status: Option<&MachineIdentityStatus>,
    withdrawn: Option<&[&str]>,
    reason: Reason,
    identity: &str,
    now: OffsetDateTime,
    grace: time::Duration,
) -> Vec<Revocation> {
    let Some(record) = status.and_then(|s| s.pod_certificates.as_ref()) else {
        return vec![];
    };
    record
        .certificates
        .iter()
        .filter(|c| withdrawn.is_none_or(|w| c.grants.iter().any(|g| w.contains(&g.as_str()))))
        .filter_map(|c| {
            let not_after = parse_rfc3339(&c.not_after)?;
            (not_after > now + grace).then(|| Revocation {
                serial_hex: c.serial_number.clone(),
                not_after,
                reason,
                identity: format!("{identity}/pod/{}", c.pod),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;

    fn rec(serial: &str, pod: &str, ends: OffsetDateTime, grants: &[&str]) -> PodCertificateRecord {
        PodCertificateRecord {
            serial_number: serial.into(),
            not_after: rfc3339(ends),
            pod: pod.into(),
            grants: grants.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    #[test]
    fn issuing_adds_one_and_drops_the_expired() {
        let now = t0();
        let first = with_issued(None, rec("01", "a", now + Duration::hours(1), &[]), now).unwrap();
        assert_eq!(first.outstanding, 1);
        let later = now + Duration::minutes(90);
        let second = with_issued(
            Some(&first),
            rec("02", "b", later + Duration::hours(1), &[]),
            later,
        )
        .unwrap();
        assert_eq!(second.outstanding, 1, "01 expired");
        assert_eq!(second.last_issued_pod.as_deref(), Some("b"));
        assert_eq!(second.certificates[0].serial_number, "02");
    }

    #[test]
    fn a_full_record_refuses_until_some_expire() {
        let now = t0();
        let full = PodCertificatesStatus {
            certificates: (0..MAX_RECORDED)
                .map(|i| rec(&format!("{i:04x}"), "p", now + Duration::hours(1), &[]))
                .collect(),
            ..Default::default()
        };
        let next = rec("ffff", "p", now + Duration::hours(1), &[]);
        assert_eq!(with_issued(Some(&full), next.clone(), now), Err(RecordFull));
        assert!(with_issued(Some(&full), next, now + Duration::hours(2)).is_ok());
    }

    #[test]
    fn a_batch_is_added_in_one_record_until_it_is_full() {
        let now = t0();
        let almost = PodCertificatesStatus {
            certificates: (0..MAX_RECORDED - 1)
                .map(|i| rec(&format!("{i:04x}"), "p", now + Duration::hours(1), &[]))
                .collect(),
            ..Default::default()
        };
        let batch = vec![
            rec("a1", "x", now + Duration::hours(1), &[]),
            rec("a2", "y", now + Duration::hours(1), &[]),
        ];
        let (record, outcomes) = with_all_issued(Some(&almost), batch.clone(), now);
        assert_eq!(outcomes, vec![Ok(()), Err(RecordFull)]);
        let record = record.expect("the first fits");
        assert_eq!(record.certificates.len(), MAX_RECORDED);
        assert_eq!(record.last_issued_pod.as_deref(), Some("x"));

        let (record, outcomes) = with_all_issued(None, batch, now);
        assert_eq!(outcomes, vec![Ok(()), Ok(())]);
        let record = record.unwrap();
        assert_eq!(record.outstanding, 2);
        assert_eq!(record.last_issued_pod.as_deref(), Some("y"));

        let (record, outcomes) = with_all_issued(Some(&almost), vec![], now);
        assert!(record.is_none() && outcomes.is_empty());
    }

    #[test]
    fn a_withdrawn_grant_revokes_the_certificates_that_carry_it_per_pod() {
        let now = t0();
        let status = MachineIdentityStatus {
            pod_certificates: Some(Box::new(PodCertificatesStatus {
                certificates: vec![
                    rec("01", "a", now + Duration::hours(1), &["orders.read"]),
                    rec("02", "b", now + Duration::hours(1), &[]),
                    rec("03", "c", now + Duration::minutes(1), &["orders.read"]),
                ],
                ..Default::default()
            })),
            ..Default::default()
        };
        let grace = Duration::minutes(2);
        let withdrawn = ["orders.read"];
        let revs = pod_revocations(
            Some(&status),
            Some(&withdrawn),
            Reason::PrivilegeWithdrawn,
            "shop/web",
            now,
            grace,
        );
        assert_eq!(revs.len(), 1, "03 ends within the grace");
        assert_eq!(revs[0].serial_hex, "01");
        assert_eq!(revs[0].identity, "shop/web/pod/a");
        let all = pod_revocations(
            Some(&status),
            None,
            Reason::CessationOfOperation,
            "shop/web",
            now,
            Duration::ZERO,
        );
        assert_eq!(all.len(), 3);
    }
}
