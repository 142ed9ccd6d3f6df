//! Publishing Events (about identities, Entitlements and the CA Secret): in the background, with
//! a token bucket for routine (Normal) Events so that a burst of thousands of issuances does not
//! make the Events API compete with the writes that matter, and with per-object limits on
//! repeated Warnings ([`WarningLimits`]). Only Warnings go through a recorder that remembers
//! what it published (to count repeats into a series): a routine Event is about one issuance and
//! never repeats, and remembering each for the recorder's six minutes would cost memory and a
//! scan of them all on every publish, growing with the identities issued.

use std::time::Instant;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};

use super::warning_limits::WarningLimits;
use crate::metrics::Metrics;

/// Publishes Events through a [`Recorder`], within an [`EventBudget`] and [`WarningLimits`].
pub struct EventPublisher {
    client: Client,
    reporter: Reporter,
    /// The recorder of Warnings, which counts their repeats.
    warnings_recorder: Recorder,
    budget: EventBudget,
    warnings: WarningLimits,
}

impl EventPublisher {
    pub fn new(client: Client, reporter: Reporter, budget: EventBudget) -> Self {
        EventPublisher {
            warnings_recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            reporter,
            budget,
            warnings: WarningLimits::default(),
        }
    }

    /// The recorder for an Event of `type_`: a fresh one, remembering nothing, for a Normal one.
    fn recorder(&self, type_: EventType) -> Recorder {
        match type_ {
            EventType::Normal => Recorder::new(self.client.clone(), self.reporter.clone()),
            EventType::Warning => self.warnings_recorder.clone(),
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
        let mut reference = obj.object_ref(&());
        // The recorder counts a Warning's repeats by the object it is about: without the
        // object's version, which changes with every status write, or no repeat would count.
        reference.resource_version = None;
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
        let recorder = self.recorder(type_);
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
