//! Short texts the operator keeps one of per object (uids, resourceVersions) in the smallest
//! form that gives them back exactly: a UUID as its 128 bits, a decimal number as a u64, and
//! anything else as it came.

use std::fmt;

use super::uid_key::uid_key;

/// A text kept compactly; [`fmt::Display`] gives back the text it was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompactText {
    /// A lowercase hyphenated UUID (what the apiserver assigns as uids).
    Uuid(u128),
    /// A canonical decimal number (what the apiserver gives as resourceVersions).
    Decimal(u64),
    Other(Box<str>),
}

impl CompactText {
    pub fn new(text: &str) -> Self {
        // A UUID is kept as the bits `uid_key` reads from it, when they give the text back.
        let bits = CompactText::Uuid(uid_key(text));
        if bits.to_string() == text {
            return bits;
        }
        match decimal(text) {
            Some(n) => CompactText::Decimal(n),
            None => CompactText::Other(text.into()),
        }
    }
}

/// `text` as a number when it is one written canonically (no sign, no leading zero): the form
/// that prints back to it.
pub fn decimal(text: &str) -> Option<u64> {
    let n: u64 = text.parse().ok()?;
    (n.to_string() == text).then_some(n)
}

impl fmt::Display for CompactText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CompactText::Uuid(u) => {
                let h = format!("{u:032x}");
                write!(
                    f,
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                )
            }
            CompactText::Decimal(n) => write!(f, "{n}"),
            CompactText::Other(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CompactText;

    #[test]
    fn every_text_comes_back_exactly() {
        for text in [
            "8e46a0dd-95cf-49e4-8190-10f6ca685590",
            "00000000-0000-0000-0000-000000000000",
            "8E46A0DD-95CF-49E4-8190-10F6CA685590",
            "8e46a0dd95cf49e4819010f6ca685590",
            "8e46a0dd-95cf-49e4-8190-10f6ca68559g",
            "313",
            "0",
            "0313",
            "-1",
            "18446744073709551616",
            "uid-a",
            "",
        ] {
            let c = CompactText::new(text);
            assert_eq!(c.to_string(), text);
            assert_ne!(c, CompactText::new("something else"));
        }
    }

    #[test]
    fn uids_and_versions_take_no_allocation() {
        assert!(matches!(
            CompactText::new("8e46a0dd-95cf-49e4-8190-10f6ca685590"),
            CompactText::Uuid(_)
        ));
        assert!(matches!(CompactText::new("313"), CompactText::Decimal(313)));
        assert!(matches!(CompactText::new("0313"), CompactText::Other(_)));
        assert_ne!(CompactText::new("313"), CompactText::new("0313"));
    }
}
