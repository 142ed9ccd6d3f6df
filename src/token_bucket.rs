//! A token bucket: a burst at once, then a steady rate (Events, re-issues after a CA rotation).

use std::sync::Mutex;
use std::time::Instant;

/// Allows `burst` takes at once and `per_second` after that.
pub struct TokenBucket {
    state: Mutex<(f64, Instant)>,
    burst: f64,
    per_second: f64,
}

impl TokenBucket {
    pub fn new(burst: u32, per_second: f64) -> Self {
        TokenBucket {
            state: Mutex::new((f64::from(burst), Instant::now())),
            burst: f64::from(burst),
            per_second,
        }
    }

    /// The rate tokens come back at.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// Takes one token at `now`; false when the budget is spent.
    pub fn try_take(&self, now: Instant) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return true;
        };
        let (tokens, last) = &mut *state;
        take(tokens, last, now, self.burst, self.per_second)
    }
}

/// One take from a bucket holding `tokens` at `last`, refilled at `per_second` up to `burst`
/// by `now` (the arithmetic of every bucket: [`TokenBucket`], the per-object Warning limits).
pub fn take(
    tokens: &mut f64,
    last: &mut Instant,
    now: Instant,
    burst: f64,
    per_second: f64,
) -> bool {
    let elapsed = now.saturating_duration_since(*last).as_secs_f64();
    *tokens = (*tokens + elapsed * per_second).min(burst);
    *last = now;
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let b = TokenBucket::new(3, 2.0);
        let t0 = Instant::now();
        assert!((0..3).all(|_| b.try_take(t0)));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(500)));
        assert!(!b.try_take(t0 + Duration::from_millis(500)));
        // Refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.try_take(later)));
        assert!(!b.try_take(later));
    }
}
