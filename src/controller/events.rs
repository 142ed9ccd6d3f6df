//! Publishing Events (about identities, Entitlements and the CA Secret): in the background, and with a token bucket for routine
//! (Normal) Events so that a burst of thousands of issuances does not make the Events API compete
//! with the writes that matter. Warnings are never limited.

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

/// The budget of routine Events: a token bucket.
pub use crate::token_bucket::TokenBucket as EventBudget;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_notes_on_a_character_boundary() {
        let long = "é".repeat(600);
        let t = truncate(long);
        assert!(t.len() <= 1000 && t.chars().all(|c| c == 'é'));
    }
}
