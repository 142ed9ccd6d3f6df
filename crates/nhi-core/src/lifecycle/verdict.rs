//! The lifecycle verdict: keep issuing, suspend, or retire an identity, and the conditions that
//! say why (pure).

use time::{Duration, OffsetDateTime};

use super::review::ReviewState;
use super::workload::{WATCH_STARTING, WorkloadState};
use nhi_api::{Condition, ReviewLapseAction, WorkloadRef};
use nhi_identity::timestamp::rfc3339;

/// Condition type: the object named by `spec.workloadRef` exists.
pub const WORKLOAD_FOUND: &str = "WorkloadFound";
/// Condition type: the review date is near or past.
pub const REVIEW_DUE: &str = "ReviewDue";
/// Reason: the workload does not exist.
pub const WORKLOAD_MISSING: &str = "WorkloadMissing";
/// Reason: the workload has been missing past its grace period.
pub const WORKLOAD_LAPSED: &str = "WorkloadLapsed";
/// Reason: the review date has passed.
pub const REVIEW_OVERDUE: &str = "ReviewOverdue";
/// Reason: the review date has passed and the identity is retired (`onReviewLapse: Delete`).
/// Distinct from `ReviewOverdue`: Events of one reason about one object are folded into one.
pub const REVIEW_LAPSED: &str = "ReviewLapsed";

/// Why an identity is retired (revoked and deleted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetireCause {
    /// Its workload has been missing past the grace period.
    WorkloadGone,
    /// Its review lapsed and `onReviewLapse` is `Delete`.
    ReviewOverdue,
}

impl RetireCause {
    /// The stable reason of the Event and of the revocation.
    pub fn reason(self) -> &'static str {
        match self {
            RetireCause::WorkloadGone => WORKLOAD_LAPSED,
            RetireCause::ReviewOverdue => REVIEW_LAPSED,
        }
    }
}

/// What the lifecycle asks of the reconciler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleAction {
    /// Keep the identity issued and renewed.
    Keep,
    /// Revoke its certificates, remove its key material, stop renewing (review lapsed,
    /// `Suspend`): moving `reviewBy` forward resumes issuance.
    Suspend,
    /// Revoke its certificates and delete it.
    Retire(RetireCause),
}

/// The lifecycle verdict for one identity at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lifecycle {
    pub review: ReviewState,
    pub workload: WorkloadState,
    pub action: LifecycleAction,
    /// When the verdict next changes by time alone (the review window opens or lapses, the
    /// workload's grace period ends).
    pub next_check: Option<OffsetDateTime>,
}

/// Decides from the review and workload states.
pub fn decide(
    review: ReviewState,
    workload: WorkloadState,
    on_review_lapse: ReviewLapseAction,
    review_warning: Duration,
) -> Lifecycle {
    let action = match (&workload, &review) {
        (WorkloadState::Lapsed { .. }, _) => LifecycleAction::Retire(RetireCause::WorkloadGone),
        (_, ReviewState::Overdue { .. }) => match on_review_lapse {
            ReviewLapseAction::Suspend => LifecycleAction::Suspend,
            ReviewLapseAction::Delete => LifecycleAction::Retire(RetireCause::ReviewOverdue),
        },
        _ => LifecycleAction::Keep,
    };
    let workload_deadline = match &workload {
        WorkloadState::Missing { deadline, .. } => Some(*deadline),
        _ => None,
    };
    let next_check = [review.next_change(review_warning), workload_deadline]
        .into_iter()
        .flatten()
        .min();
    Lifecycle {
        review,
        workload,
        action,
        next_check,
    }
}

/// The `WorkloadFound` and `ReviewDue` conditions (each only when its field is set).
pub fn lifecycle_conditions(
    lifecycle: &Lifecycle,
    workload_ref: Option<&WorkloadRef>,
) -> Vec<Condition> {
    let mut out = vec![];
    let named = workload_ref
        .map(|w| format!("{} {}", w.kind, w.name))
        .unwrap_or_default();
    match &lifecycle.workload {
        WorkloadState::NotSet => {}
        WorkloadState::Present => out.push(Condition::new(
            WORKLOAD_FOUND,
            true,
            "WorkloadPresent",
            format!("{named} exists"),
        )),
        WorkloadState::Missing { deadline, .. } => out.push(Condition::new(
            WORKLOAD_FOUND,
            false,
            WORKLOAD_MISSING,
            format!(
                "{named} does not exist; the identity is revoked and deleted at {} unless it comes back",
                rfc3339(*deadline)
            ),
        )),
        WorkloadState::Lapsed { since } => out.push(Condition::new(
            WORKLOAD_FOUND,
            false,
            WORKLOAD_MISSING,
            format!(
                "{named} has not existed since {}, past the grace period: the identity is retired",
                rfc3339(*since)
            ),
        )),
        WorkloadState::Unknown { reason, message } => {
            let mut c = Condition::new(WORKLOAD_FOUND, false, reason, message.clone());
            c.status = "Unknown".into();
            out.push(c);
        }
    }
    match &lifecycle.review {
        ReviewState::NotSet => {}
        ReviewState::Current { lapses_at } => out.push(Condition::new(
            REVIEW_DUE,
            false,
            "ReviewCurrent",
            format!("reviewed; the review lapses at {}", rfc3339(*lapses_at)),
        )),
        ReviewState::Due { lapses_at } => out.push(Condition::new(
            REVIEW_DUE,
            true,
            "ReviewDue",
            format!(
                "the review lapses at {}: re-attest with `kubectl nhi review` before then",
                rfc3339(*lapses_at)
            ),
        )),
        ReviewState::Overdue { lapsed_at } => out.push(Condition::new(
            REVIEW_DUE,
            true,
            REVIEW_OVERDUE,
            format!(
                "the review lapsed at {}: re-attest with `kubectl nhi review --until <date>`",
                rfc3339(*lapsed_at)
            ),
        )),
    }
    out
}

