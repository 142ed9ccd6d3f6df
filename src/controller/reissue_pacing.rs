//! Pacing of re-issues after a CA switch: every identity holding a certificate of the retiring
//! CA is re-issued under the new one, spread over time (each identity at its own slot) and
//! rate-limited, so a rotation never turns into a burst of signatures and Secret writes.

use std::time::Instant;

use arc_swap::ArcSwapOption;
use time::{Duration, OffsetDateTime};

use crate::ca::rotation::{deferred_until, reissue_slot};
use crate::token_bucket::TokenBucket;

/// When the new CA took over, and the rate of re-issues under it (their spread is a setting of
/// the plan: `identity::settings::Settings::reissue_spread`).
pub struct ReissuePacing {
    /// When the new CA started signing, while its predecessor is retiring.
    switched_at: ArcSwapOption<OffsetDateTime>,
    rate: TokenBucket,
}

impl ReissuePacing {
    /// Re-issues at most `per_second` (after a burst of as many).
    pub fn new(per_second: f64) -> Self {
        let burst = per_second.ceil().clamp(1.0, 10_000.0) as u32;
        ReissuePacing {
            switched_at: ArcSwapOption::empty(),
            rate: TokenBucket::new(burst, per_second),
        }
    }

    /// Records the switch time of the rotation under way (None: no CA is retiring).
    pub fn set_switched(&self, switched_at: Option<OffsetDateTime>) {
        self.switched_at.store(switched_at.map(std::sync::Arc::new));
    }

    /// When the CA now signing took over from one still retiring, if one is.
    pub fn switched_at(&self) -> Option<OffsetDateTime> {
        self.switched_at.load_full().map(|at| *at)
    }

    /// The re-issue rate, per second.
    pub fn per_second(&self) -> f64 {
        self.rate.per_second()
    }

    /// Admits one re-issue now (None: a token of the rate is taken), or says when to try again.
    pub fn admit(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        if self.rate.try_take(Instant::now()) {
            return None;
        }
        let wait = (1.0 / self.rate.per_second().max(0.001)) * (1.0 + rand::random::<f64>());
        Some(now + Duration::seconds_f64(wait))
    }
}

/// When identity `uid`, holding a certificate of the retiring CA that renews at `renew_at`,
/// re-issues by its slot after a switch at `switched_at` (None: no later than now; the rate
/// still applies, see [`ReissuePacing::admit`]). Pure.
pub fn slot_deferral(
    uid: &str,
    switched_at: Option<OffsetDateTime>,
    spread: Duration,
    renew_at: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    let slot = reissue_slot(uid, switched_at?, spread);
    deferred_until(slot, renew_at, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reissues_go_at_the_rate() {
        let pacing = ReissuePacing::new(2.0);
        let now = OffsetDateTime::now_utc();
        assert_eq!(pacing.admit(now), None);
        assert_eq!(pacing.admit(now), None);
        // The burst (2) is spent: the next waits about half a second to a second.
        let at = pacing.admit(now).expect("held back by the rate");
        assert!(at > now && at <= now + Duration::seconds(1), "{at}");
    }

    #[test]
    fn after_a_switch_each_identity_waits_for_its_slot() {
        let now = OffsetDateTime::now_utc();
        let spread = Duration::minutes(10);
        let later = now + Duration::hours(1);
        let waits: Vec<_> = (0..50)
            .filter_map(|i| slot_deferral(&format!("uid-{i}"), Some(now), spread, later, now))
            .collect();
        assert!(waits.len() >= 48, "{} of 50 deferred", waits.len());
        assert!(waits.iter().all(|w| *w <= now + spread));
        // A renewal due before the slot comes first.
        let soon = now + Duration::seconds(5);
        let at = slot_deferral("uid-1", Some(now), spread, soon, now).unwrap();
        assert!(at <= soon);
        // No switch: no slot.
        assert_eq!(slot_deferral("uid-1", None, spread, later, now), None);
    }

    #[test]
    fn remembers_the_switch() {
        let pacing = ReissuePacing::new(2.0);
        let now = OffsetDateTime::now_utc();
        assert_eq!(pacing.switched_at(), None);
        pacing.set_switched(Some(now));
        assert_eq!(pacing.switched_at(), Some(now));
        pacing.set_switched(None);
        assert_eq!(pacing.switched_at(), None);
    }
}
