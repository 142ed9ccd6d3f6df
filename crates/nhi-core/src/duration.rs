//! Go-style durations (`1h`, `90m`, `1h30m`), as Kubernetes and the operator's flags write them.

use time::Duration;

/// Parses a Go duration string (`1h`, `90m`, `1h30m`), refusing negative values.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
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
    }
}
