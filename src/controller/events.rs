//! Publishing Events about identities: in the background, and with a token bucket for routine
//! (Normal) Events so that a burst of thousands of issuances does not make the Events API compete
//! with the writes that matter. Warnings are never limited.

use std::sync::Mutex;
use std::time::Instant;

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

use crate::metrics::Metrics;

/// Publishes Events through a [`Recorder`], within an [`EventBudget`].
pub struct EventPublisher {
    recorder: Recorder,
    budget: EventBudget,
}

impl EventPublisher {
    pub fn new(recorder: Recorder, budget: EventBudget) -> Self {
        EventPublisher { recorder, budget }
    }

    /// Publishes an Event about an object (an identity, an Entitlement) in the background: Events are reports, and a slow
    /// Events API must not slow issuance. Normal Events beyond the budget are dropped and
    /// counted, as client-go's recorder does.
    pub fn publish<K: Resource<DynamicType = ()>>(
        &self,
        metrics: &Metrics,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        if type_ == EventType::Normal && !self.budget.try_take(Instant::now()) {
            metrics.count_event_dropped();
            return;
        }
        let recorder = self.recorder.clone();
        let reference = obj.object_ref(&());
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(note)),
            action: "Reconcile".to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&ev, &reference).await {
                tracing::debug!(error = %e, "publishing an Event failed");
            }
        });
    }
}

/// Events carry at most 1 kB of note.
fn truncate(mut s: String) -> String {
    if s.len() > 1000 {
        let mut cut = 1000;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Allows `burst` Events at once and `per_second` after that.
pub struct EventBudget {
    state: Mutex<(f64, Instant)>,
    burst: f64,
    per_second: f64,
}

impl EventBudget {
    pub fn new(burst: u32, per_second: f64) -> Self {
        EventBudget {
            state: Mutex::new((f64::from(burst), Instant::now())),
            burst: f64::from(burst),
            per_second,
        }
    }

    /// Takes one token at `now`; false when the budget is spent.
    pub fn try_take(&self, now: Instant) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return true;
        };
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_the_burst_then_the_rate() {
        let b = EventBudget::new(3, 2.0);
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

    #[test]
    fn truncates_notes_on_a_character_boundary() {
        let long = "é".repeat(600);
        let t = truncate(long);
        assert!(t.len() <= 1000 && t.chars().all(|c| c == 'é'));
    }
}
