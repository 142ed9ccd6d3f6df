//! Revocation quotas (pure): how many unexpired revoked certificates one identity and one
//! namespace may keep on the record, and how much of a CRL the whole record may fill. A request
//! over a quota is refused whole, not queued: a revoke loop on one identity stops at its quota,
//! and one namespace cannot fill the record that every other namespace's revocations need.

use std::collections::{HashMap, HashSet};

use time::OffsetDateTime;

use super::crl_size::entry_pem_bytes;
use super::{Revocation, RevocationRecord, normalise_serial};

/// The limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Unexpired revoked certificates of one identity.
    pub per_identity: usize,
    /// Unexpired revoked certificates of one namespace's identities.
    pub per_namespace: usize,
    /// Bytes all the CRLs together may take in a trust ConfigMap.
    pub crl_bytes: usize,
}

/// Why a revocation was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "identity {identity} already has {live} revoked certificates that have not expired (quota {quota} per identity); the next is accepted when one expires"
    )]
    IdentityQuota {
        identity: String,
        live: usize,
        quota: usize,
    },
    #[error(
        "namespace {namespace} already has {live} revoked certificates that have not expired (quota {quota} per namespace); the next is accepted when one expires"
    )]
    NamespaceQuota {
        namespace: String,
        live: usize,
        quota: usize,
    },
    #[error(
        "the CRL would grow to {bytes} bytes, past the {budget} bytes a trust ConfigMap can hold; revocations are accepted again as revoked certificates expire"
    )]
    Capacity { bytes: usize, budget: usize },
}

impl Refusal {
    /// A stable CamelCase word for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::IdentityQuota { .. } | Refusal::NamespaceQuota { .. } => {
                "RevocationQuotaExceeded"
            }
            Refusal::Capacity { .. } => "RevocationCapacityReached",
        }
    }
}

/// What the record holds now, and what a batch of requests has added to it so far.
#[derive(Clone, Debug, Default)]
pub struct Usage {
    per_identity: HashMap<String, usize>,
    per_namespace: HashMap<String, usize>,
    /// PEM bytes of one CRL listing every entry.
    crl_bytes: usize,
    /// How many CRLs list every entry (two during a CA rotation's overlap).
    signers: usize,
    admitted: HashSet<String>,
}

fn namespace_of(identity: &str) -> &str {
    identity.split_once('/').map_or(identity, |(ns, _)| ns)
}

impl Usage {
    /// The usage of `record`, whose entries `signers` CRLs list each.
    pub fn of(record: &RevocationRecord, signers: usize) -> Usage {
        let mut usage = Usage {
            signers: signers.max(1),
            ..Default::default()
        };
        for (serial, identity, reason) in record.entries() {
            *usage.per_identity.entry(identity.to_string()).or_default() += 1;
            *usage
                .per_namespace
                .entry(namespace_of(identity).to_string())
                .or_default() += 1;
            usage.crl_bytes += entry_pem_bytes(serial, reason.in_crl());
        }
        usage
    }

    /// Bytes all the CRLs take.
    pub fn total_crl_bytes(&self) -> usize {
        self.crl_bytes * self.signers
    }

    /// How full the CRLs are, from 0 to 1 (and past 1 if a rotation started on a full record).
    pub fn fill(&self, limits: &Limits) -> f64 {
        self.total_crl_bytes() as f64 / limits.crl_bytes.max(1) as f64
    }

    /// Admits one request's `revocations` into a batch on top of `record`, or refuses it whole.
    /// Returns how many certificates it newly revokes (expired ones, revoked ones and ones an
    /// earlier request of the batch revokes cost nothing and count for nothing).
    pub fn admit(
        &mut self,
        record: &RevocationRecord,
        revocations: &[Revocation],
        limits: &Limits,
        now: OffsetDateTime,
    ) -> Result<usize, Refusal> {
        let mut fresh: Vec<(String, &Revocation)> = vec![];
        for r in revocations {
            let serial = normalise_serial(&r.serial_hex);
            if r.not_after <= now
                || serial.is_empty()
                || record.contains(&serial)
                || self.admitted.contains(&serial)
                || fresh.iter().any(|(s, _)| *s == serial)
            {
                continue;
            }
            fresh.push((serial, r));
        }
        let mut by_identity: HashMap<&str, usize> = HashMap::new();
        let mut by_namespace: HashMap<&str, usize> = HashMap::new();
        let mut bytes = 0;
        for (serial, r) in &fresh {
            *by_identity.entry(&r.identity).or_default() += 1;
            *by_namespace.entry(namespace_of(&r.identity)).or_default() += 1;
            bytes += entry_pem_bytes(serial, r.reason.in_crl());
        }
        for (identity, n) in &by_identity {
            let live = self.per_identity.get(*identity).copied().unwrap_or(0);
            if live + n > limits.per_identity {
                return Err(Refusal::IdentityQuota {
                    identity: identity.to_string(),
                    live,
                    quota: limits.per_identity,
                });
            }
        }
        for (namespace, n) in &by_namespace {
            let live = self.per_namespace.get(*namespace).copied().unwrap_or(0);
            if live + n > limits.per_namespace {
                return Err(Refusal::NamespaceQuota {
                    namespace: namespace.to_string(),
                    live,
                    quota: limits.per_namespace,
                });
            }
        }
        let total = (self.crl_bytes + bytes) * self.signers;
        if bytes > 0 && total > limits.crl_bytes {
            return Err(Refusal::Capacity {
                bytes: total,
                budget: limits.crl_bytes,
            });
        }
        for (identity, n) in by_identity {
            *self.per_identity.entry(identity.to_string()).or_default() += n;
        }
        for (namespace, n) in by_namespace {
            *self.per_namespace.entry(namespace.to_string()).or_default() += n;
        }
        self.crl_bytes += bytes;
        let count = fresh.len();
        self.admitted.extend(fresh.into_iter().map(|(s, _)| s));
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revocation::Reason;
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-05 10:00 UTC);

