//! The per-identity delegation budget (`spec.delegation.maxPerMinute`): one bucket per identity
//! at the root of the chain, shared by its children and theirs, so delegating further never
//! multiplies it. Every authenticated request takes from it, refused ones too: a caller cannot
//! make the endpoint work (or write audit lines) faster than its identity's budget.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::token_bucket::take;

/// Buckets kept at most before the full ones are dropped.
const MAX_BUCKETS: usize = 16_384;

/// One bucket per identity (its UID: a recreated identity starts afresh).
#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    per_minute: u32,
    /// Whether a request was refused since the last one taken (only the first is audited).
    refusing: bool,
}

/// The budget is spent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spent {
    /// How long until the next request may be taken.
    pub wait: Duration,
    /// Whether this is the first refusal since a request was last taken.
    pub first: bool,
}

impl RateLimits {
    /// Takes one request from `identity`'s budget of `per_minute` at `now`; when it is spent, how
    /// long until the next.
    pub fn take(&self, identity: &str, per_minute: u32, now: Instant) -> Result<(), Spent> {
        // A panic elsewhere leaves the counts as they were: they still limit.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let per_minute = per_minute.max(1);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(identity) {
            prune(&mut buckets, now);
        }
        let burst = f64::from(per_minute);
        let per_second = burst / 60.0;
        let bucket = buckets.entry(identity.to_string()).or_insert(Bucket {
            tokens: burst,
            last: now,
            per_minute,
            refusing: false,
        });
        if bucket.per_minute != per_minute {
            // The identity's limit changed: never more than the new burst.
            bucket.tokens = bucket.tokens.min(burst);
            bucket.per_minute = per_minute;
        }
        if take(&mut bucket.tokens, &mut bucket.last, now, burst, per_second) {
            bucket.refusing = false;
            return Ok(());
        }
        let first = !std::mem::replace(&mut bucket.refusing, true);
        Err(Spent {
            wait: Duration::from_secs_f64((1.0 - bucket.tokens) / per_second),
            first,
        })
    }
}

/// Drops the buckets that are full again (they hold nothing a fresh one would not).
fn prune(buckets: &mut HashMap<String, Bucket>, now: Instant) {
    buckets.retain(|_, b| {
        let per_second = f64::from(b.per_minute) / 60.0;
        let refilled = b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * per_second;
        refilled < f64::from(b.per_minute)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_minute_then_the_steady_rate_and_others_unaffected() {
        let limits = RateLimits::default();
        let t0 = Instant::now();
        for _ in 0..6 {
            assert!(limits.take("a", 6, t0).is_ok());
        }
        let spent = limits.take("a", 6, t0).unwrap_err();
        assert!(
            (spent.wait.as_secs_f64() - 10.0).abs() < 0.01,
            "one child every 10 s at 6 per minute: {spent:?}"
        );
        assert!(spent.first);
        assert!(!limits.take("a", 6, t0).unwrap_err().first, "audited once");
        assert!(
            limits.take("b", 6, t0).is_ok(),
            "another identity has its own"
        );
        assert!(limits.take("a", 6, t0 + Duration::from_secs(10)).is_ok());
        let again = limits
            .take("a", 6, t0 + Duration::from_secs(10))
            .unwrap_err();
        assert!(again.first, "a new run of refusals is audited again");
    }

    #[test]
    fn a_lowered_limit_takes_effect_at_once() {
        let limits = RateLimits::default();
        let t0 = Instant::now();
        assert!(limits.take("a", 100, t0).is_ok());
        assert!(limits.take("a", 1, t0).is_ok());
        assert!(limits.take("a", 1, t0).is_err());
    }

    #[test]
    fn a_zero_limit_is_one_a_minute_never_a_panic() {
        let limits = RateLimits::default();
        let t0 = Instant::now();
        assert!(limits.take("a", 0, t0).is_ok());
        let spent = limits.take("a", 0, t0).unwrap_err();
        assert!((spent.wait.as_secs_f64() - 60.0).abs() < 0.01, "{spent:?}");
    }

    #[test]
    fn full_buckets_are_dropped_when_there_are_too_many() {
        let limits = RateLimits::default();
        let t0 = Instant::now();
        for i in 0..MAX_BUCKETS {
            let _ = limits.take(&format!("id-{i}"), 60, t0);
        }
        let later = t0 + Duration::from_secs(2);
        assert!(limits.take("new", 60, later).is_ok());
        let kept = limits.buckets.lock().unwrap().len();
        assert_eq!(kept, 1, "every old bucket had refilled");
    }
}
