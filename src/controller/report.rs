//! How the controllers report: Events through the shared publisher, counted failures, and the one
//! policy by which a failed reconcile of any controller becomes a Warning Event (reason: the error
//! variant's name; note: the whole cause chain, never key material).

use std::error::Error;
use std::sync::Arc;

use kube::Resource;
use kube::runtime::events::EventType;

use super::events::EventPublisher;
use crate::metrics::Metrics;

/// An error a controller reports.
pub trait Reportable: Error {
    /// Stable CamelCase reason: the name of the error's variant.
    fn reason(&self) -> &'static str;

    /// The reason the failure is counted under in `nhi_failures_total` (the reason, unless a
    /// controller has always counted its failures under one name).
    fn counted_as(&self) -> &'static str {
        self.reason()
    }

    /// A race the next look resolves by itself: counted and logged, not worth an Event.
    fn transient(&self) -> bool {
        false
    }
}

/// Where Events and failure counts go.
#[derive(Clone)]
pub struct Reporter {
    pub events: Arc<EventPublisher>,
    pub metrics: Arc<Metrics>,
}

impl Reporter {
    /// Publishes an Event about `obj` (see [`EventPublisher::publish`]).
    pub fn publish<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.events
            .publish(&self.metrics, obj, type_, reason, redact_private_keys(note));
    }

    /// Publishes a Warning Event.
    pub fn warn<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: &str) {
        self.publish(obj, EventType::Warning, reason, note.to_string());
    }
}

/// The policy for a failed reconcile of any controller: logged and counted, and, unless it is a
/// transient race, a Warning Event about `obj` whose reason is the error variant's name and whose
/// note is the whole cause chain.
pub fn report_failure<K, E>(reporter: &Reporter, obj: &K, err: &E)
where
    K: Resource<DynamicType = ()>,
    E: Reportable,
{
    let chain = cause_chain(err);
    let object = format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    );
    tracing::warn!(kind = %K::kind(&()), object = %object, reason = err.reason(), error = %chain, "reconcile failed");
    reporter.metrics.count_failure(err.counted_as());
    if !err.transient() {
        reporter.publish(obj, EventType::Warning, err.reason(), chain);
    }
}

/// The error's message followed by each cause's that it does not already include.
pub fn cause_chain(err: &dyn Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !message.is_empty() && !out.contains(&message) {
            out.push_str(": ");
            out.push_str(&message);
        }
        source = cause.source();
    }
    out
}

/// `text` with every PEM private key block replaced: no key ever reaches an Event or a log.
pub fn redact_private_keys(text: String) -> String {
    const BEGIN: &str = "-----BEGIN ";
    const END: &str = "-----END ";
    const DASHES: &str = "-----";
    if !text.contains("PRIVATE KEY-----") {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let label = &after[..after.find(DASHES).unwrap_or(after.len())];
        if !label.ends_with("PRIVATE KEY") {
            out.push_str(&rest[..start + BEGIN.len()]);
            rest = after;
            continue;
        }
        out.push_str(&rest[..start]);
        out.push_str("[private key redacted]");
        // Up to the end of the END line; everything when the block is cut short.
        rest = after
            .find(END)
            .map(|e| &after[e + END.len()..])
            .and_then(|tail| tail.find(DASHES).map(|d| &tail[d + DASHES.len()..]))
            .unwrap_or("");
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("the record could not be written")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("the apiserver said no")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("request failed: {0}")]
    struct Inlined(#[source] Inner);

    #[test]
    fn the_chain_names_every_cause_once() {
        assert_eq!(
            cause_chain(&Outer(Inner)),
            "the record could not be written: the apiserver said no"
        );
        // A cause the message already carries is not repeated.
        assert_eq!(
            cause_chain(&Inlined(Inner)),
            "request failed: the apiserver said no"
        );
    }

    #[test]
    fn private_keys_never_pass() {
        let text = "bad: -----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY----- and \
                    -----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
            .to_string();
        let out = redact_private_keys(text);
        assert!(!out.contains("MIGH"), "{out}");
        assert!(out.contains("[private key redacted] and -----BEGIN CERTIFICATE-----"));
        assert!(out.contains("MIIB"));
        let ec = redact_private_keys("-----BEGIN EC PRIVATE KEY-----\nAAA".into());
        assert_eq!(ec, "[private key redacted]");
        assert_eq!(redact_private_keys("plain".into()), "plain");
    }
}
