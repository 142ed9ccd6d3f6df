//! The Warning before revocations are refused: when the CRLs pass [`WARN_AT`] of what a trust
//! ConfigMap can hold, a Warning Event on the revocation record's ConfigMap and a log line say
//! so, once, and again only after the fill has dropped below [`REARM_AT`].

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

/// The fill at which the warning is given.
pub const WARN_AT: f64 = 0.8;

/// The fill below which the warning may be given again.
pub const REARM_AT: f64 = 0.7;

/// What a new fill means for a warning given (`warned`) or not: Some(true) to warn now,
/// Some(false) to re-arm, None for nothing.
pub fn crossing(warned: bool, fill: f64) -> Option<bool> {
    match (warned, fill) {
        (false, f) if f >= WARN_AT => Some(true),
        (true, f) if f < REARM_AT => Some(false),
        _ => None,
    }
}

/// The state of the warning.
pub struct CapacityWarning {
    recorder: Recorder,
    record: ObjectReference,
    warned: bool,
}

impl CapacityWarning {
    /// The warning about the record `name` in `namespace`.
    pub fn new(recorder: Recorder, namespace: &str, name: &str) -> Self {
        CapacityWarning {
            recorder,
            record: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("ConfigMap".into()),
                namespace: Some(namespace.to_string()),
                name: Some(name.to_string()),
                ..Default::default()
            },
            warned: false,
        }
    }

    /// Looks at the fill after a write of the record holding `entries` certificates.
    pub fn observe(&mut self, fill: f64, entries: usize) {
        match crossing(self.warned, fill) {
            Some(true) => {
                self.warned = true;
                let note = format!(
                    "the CRLs take {:.0}% of what a trust ConfigMap can hold ({entries} revoked certificates not expired yet); past 100% revocations are refused (and deletions wait) until some expire",
                    fill * 100.0
                );
                warn!("{note}");
                let recorder = self.recorder.clone();
                let record = self.record.clone();
                tokio::spawn(async move {
                    let ev = Event {
                        type_: EventType::Warning,
                        reason: "RevocationCapacityLow".into(),
                        note: Some(note),
                        action: "Revoke".into(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&ev, &record).await {
                        tracing::debug!(error = %e, "publishing an Event failed");
                    }
                });
            }
            Some(false) => self.warned = false,
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_on_the_way_up_and_again_only_after_falling_well_below() {
        let mut warned = false;
        let mut warnings = 0;
        for fill in [0.5, 0.79, 0.8, 0.95, 0.75, 0.85, 0.69, 0.81] {
            match crossing(warned, fill) {
                Some(true) => {
                    warned = true;
                    warnings += 1;
                }
                Some(false) => warned = false,
                None => {}
            }
        }
        assert_eq!(warnings, 2);
    }
}
