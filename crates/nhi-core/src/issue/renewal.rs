//! When to renew a certificate: a fraction of its lifetime, with deterministic per-identity jitter.

use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::leaf::CLOCK_SKEW_ALLOWANCE;

/// Jitter applied to the renewal point, as a fraction of the lifetime (±5 %).
pub const JITTER_FRACTION: f64 = 0.05;

/// Deterministic jitter in `[-1.0, 1.0]` for an identity, so that identities created together
/// renew spread over time, and a restarted operator computes the same renewal time.
pub fn jitter_unit(identity_key: &str) -> f64 {
    let digest = Sha256::digest(identity_key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let v = u64::from_be_bytes(first) as f64 / u64::MAX as f64;
    v * 2.0 - 1.0
}

/// The renewal time of a certificate valid from `not_before` to `not_after`: at `fraction` of the
/// lifetime (0 < fraction < 1), moved by up to ±5 % of the lifetime by the identity's jitter, and
/// kept between 10 % and 95 % of the lifetime. The lifetime is counted from the moment of issue,
/// not from the backdated notBefore, so short certificates are not renewed at once.
pub fn plan_renewal(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    fraction: f64,
    identity_key: &str,
) -> OffsetDateTime {
    let issued_at = (not_before + CLOCK_SKEW_ALLOWANCE).min(not_after);
    let lifetime = (not_after - issued_at).as_seconds_f64().max(0.0);
    let point = (fraction + JITTER_FRACTION * jitter_unit(identity_key)).clamp(0.10, 0.95);
    issued_at + Duration::seconds_f64(lifetime * point)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    #[test]
    fn renews_near_two_thirds_within_jitter() {
        let nb = t0() - CLOCK_SKEW_ALLOWANCE;
        let na = t0() + Duration::hours(1);
        for i in 0..200 {
            let at = plan_renewal(nb, na, 2.0 / 3.0, &format!("ns/id-{i}"));
            let secs = (at - t0()).whole_seconds();
            assert!((2220..=2580).contains(&secs), "{secs}");
        }
    }

    #[test]
    fn is_stable_per_identity_and_differs_between_identities() {
        // The jitter comes from the identity's key alone, so a restarted operator (or another
        // replica) plans the same moment: pinned here.
        let nb = t0();
        let na = nb + Duration::hours(1);
        let offset = |key: &str| (plan_renewal(nb, na, 0.66, key) - nb).whole_seconds();
        assert_eq!(offset("a/b"), 2486);
        assert_ne!(offset("a/b"), offset("a/c"));
    }

    #[test]
    fn spreads_ten_thousand_identities() {
        let nb = t0();
        let na = nb + Duration::hours(1);
        let mut seconds: Vec<i64> = (0..10_000)
            .map(|i| (plan_renewal(nb, na, 2.0 / 3.0, &format!("ns/mi-{i}")) - nb).whole_seconds())
            .collect();
        seconds.sort();
        seconds.dedup();
        // ±5 % of an hour is a 360 s window; nearly every second of it is used.
        assert!(seconds.len() > 300, "{}", seconds.len());
        let max_per_second = (0..10_000)
            .map(|i| (plan_renewal(nb, na, 2.0 / 3.0, &format!("ns/mi-{i}")) - nb).whole_seconds())
            .fold(std::collections::HashMap::new(), |mut m, s| {
                *m.entry(s).or_insert(0) += 1;
                m
            })
            .into_values()
            .max()
            .unwrap();
        assert!(max_per_second < 80, "{max_per_second}");
    }

    #[test]
    fn stays_inside_the_lifetime() {
        let nb = t0() - CLOCK_SKEW_ALLOWANCE;
        let na = t0() + Duration::minutes(5);
        let early = plan_renewal(nb, na, 0.0, "x");
        let late = plan_renewal(nb, na, 1.0, "x");
        assert!(early >= t0() + Duration::seconds(30));
        assert!(late <= na - Duration::seconds(15));
    }

    #[test]
    fn a_short_backdated_certificate_is_not_due_at_once() {
        // 20 s lifetime, notBefore backdated 60 s: renewal still lies ahead of the issue time.
        let issued = t0();
        let at = plan_renewal(
            issued - CLOCK_SKEW_ALLOWANCE,
            issued + Duration::seconds(20),
            2.0 / 3.0,
            "a/b",
        );
        assert!(
            at > issued + Duration::seconds(10) && at < issued + Duration::seconds(16),
            "{}",
            at - issued
        );
    }
}
