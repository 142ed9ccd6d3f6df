//! Review dates, durations and relative times, as people read and type them.

use nhi_core::lifecycle::review::{ReviewState, parse_review_date, review_state};
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime, UtcOffset};

/// `YYYY-MM-DD`, the form of `spec.reviewBy`.
const DATE: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// How many days before `reviewBy` an identity counts as due soon (the operator's default
/// warning window for its `ReviewDue` condition).
pub const DUE_SOON_DAYS: i64 = 14;

/// Parses a `YYYY-MM-DD` date.
pub fn parse_date(text: &str) -> Option<Date> {
    parse_review_date(text.trim())
}

/// Formats a date as `YYYY-MM-DD`.
pub fn format_date(date: Date) -> String {
    date.format(DATE).unwrap_or_default()
}

/// Today's date in UTC, the calendar review dates are kept in.
pub fn today_utc(now: OffsetDateTime) -> Date {
    now.to_offset(UtcOffset::UTC).date()
}

/// Where an identity stands against its review date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewStanding {
    /// The review date has passed: the identity has lapsed.
    Overdue,
    /// The review date is within [`DUE_SOON_DAYS`]: this many days are left (0 is today).
    DueSoon(i64),
    /// The review date is further away.
    Current,
}

/// Where an identity reviewed until `review_by` stands at `now`: the operator's own judgement
/// (`ReviewDue` with its default warning window), so the plugin and the condition agree.
pub fn review_standing(review_by: Date, now: OffsetDateTime) -> ReviewStanding {
    match review_state(Some(review_by), Duration::days(DUE_SOON_DAYS), now) {
        ReviewState::Overdue { .. } => ReviewStanding::Overdue,
        ReviewState::Due { .. } => {
            ReviewStanding::DueSoon((review_by - today_utc(now)).whole_days())
        }
        ReviewState::Current { .. } | ReviewState::NotSet => ReviewStanding::Current,
    }
}

/// Checks a date given to `review --until`: a `YYYY-MM-DD` date, today or later (UTC).
pub fn validate_review_date(text: &str, now: OffsetDateTime) -> Result<Date, String> {
    let date = parse_date(text)
        .ok_or_else(|| format!("--until must be a date as YYYY-MM-DD, got {text:?}"))?;
    let today = today_utc(now);
    if date < today {
        return Err(format!(
            "--until {} is in the past (today is {} UTC); give today or a later date",
            format_date(date),
            format_date(today)
        ));
    }
    Ok(date)
}

/// A duration the way kubectl prints ages: `45s`, `4m30s`, `42m`, `5h12m`, `20h`, `3d4h`, `90d`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.whole_seconds().max(0);
    let (mins, hours, days) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 120 {
        format!("{secs}s")
    } else if mins < 10 {
        match secs % 60 {
            0 => format!("{mins}m"),
            s => format!("{mins}m{s}s"),
        }
    } else if mins < 180 {
        format!("{mins}m")
    } else if hours < 8 {
        match mins % 60 {
            0 => format!("{hours}h"),
            m => format!("{hours}h{m}m"),
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if days < 8 {
        match hours % 24 {
            0 => format!("{days}d"),
            h => format!("{days}d{h}h"),
        }
    } else {
        format!("{days}d")
    }
}

/// `t` relative to `now`: `in 42m` or `3h ago`.
pub fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    if t >= now {
        format!("in {}", human_duration(t - now))
    } else {
        format!("{} ago", human_duration(now - t))
    }
}

/// A certificate's expiry relative to `now`: `in 42m`, or `expired`.
pub fn expires(not_after: OffsetDateTime, now: OffsetDateTime) -> String {
    if not_after <= now {
        "expired".to_string()
    } else {
        relative(not_after, now)
    }
}

