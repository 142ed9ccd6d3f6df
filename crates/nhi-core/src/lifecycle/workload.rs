//! The workload an identity serves: present, missing within its grace period, or lapsed (pure).

use time::{Duration, OffsetDateTime};

/// Reason of an Unknown presence while the watch of the workload's kind has not listed yet (after
/// a start or a failover).
pub const WATCH_STARTING: &str = "WorkloadWatchStarting";

/// What the operator's watch of the workload's kind says about the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    /// The object exists.
    Present,
    /// The object does not exist (the watch of its kind is complete).
    Missing,
    /// Existence cannot be known (the kind is not served, the watch is forbidden or not synced
    /// yet). Never a reason to retire an identity.
    Unknown { reason: String, message: String },
}

/// Where an identity stands with its workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkloadState {
    /// No `workloadRef` is set.
    NotSet,
    /// The workload exists.
    Present,
    /// Missing since `since`; the identity lapses at `deadline` unless it comes back.
    Missing {
        since: OffsetDateTime,
        deadline: OffsetDateTime,
    },
    /// Missing for longer than the grace period.
    Lapsed { since: OffsetDateTime },
    /// Cannot be known; nothing is decided.
    Unknown { reason: String, message: String },
}

/// The workload state at `now`. `missing_since` is when the workload was first seen missing (kept
/// in the `WorkloadFound` condition's transition time, so a restart does not reset the clock).
pub fn workload_state(
    presence: Option<Presence>,
    missing_since: Option<OffsetDateTime>,
    grace: Duration,
    now: OffsetDateTime,
) -> WorkloadState {
    match presence {
        None => WorkloadState::NotSet,
        Some(Presence::Present) => WorkloadState::Present,
        Some(Presence::Unknown { reason, message }) => WorkloadState::Unknown { reason, message },
        Some(Presence::Missing) => {
            // A transition time in the future (a skewed clock) counts from now.
            let since = missing_since.filter(|s| *s <= now).unwrap_or(now);
            let deadline = since + grace;
            if now >= deadline {
                WorkloadState::Lapsed { since }
            } else {
                WorkloadState::Missing { since, deadline }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const GRACE: Duration = Duration::minutes(5);

    #[test]
    fn missing_counts_down_from_when_it_was_first_seen_missing() {
        let t0 = datetime!(2026-11-23 10:00 UTC);
        assert_eq!(
            workload_state(Some(Presence::Missing), None, GRACE, t0),
            WorkloadState::Missing {
                since: t0,
                deadline: t0 + GRACE
            }
        );
        let later = t0 + Duration::minutes(4);
        assert_eq!(
            workload_state(Some(Presence::Missing), Some(t0), GRACE, later),
            WorkloadState::Missing {
                since: t0,
                deadline: t0 + GRACE
            }
        );
        assert_eq!(
            workload_state(Some(Presence::Missing), Some(t0), GRACE, t0 + GRACE),
            WorkloadState::Lapsed { since: t0 }
        );
    }

    #[test]
    fn a_workload_that_came_back_or_cannot_be_seen_never_lapses() {
        let t0 = datetime!(2026-11-23 10:00 UTC);
        let long_after = t0 + Duration::days(30);
        assert_eq!(
            workload_state(Some(Presence::Present), Some(t0), GRACE, long_after),
            WorkloadState::Present
        );
        let unknown = Presence::Unknown {
            reason: "WorkloadKindUnknown".into(),
            message: "m".into(),
        };
        assert!(matches!(
            workload_state(Some(unknown), Some(t0), GRACE, long_after),
            WorkloadState::Unknown { .. }
        ));
        assert_eq!(
            workload_state(None, Some(t0), GRACE, long_after),
            WorkloadState::NotSet
        );
    }

    #[test]
    fn a_zero_grace_lapses_at_once_and_a_future_timestamp_counts_from_now() {
        let t0 = datetime!(2026-11-23 10:00 UTC);
        assert_eq!(
            workload_state(Some(Presence::Missing), None, Duration::ZERO, t0),
            WorkloadState::Lapsed { since: t0 }
        );
        let skewed = t0 + Duration::hours(1);
        assert_eq!(
            workload_state(Some(Presence::Missing), Some(skewed), GRACE, t0),
            WorkloadState::Missing {
                since: t0,
                deadline: t0 + GRACE
            }
        );
    }
}
