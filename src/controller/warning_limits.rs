//! Warning Events repeat within limits: per object and reason, a burst and then one every few
//! seconds, so that a loop of bad requests on one identity (a revoke loop, a flapping
//! Entitlement) cannot flood the Events API, while each object's first warnings always go out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Warnings of one reason about one object published at once.
const BURST: f64 = 5.0;
/// Then one every this long.
const EVERY: Duration = Duration::from_secs(10);
/// Objects remembered at most; past it, those whose bucket is full again are forgotten.
const REMEMBERED: usize = 4096;

/// The budgets of warnings, by object and reason.
#[derive(Default)]
pub struct WarningLimits {
    buckets: Mutex<HashMap<(String, String), (f64, Instant)>>,
}

impl WarningLimits {
    /// Whether a warning of `reason` about `object` (a uid or `namespace/name`) may go out now.
    pub fn allow(&self, object: &str, reason: &str, now: Instant) -> bool {
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        if buckets.len() >= REMEMBERED {
            let full = EVERY.mul_f64(BURST);
            buckets.retain(|_, (_, last)| now.saturating_duration_since(*last) < full);
            if buckets.len() >= REMEMBERED {
                // Every one of them busy: a flood from everywhere; let the oldest go.
                buckets.clear();
            }
        }
        let (tokens, last) = buckets
            .entry((object.to_string(), reason.to_string()))
            .or_insert((BURST, now));
        crate::token_bucket::take(tokens, last, now, BURST, 1.0 / EVERY.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_object_is_limited_while_others_and_other_reasons_are_not() {
        let limits = WarningLimits::default();
        let t0 = Instant::now();
        let sent = (0..1000)
            .filter(|_| limits.allow("team-a/web", "RevokeRequested", t0))
            .count();
        assert_eq!(sent, 5);
        assert!(limits.allow("team-a/web", "RevocationQuotaExceeded", t0));
        assert!(limits.allow("team-b/web", "RevokeRequested", t0));
        assert!(!limits.allow("team-a/web", "RevokeRequested", t0 + Duration::from_secs(5)));
        assert!(limits.allow(
            "team-a/web",
            "RevokeRequested",
            t0 + Duration::from_secs(11)
        ));
    }

    #[test]
    fn remembers_a_bounded_number_of_objects() {
        let limits = WarningLimits::default();
        let t0 = Instant::now();
        for i in 0..3 * REMEMBERED {
            assert!(limits.allow(&format!("ns/id-{i}"), "X", t0));
        }
        assert!(limits.buckets.lock().unwrap().len() <= REMEMBERED);
    }
}
