//! Status conditions shared by the operator's resources, kstatus-compatible.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

/// One aspect of the object's current state, in the shape `kubectl wait --for=condition=...`,
/// Flux and Argo CD understand.
// The short fields are `SmolStr`: held inline up to 23 bytes, they take no allocation in the
// operator's cache of every identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The aspect this condition describes, for example `Ready`.
    #[serde(rename = "type")]
    pub type_: SmolStr,
    /// `True`, `False` or `Unknown`.
    pub status: SmolStr,
    /// A stable CamelCase word saying why the condition has its status.
    pub reason: SmolStr,
    /// A human-readable explanation.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: SmolStr,
    /// The object generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition with the given verdict; its transition time is set by [`merge_conditions`].
    pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>) -> Self {
        Condition {
            type_: type_.into(),
            status: SmolStr::new_static(if status { "True" } else { "False" }),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: SmolStr::default(),
            observed_generation: None,
        }
    }

    /// Whether this condition's status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// The conditions with their transition times blanked: what two statuses are compared by, so
/// that recomputing the same status later is no change.
pub fn without_transition_times(conditions: &[Condition]) -> Vec<Condition> {
    conditions
        .iter()
        .map(|c| Condition {
            last_transition_time: SmolStr::default(),
            ..c.clone()
        })
        .collect()
}

/// Builds the next condition list: each desired condition keeps the previous transition time when
/// its status did not change, and gets `now` otherwise. Conditions not in `desired` are dropped.
pub fn merge_conditions(
    previous: &[Condition],
    desired: Vec<Condition>,
    generation: Option<i64>,
    now: &str,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|mut c| {
            c.observed_generation = generation;
            c.last_transition_time = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.into());
            c
        })
        .collect()
}

/// Finds a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_transition_time_when_status_unchanged() {
        let mut old = Condition::new("Ready", true, "Issued", "ok");
        old.last_transition_time = "2026-01-01T00:00:00Z".into();
        let merged = merge_conditions(
            &[old],
            vec![Condition::new("Ready", true, "Renewed", "again")],
            Some(3),
            "2026-02-02T00:00:00Z",
        );
        assert_eq!(merged[0].last_transition_time, "2026-01-01T00:00:00Z");
        assert_eq!(merged[0].reason, "Renewed");
        assert_eq!(merged[0].observed_generation, Some(3));
    }

    #[test]
    fn new_transition_time_when_status_flips() {
        let mut old = Condition::new("Ready", true, "Issued", "ok");
        old.last_transition_time = "2026-01-01T00:00:00Z".into();
        let merged = merge_conditions(
            &[old],
            vec![Condition::new("Ready", false, "SecretConflict", "taken")],
            Some(1),
            "2026-02-02T00:00:00Z",
        );
        assert_eq!(merged[0].last_transition_time, "2026-02-02T00:00:00Z");
        assert!(!merged[0].is_true());
    }
}