    fn rev(serial: u32, identity: &str) -> Revocation {
        Revocation {
            serial_hex: format!("{:032x}", serial as u128 | (1u128 << 126)),
            not_after: NOW + Duration::hours(1),
            reason: Reason::KeyCompromise,
            identity: identity.into(),
        }
    }

    fn limits() -> Limits {
        Limits {
            per_identity: 3,
            per_namespace: 5,
            crl_bytes: 1_000_000,
        }
    }

    #[test]
    fn a_revoke_loop_on_one_identity_stops_at_its_quota_while_others_go_on() {
        let mut record = RevocationRecord::default();
        let mut accepted = 0;
        let mut refused = None;
        for i in 0..100 {
            let mut usage = Usage::of(&record, 1);
            match usage.admit(&record, &[rev(i, "team-a/web")], &limits(), NOW) {
                Ok(n) => {
                    accepted += n;
                    record.add(&[rev(i, "team-a/web")], NOW);
                }
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        assert_eq!(accepted, 3);
        let refusal = refused.unwrap();
        assert_eq!(refusal.reason(), "RevocationQuotaExceeded");
        assert!(
            refusal
                .to_string()
                .starts_with("identity team-a/web already has 3 revoked certificates"),
            "{refusal}"
        );
        // Another identity of the namespace, and another namespace, are still accepted.
        let mut usage = Usage::of(&record, 1);
        assert_eq!(
            usage.admit(&record, &[rev(500, "team-a/api")], &limits(), NOW),
            Ok(1)
        );
        assert_eq!(
            usage.admit(&record, &[rev(501, "team-b/web")], &limits(), NOW),
            Ok(1)
        );
        // Once the revoked certificates expire, the identity may revoke again.
        let later = NOW + Duration::hours(2);
        record.prune(later);
        let mut usage = Usage::of(&record, 1);
        let mut again = rev(1000, "team-a/web");
        again.not_after = later + Duration::hours(1);
        assert_eq!(usage.admit(&record, &[again], &limits(), later), Ok(1));
    }

    #[test]
    fn the_namespace_quota_counts_every_identity_of_the_namespace() {
        let record = RevocationRecord::default();
        let mut usage = Usage::of(&record, 1);
        for i in 0..5 {
            let id = format!("team-a/id-{i}");
            assert_eq!(usage.admit(&record, &[rev(i, &id)], &limits(), NOW), Ok(1));
        }
        assert!(matches!(
            usage.admit(&record, &[rev(9, "team-a/other")], &limits(), NOW),
            Err(Refusal::NamespaceQuota {
                live: 5,
                quota: 5,
                ..
            })
        ));
        assert_eq!(
            usage.admit(&record, &[rev(10, "team-b/x")], &limits(), NOW),
            Ok(1)
        );
    }

    #[test]
    fn what_costs_nothing_is_never_refused() {
        let mut record = RevocationRecord::default();
        let held: Vec<Revocation> = (0..3).map(|i| rev(i, "team-a/web")).collect();
        record.add(&held, NOW);
        let mut usage = Usage::of(&record, 1);
        // Revoked already, expired, or twice in one request: nothing new.
        let mut expired = rev(7, "team-a/web");
        expired.not_after = NOW;
        assert_eq!(
            usage.admit(&record, &[held[0].clone(), expired], &limits(), NOW),
            Ok(0)
        );
        let a = rev(8, "team-b/x");
        assert_eq!(
            usage.admit(&record, &[a.clone(), a.clone()], &limits(), NOW),
            Ok(1)
        );
        assert_eq!(usage.admit(&record, &[a], &limits(), NOW), Ok(0));
    }

    #[test]
    fn the_crl_budget_counts_every_signer_and_refuses_past_it() {
        let record = RevocationRecord::default();
        let one = entry_pem_bytes(&rev(0, "a/b").serial_hex, Reason::KeyCompromise.in_crl());
        let roomy = Limits {
            per_identity: 1000,
            per_namespace: 1000,
            crl_bytes: one * 10,
        };
        let mut single = Usage::of(&record, 1);
        let mut rotating = Usage::of(&record, 2);
        for i in 0..5 {
            let r = [rev(i, &format!("ns/id-{i}"))];
            assert_eq!(single.admit(&record, &r, &roomy, NOW), Ok(1));
            assert_eq!(rotating.admit(&record, &r, &roomy, NOW), Ok(1));
        }
        let sixth = [rev(5, "ns/id-5")];
        assert_eq!(single.admit(&record, &sixth, &roomy, NOW), Ok(1));
        let refused = rotating.admit(&record, &sixth, &roomy, NOW).unwrap_err();
        assert_eq!(refused.reason(), "RevocationCapacityReached");
        assert!((rotating.fill(&roomy) - 1.0).abs() < 1e-9);
    }
}
