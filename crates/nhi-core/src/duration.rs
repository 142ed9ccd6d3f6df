//! Go-style durations (`1h`, `90m`, `1h30m`), as Kubernetes and the operator's flags write them.

use time::Duration;

/// The most digits a number of a duration may have (10^12 hours is far beyond any bound).
const MAX_DIGITS: usize = 12;

/// Parses a Go duration string (`1h`, `90m`, `1h30m`), refusing negative values.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    // kube-core's parser panics when a number overflows; refuse long numbers before it sees them.
    let longest_number = s
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest_number > MAX_DIGITS {
        return Err(format!("invalid duration {s:?}: too long"));
    }
    let d: kube_core::Duration = s
        .parse()
        .map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d.is_negative() {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    let std: std::time::Duration = d.into();
    Duration::try_from(std).map_err(|_| format!("invalid duration {s:?}: too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("1h30m").unwrap(), Duration::minutes(90));
        assert_eq!(parse_go_duration("45s").unwrap(), Duration::seconds(45));
        assert!(parse_go_duration("-5m").is_err());
        assert!(parse_go_duration("5 minutes").is_err());
        // Numbers that would overflow are refused, not a panic.
        assert!(parse_go_duration("99999999999999999999h").is_err());
        assert!(parse_go_duration("999999999999h").is_ok());
    }
}
