//! Grant names and attribute keys: the syntax the CRD schema enforces, checked again in code for
//! what arrives from a certificate.

/// The longest grant name.
pub const GRANT_MAX_LENGTH: usize = 128;
/// The most grants one Entitlement lists.
pub const GRANTS_MAX_ITEMS: usize = 64;

/// Whether `s` is a grant name: lowercase words (a-z, 0-9, '-', '_', each starting with a letter)
/// joined by single dots, as in the CRD schema's `GRANT_PATTERN`.
pub fn valid_grant(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|word| {
            let mut chars = word.chars();
            chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        })
}

/// Whether `s` is an attribute key: a lowercase word of a-z, 0-9, '-', '_', '.' that starts and
/// ends with a letter or digit (the MachineIdentity schema's rule).
pub fn valid_attribute_key(s: &str) -> bool {
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let inner = |c: char| edge(c) || matches!(c, '-' | '_' | '.');
    match (s.chars().next(), s.chars().last()) {
        (Some(first), Some(last)) => edge(first) && edge(last) && s.chars().all(inner),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grant_names() {
        for ok in ["payments.process", "patients.read", "admin", "a1.b_2.c-3"] {
            assert!(valid_grant(ok), "{ok}");
        }
        for bad in [
            "",
            "Payments.read",
            "payments..read",
            ".read",
            "read.",
            "1x.read",
            "a b",
            "pay/read",
            "é.read",
        ] {
            assert!(!valid_grant(bad), "{bad}");
        }
    }

    #[test]
    fn attribute_keys() {
        for ok in ["project", "security-level", "a.b_c", "x1"] {
            assert!(valid_attribute_key(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a b", "ü"] {
            assert!(!valid_attribute_key(bad), "{bad}");
        }
    }
}
