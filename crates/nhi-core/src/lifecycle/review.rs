//! The review date: when it is due, when it lapses (pure).

use time::{Date, Duration, OffsetDateTime, Time, UtcOffset};

/// Where an identity stands with its review.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewState {
    /// No `reviewBy` is set.
    NotSet,
    /// Reviewed; the warning window has not begun.
    Current { lapses_at: OffsetDateTime },
    /// Within the warning window before the lapse.
    Due { lapses_at: OffsetDateTime },
    /// The review date has passed.
    Overdue { lapsed_at: OffsetDateTime },
}

impl ReviewState {
    /// When the state next changes by time alone.
    pub fn next_change(&self, warning: Duration) -> Option<OffsetDateTime> {
        match self {
            ReviewState::Current { lapses_at } => Some(*lapses_at - warning),
            ReviewState::Due { lapses_at } => Some(*lapses_at),
            _ => None,
        }
    }
}

/// Parses a `reviewBy` date (YYYY-MM-DD).
pub fn parse_review_date(s: &str) -> Option<Date> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, &format).ok()
}

/// The moment a review date lapses: the end of that day, in UTC (a review "by" a date holds
/// through that date).
pub fn lapse_moment(review_by: Date) -> OffsetDateTime {
    let next = review_by.next_day().unwrap_or(review_by);
    next.with_time(Time::MIDNIGHT).assume_offset(UtcOffset::UTC)
}

/// The review state at `now`, with a warning window of `warning` before the lapse.
pub fn review_state(
    review_by: Option<Date>,
    warning: Duration,
    now: OffsetDateTime,
) -> ReviewState {
    let Some(date) = review_by else {
        return ReviewState::NotSet;
    };
    let lapses_at = lapse_moment(date);
    if now >= lapses_at {
        ReviewState::Overdue {
            lapsed_at: lapses_at,
        }
    } else if now >= lapses_at - warning {
        ReviewState::Due { lapses_at }
    } else {
        ReviewState::Current { lapses_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    const WARN: Duration = Duration::days(14);

    #[test]
    fn a_review_date_holds_through_its_day() {
        let d = date!(2026 - 11 - 22);
        assert_eq!(lapse_moment(d), datetime!(2026-11-23 00:00 UTC));
        assert!(matches!(
            review_state(Some(d), WARN, datetime!(2026-11-22 23:59:59 UTC)),
            ReviewState::Due { .. }
        ));
        assert_eq!(
            review_state(Some(d), WARN, datetime!(2026-11-23 00:00 UTC)),
            ReviewState::Overdue {
                lapsed_at: datetime!(2026-11-23 00:00 UTC)
            }
        );
    }

    #[test]
    fn the_warning_window_starts_before_the_lapse() {
        let d = date!(2026 - 12 - 31);
        let lapses = datetime!(2027-01-01 00:00 UTC);
        let before = review_state(Some(d), WARN, lapses - WARN - Duration::seconds(1));
        assert_eq!(before, ReviewState::Current { lapses_at: lapses });
        assert_eq!(before.next_change(WARN), Some(lapses - WARN));
        let due = review_state(Some(d), WARN, lapses - WARN);
        assert_eq!(due, ReviewState::Due { lapses_at: lapses });
        assert_eq!(due.next_change(WARN), Some(lapses));
        assert_eq!(
            review_state(None, WARN, lapses),
            ReviewState::NotSet,
            "no date, no review"
        );
    }

    #[test]
    fn parses_only_calendar_dates() {
        assert_eq!(parse_review_date("2026-02-28"), Some(date!(2026 - 02 - 28)));
        assert_eq!(parse_review_date("2026-02-30"), None);
        assert_eq!(parse_review_date("2026-2-3"), None);
        assert_eq!(parse_review_date("tomorrow"), None);
    }
}
