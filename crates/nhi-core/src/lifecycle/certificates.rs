//! Which certificates an identity holds that are not expired yet: what retiring it revokes (pure).

use time::OffsetDateTime;

use crate::podcert::record::pod_revocations;
use crate::revocation::{Reason, Revocation};
use nhi_api::{CertificateRecord, MachineIdentityStatus};
use nhi_identity::certificate::CertificateInfo;
use nhi_identity::timestamp::{parse_rfc3339, rfc3339};

/// At most this many earlier certificates are remembered in status (the newest ones).
pub const MAX_PREVIOUS: usize = 64;

/// The identity's unexpired certificates: the current one, the earlier ones still valid, and
/// `also` (the certificate its Secret holds, which the status may not show yet), without repeats.
pub fn unexpired(
    status: Option<&MachineIdentityStatus>,
    also: Option<&CertificateInfo>,
    now: OffsetDateTime,
) -> Vec<(String, OffsetDateTime)> {
    let mut out: Vec<(String, OffsetDateTime)> = vec![];
    let mut push = |serial: &str, not_after: OffsetDateTime| {
        if not_after > now && !out.iter().any(|(s, _)| s.eq_ignore_ascii_case(serial)) {
            out.push((serial.to_string(), not_after));
        }
    };
    if let Some(s) = status {
        if let (Some(serial), Some(not_after)) = (
            s.serial_number.as_deref(),
            s.not_after.as_deref().and_then(parse_rfc3339),
        ) {
            push(serial, not_after);
        }
        for p in &s.previous_certificates {
            if let Some(not_after) = parse_rfc3339(&p.not_after) {
                push(&p.serial_number, not_after);
            }
        }
    }
    if let Some(info) = also {
        push(&info.serial_hex, info.not_after);
    }
    out
}

/// The revocations of `certificates` for `reason`.
pub fn revocations(
    certificates: &[(String, OffsetDateTime)],
    reason: Reason,
    identity: &str,
) -> Vec<Revocation> {
    certificates
        .iter()
        .map(|(serial, not_after)| Revocation {
            serial_hex: serial.clone(),
            not_after: *not_after,
            reason,
            identity: identity.to_string(),
        })
        .collect()
}

/// The revocations of every unexpired certificate of an identity (`identity`:
/// `namespace/name`) for `reason`: its own (the status's and `also`, see [`unexpired`]) and its
/// pods' (`status.podCertificates`, each counted as its pod's).
pub fn every_revocation(
    status: Option<&MachineIdentityStatus>,
    also: Option<&CertificateInfo>,
    reason: Reason,
    identity: &str,
    now: OffsetDateTime,
) -> Vec<Revocation> {
    let mut all = revocations(&unexpired(status, also, now), reason, identity);
    all.extend(pod_revocations(
        status,
        None,
        reason,
        identity,
        now,
        time::Duration::ZERO,
    ));
    all
}

/// The earlier certificates after the current one became `new_serial`: the one it replaces joins
/// them; expired ones leave; at most [`MAX_PREVIOUS`], the newest kept.
pub fn previous_after(
    previous: &MachineIdentityStatus,
    new_serial: &str,
    now: OffsetDateTime,
) -> Vec<CertificateRecord> {
    let mut list: Vec<CertificateRecord> = previous.previous_certificates.clone();
    if let (Some(serial), Some(not_after)) = (&previous.serial_number, &previous.not_after)
        && serial != new_serial
        && !list.iter().any(|c| &c.serial_number == serial)
    {
        list.push(CertificateRecord {
            serial_number: serial.clone(),
            not_after: not_after.to_string(),
        });
    }
    list.retain(|c| {
        c.serial_number != new_serial && parse_rfc3339(&c.not_after).is_some_and(|t| t > now)
    });
    if list.len() > MAX_PREVIOUS {
        list.drain(..list.len() - MAX_PREVIOUS);
    }
    list
}