/// While the watch of the workload's kind is starting (after a restart or failover), the previous
/// `WorkloadFound` condition stands as it was: its transition time is when a missing workload was
/// first seen missing, and the grace period counts from it.
pub fn carry_while_starting(
    mut conditions: Vec<Condition>,
    lifecycle: &Lifecycle,
    previous: &[Condition],
) -> Vec<Condition> {
    let starting = matches!(&lifecycle.workload, WorkloadState::Unknown { reason, .. }
        if reason == WATCH_STARTING);
    let before = previous.iter().find(|c| c.type_ == WORKLOAD_FOUND);
    if let (true, Some(before)) = (starting, before) {
        for c in conditions.iter_mut().filter(|c| c.type_ == WORKLOAD_FOUND) {
            *c = before.clone();
        }
    }
    conditions
}

/// An Event to publish about a lifecycle change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleEvent {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

/// The Events for conditions that changed between `previous` and `next`: a workload gone missing
/// or back, a review coming due or lapsing. Unchanged conditions raise nothing.
pub fn transition_events(previous: &[Condition], next: &[Condition]) -> Vec<LifecycleEvent> {
    let mut out = vec![];
    for c in next {
        if c.type_ != WORKLOAD_FOUND && c.type_ != REVIEW_DUE {
            continue;
        }
        // A condition that was Unknown (a watch starting or failing) is no earlier state.
        let before = previous
            .iter()
            .find(|p| p.type_ == c.type_ && p.status != "Unknown");
        if before.is_some_and(|p| p.status == c.status && p.reason == c.reason) {
            continue;
        }
        let event = match (c.type_.as_str(), c.status.as_str()) {
            (WORKLOAD_FOUND, "False") => Some(true),
            // Back after having been missing: worth saying; first seen present: not.
            (WORKLOAD_FOUND, "True") => before.map(|_| false),
            (REVIEW_DUE, "True") => Some(true),
            _ => None,
        };
        if let Some(warning) = event {
            out.push(LifecycleEvent {
                warning,
                reason: match (c.type_.as_str(), warning) {
                    (WORKLOAD_FOUND, false) => WORKLOAD_FOUND.to_string(),
                    _ => c.reason.to_string(),
                },
                message: c.message.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const WARN: Duration = Duration::days(14);

    fn overdue() -> ReviewState {
        ReviewState::Overdue {
            lapsed_at: datetime!(2026-11-20 00:00 UTC),
        }
    }

    #[test]
    fn a_lapsed_workload_retires_whatever_the_review_says() {
        let lapsed = WorkloadState::Lapsed {
            since: datetime!(2026-11-23 10:00 UTC),
        };
        for review in [ReviewState::NotSet, overdue()] {
            let v = decide(review, lapsed.clone(), ReviewLapseAction::Suspend, WARN);
            assert_eq!(v.action, LifecycleAction::Retire(RetireCause::WorkloadGone));
        }
    }

    #[test]
    fn an_overdue_review_suspends_or_retires_as_the_spec_says() {
        let suspend = decide(
            overdue(),
            WorkloadState::Present,
            ReviewLapseAction::Suspend,
            WARN,
        );
        assert_eq!(suspend.action, LifecycleAction::Suspend);
        assert_eq!(suspend.next_check, None);
        let delete = decide(
            overdue(),
            WorkloadState::NotSet,
            ReviewLapseAction::Delete,
            WARN,
        );
        assert_eq!(
            delete.action,
            LifecycleAction::Retire(RetireCause::ReviewOverdue)
        );
    }

    #[test]
    fn a_missing_workload_and_a_due_review_keep_issuing_and_say_when_to_look_again() {
        let deadline = datetime!(2026-11-23 10:05 UTC);
        let lapses = datetime!(2026-11-25 00:00 UTC);
        let v = decide(
            ReviewState::Due { lapses_at: lapses },
            WorkloadState::Missing {
                since: datetime!(2026-11-23 10:00 UTC),
                deadline,
            },
            ReviewLapseAction::Delete,
            WARN,
        );
        assert_eq!(v.action, LifecycleAction::Keep);
        assert_eq!(v.next_check, Some(deadline));
        let conditions = lifecycle_conditions(
            &v,
            Some(&WorkloadRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "web".into(),
                grace_period: None,
            }),
        );
        assert_eq!(conditions.len(), 2);
        assert_eq!(
            (conditions[0].type_.as_str(), conditions[0].status.as_str()),
            (WORKLOAD_FOUND, "False")
        );
        assert_eq!(conditions[0].reason, WORKLOAD_MISSING);
        assert!(conditions[0].message.contains("Deployment web"));
        assert!(conditions[0].message.contains("2026-11-23T10:05:00Z"));
        assert!(conditions[1].is_true() && conditions[1].reason == "ReviewDue");
    }

    #[test]
    fn an_unknown_workload_is_reported_but_decides_nothing() {
        let v = decide(
            ReviewState::NotSet,
            WorkloadState::Unknown {
                reason: "WorkloadKindUnknown".into(),
                message: "no kind Deploymnet in apps/v1".into(),
            },
            ReviewLapseAction::Delete,
            WARN,
        );
        assert_eq!(v.action, LifecycleAction::Keep);
        assert_eq!(v.next_check, None);
        let c = lifecycle_conditions(&v, None);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].status, "Unknown");
        assert_eq!(c[0].reason, "WorkloadKindUnknown");
    }

    #[test]
    fn events_are_raised_on_transitions_only() {
        let missing = Condition::new(WORKLOAD_FOUND, false, WORKLOAD_MISSING, "gone");
        let present = Condition::new(WORKLOAD_FOUND, true, "WorkloadPresent", "here");
        let due = Condition::new(REVIEW_DUE, true, "ReviewDue", "soon");
        let overdue = Condition::new(REVIEW_DUE, true, REVIEW_OVERDUE, "late");
        let current = Condition::new(REVIEW_DUE, false, "ReviewCurrent", "fine");
        assert!(transition_events(&[], &[present.clone(), current.clone()]).is_empty());
        let e = transition_events(
            std::slice::from_ref(&present),
            std::slice::from_ref(&missing),
        );
        assert_eq!(e.len(), 1);
        assert!(e[0].warning && e[0].reason == WORKLOAD_MISSING);
        assert!(
            transition_events(
                std::slice::from_ref(&missing),
                std::slice::from_ref(&missing)
            )
            .is_empty()
        );
        let back = transition_events(&[missing], &[present]);
        assert_eq!(
            (back[0].warning, back[0].reason.as_str()),
            (false, "WorkloadFound")
        );
        let e = transition_events(&[current], std::slice::from_ref(&due));
        assert_eq!(e[0].reason, "ReviewDue");
        let e = transition_events(&[due], &[overdue]);
        assert_eq!(e[0].reason, REVIEW_OVERDUE);
    }

    #[test]
    fn a_starting_watch_keeps_the_previous_workload_condition_and_its_clock() {
        let starting = decide(
            ReviewState::NotSet,
            WorkloadState::Unknown {
                reason: WATCH_STARTING.into(),
                message: "starting".into(),
            },
            ReviewLapseAction::Suspend,
            WARN,
        );
        let mut missing = Condition::new(WORKLOAD_FOUND, false, WORKLOAD_MISSING, "gone");
        missing.last_transition_time = "2026-11-23T10:00:00Z".into();
        let kept = carry_while_starting(
            lifecycle_conditions(&starting, None),
            &starting,
            std::slice::from_ref(&missing),
        );
        assert_eq!(kept, vec![missing.clone()]);
        // Nothing before: the Unknown condition stands. A failing watch is no start.
        assert_eq!(
            carry_while_starting(lifecycle_conditions(&starting, None), &starting, &[])[0].status,
            "Unknown"
        );
        let failing = decide(
            ReviewState::NotSet,
            WorkloadState::Unknown {
                reason: "WorkloadWatchFailing".into(),
                message: "forbidden".into(),
            },
            ReviewLapseAction::Suspend,
            WARN,
        );
        let shown =
            carry_while_starting(lifecycle_conditions(&failing, None), &failing, &[missing]);
        assert_eq!(shown[0].reason, "WorkloadWatchFailing");
    }

    #[test]
    fn no_fields_no_conditions() {
        let v = decide(
            ReviewState::NotSet,
            WorkloadState::NotSet,
            ReviewLapseAction::Suspend,
            WARN,
        );
        assert!(lifecycle_conditions(&v, None).is_empty());
        assert_eq!(v.action, LifecycleAction::Keep);
    }
}