/// Parses a timeout such as `30s`, `2m`, `1m30s`, `1h` or a bare number of seconds.
pub fn parse_timeout(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(std::time::Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return None,
        };
        let n: u64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        number.clear();
    }
    (number.is_empty() && !text.is_empty()).then(|| std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn review_dates_lapse_at_midnight_utc_the_day_after() {
        assert_eq!(
            nhi_core::lifecycle::review::lapse_moment(date!(2026 - 03 - 31)),
            datetime!(2026-04-01 00:00 UTC)
        );
        let by = date!(2026 - 03 - 31);
        assert_eq!(
            review_standing(by, datetime!(2026-03-31 23:59:59 UTC)),
            ReviewStanding::DueSoon(0)
        );
        assert_eq!(
            review_standing(by, datetime!(2026-04-01 00:00 UTC)),
            ReviewStanding::Overdue
        );
        // A local time zone does not move the lapse.
        assert_eq!(
            review_standing(by, datetime!(2026-03-31 20:00 -06:00)),
            ReviewStanding::Overdue
        );
    }

    #[test]
    fn due_soon_within_fourteen_days() {
        let now = datetime!(2026-03-01 12:00 UTC);
        // Due from 14 days before the lapse (00:00 UTC the day after the date), as the
        // operator's ReviewDue condition: on the 14th calendar day before, not yet.
        assert_eq!(
            review_standing(date!(2026 - 03 - 15), now),
            ReviewStanding::Current
        );
        assert_eq!(
            review_standing(date!(2026 - 03 - 15), datetime!(2026-03-02 00:00 UTC)),
            ReviewStanding::DueSoon(13)
        );
        assert_eq!(
            review_standing(date!(2026 - 03 - 14), now),
            ReviewStanding::DueSoon(13)
        );
        assert_eq!(
            review_standing(date!(2026 - 03 - 16), now),
            ReviewStanding::Current
        );
        assert_eq!(
            review_standing(date!(2026 - 03 - 04), now),
            ReviewStanding::DueSoon(3)
        );
        assert_eq!(
            review_standing(date!(2026 - 02 - 28), now),
            ReviewStanding::Overdue
        );
    }

    #[test]
    fn review_dates_must_be_well_formed_and_not_past() {
        let now = datetime!(2026-03-01 23:30 UTC);
        assert_eq!(
            validate_review_date("2026-03-01", now),
            Ok(date!(2026 - 03 - 01))
        );
        assert_eq!(
            validate_review_date("2027-01-31", now),
            Ok(date!(2027 - 01 - 31))
        );
        let past = validate_review_date("2026-02-28", now).unwrap_err();
        assert!(
            past.contains("is in the past") && past.contains("2026-03-01"),
            "{past}"
        );
        for bad in ["tomorrow", "2026-02-30", "2026/03/05", "26-03-05", ""] {
            let e = validate_review_date(bad, now).unwrap_err();
            assert!(e.contains("YYYY-MM-DD"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_read_like_kubectl() {
        let cases = [
            (Duration::seconds(-5), "0s"),
            (Duration::seconds(45), "45s"),
            (Duration::seconds(119), "119s"),
            (Duration::seconds(270), "4m30s"),
            (Duration::minutes(5), "5m"),
            (Duration::minutes(42), "42m"),
            (Duration::minutes(179), "179m"),
            (Duration::minutes(312), "5h12m"),
            (Duration::hours(20), "20h"),
            (Duration::hours(76), "3d4h"),
            (Duration::days(90), "90d"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want, "{d}");
        }
    }

    #[test]
    fn relative_times_and_expiry() {
        let now = datetime!(2026-03-01 12:00 UTC);
        assert_eq!(relative(now + Duration::minutes(42), now), "in 42m");
        assert_eq!(relative(now - Duration::hours(3), now), "3h ago");
        assert_eq!(expires(now + Duration::minutes(42), now), "in 42m");
        assert_eq!(expires(now, now), "expired");
        assert_eq!(expires(now - Duration::days(1), now), "expired");
    }

    #[test]
    fn timeouts() {
        let s = std::time::Duration::from_secs;
        assert_eq!(parse_timeout("30"), Some(s(30)));
        assert_eq!(parse_timeout("30s"), Some(s(30)));
        assert_eq!(parse_timeout("2m"), Some(s(120)));
        assert_eq!(parse_timeout("1m30s"), Some(s(90)));
        assert_eq!(parse_timeout("1h"), Some(s(3600)));
        for bad in ["", "m", "30x", "1.5s", "30s5"] {
            assert_eq!(parse_timeout(bad), None, "{bad}");
        }
    }
}
