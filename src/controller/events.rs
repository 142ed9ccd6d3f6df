//! Publishing Events (about identities, Entitlements and the CA Secret): in the background, with
//! a token bucket for routine (Normal) Events so that a burst of thousands of issuances does not
//! make the Events API compete with the writes that matter, and with per-object limits on
//! repeated Warnings ([`WarningLimits`]).

use std::time::Instant;

use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};

use super::warning_limits::WarningLimits;
use crate::metrics::Metrics;

/// Publishes Events through a [`Recorder`], within an [`EventBudget`] and [`WarningLimits`].
pub struct EventPublisher {
    recorder: Recorder,
    budget: EventBudget,
    warnings: WarningLimits,
}

impl EventPublisher {
    pub fn new(recorder: Recorder, budget: EventBudget) -> Self {
        EventPublisher {
            recorder,
            budget,
            warnings: WarningLimits::default(),
        }
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
        let reference = obj.object_ref(&());
        let allowed = match type_ {
            EventType::Normal => self.budget.try_take(Instant::now()),
            EventType::Warning => {
                let object = reference
                    .uid
                    .clone()
                    .or_else(|| reference.name.clone())
                    .unwrap_or_default();
                self.warnings.allow(&object, reason, Instant::now())
            }
        };
        if !allowed {
            metrics.count_event_dropped();
            return;
        }
        let recorder = self.recorder.clone();
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