/// A status record of `info`.
pub fn record_of(info: &CertificateInfo) -> CertificateRecord {
    CertificateRecord {
        serial_number: info.serial_hex.clone(),
        not_after: rfc3339(info.not_after),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    #[test]
    fn every_revocation_holds_the_identitys_and_its_pods_certificates() {
        let now = datetime!(2026-11-23 10:00 UTC);
        let mut s = status("0a", now + Duration::hours(1), &[]);
        s.pod_certificates = Some(Box::new(nhi_api::PodCertificatesStatus {
            certificates: vec![nhi_api::PodCertificateRecord {
                serial_number: "c1".into(),
                not_after: rfc3339(now + Duration::hours(1)),
                pod: "web-0".into(),
                grants: vec![],
            }],
            ..Default::default()
        }));
        let all = every_revocation(
            Some(&s),
            None,
            Reason::CessationOfOperation,
            "shop/web",
            now,
        );
        let got: Vec<(&str, &str)> = all
            .iter()
            .map(|r| (r.serial_hex.as_str(), r.identity.as_str()))
            .collect();
        assert_eq!(got, [("0a", "shop/web"), ("c1", "shop/web/pod/web-0")]);
    }

    fn status(
        serial: &str,
        not_after: OffsetDateTime,
        previous: &[(&str, OffsetDateTime)],
    ) -> MachineIdentityStatus {
        MachineIdentityStatus {
            serial_number: Some(serial.into()),
            not_after: Some(rfc3339(not_after).into()),
            previous_certificates: previous
                .iter()
                .map(|(s, t)| CertificateRecord {
                    serial_number: s.to_string(),
                    not_after: rfc3339(*t),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn retiring_revokes_every_unexpired_certificate_once() {
        let now = datetime!(2026-11-23 10:00 UTC);
        let s = status(
            "0c",
            now + Duration::hours(1),
            &[
                ("0b", now + Duration::minutes(20)),
                ("0a", now - Duration::minutes(1)),
            ],
        );
        let in_secret = CertificateInfo {
            serial_hex: "0d".into(),
            thumbprint_sha256: String::new(),
            not_before: now,
            not_after: now + Duration::hours(1),
        };
        let certs = unexpired(Some(&s), Some(&in_secret), now);
        let serials: Vec<&str> = certs.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(serials, vec!["0c", "0b", "0d"]);
        let same = CertificateInfo {
            serial_hex: "0C".into(),
            ..in_secret
        };
        assert_eq!(unexpired(Some(&s), Some(&same), now).len(), 2);
        let revs = revocations(&certs, Reason::CessationOfOperation, "ns/a");
        assert_eq!(revs.len(), 3);
        assert_eq!(revs[0].identity, "ns/a");
        assert!(unexpired(None, None, now).is_empty());
    }

    #[test]
    fn a_rotation_remembers_the_replaced_certificate_until_it_expires() {
        let now = datetime!(2026-11-23 10:00 UTC);
        let s = status(
            "0c",
            now + Duration::minutes(20),
            &[("0a", now - Duration::minutes(1))],
        );
        let next = previous_after(&s, "0d", now);
        assert_eq!(
            next,
            vec![CertificateRecord {
                serial_number: "0c".into(),
                not_after: rfc3339(now + Duration::minutes(20)),
            }]
        );
        // The same certificate again (a status rewrite) changes nothing.
        let again = MachineIdentityStatus {
            serial_number: Some("0d".into()),
            not_after: Some(rfc3339(now + Duration::hours(1)).into()),
            previous_certificates: next.clone(),
            ..Default::default()
        };
        assert_eq!(previous_after(&again, "0d", now), next);
        // Many forced re-issues: only the newest are kept.
        let mut many = again.clone();
        for i in 0..100 {
            many.previous_certificates.push(CertificateRecord {
                serial_number: format!("{i:04x}"),
                not_after: rfc3339(now + Duration::minutes(30)),
            });
        }
        let kept = previous_after(&many, "0d", now);
        assert_eq!(kept.len(), MAX_PREVIOUS);
        assert_eq!(kept.last().unwrap().serial_number, "0063");
    }
}
