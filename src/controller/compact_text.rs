//! Short texts the operator keeps one of per object (uids, resourceVersions) in the smallest
//! form that gives them back exactly: a UUID as its 128 bits, a decimal number as a u64, and
//! anything else as it came.

use std::fmt;

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
        if let Some(u) = uuid(text) {
            return CompactText::Uuid(u);
        }
        match text.parse::<u64>() {
            Ok(n) if n.to_string() == text => CompactText::Decimal(n),
            _ => CompactText::Other(text.into()),
        }
    }

    /// Whether this is `text`.
    pub fn is(&self, text: &str) -> bool {
        match self {
            CompactText::Other(s) => &**s == text,
            _ => *self == CompactText::new(text),
        }
    }
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

/// The bits of `text` when it is a UUID written the way it is given back: lowercase, hyphens
/// at 8, 13, 18 and 23.
fn uuid(text: &str) -> Option<u128> {
    let b = text.as_bytes();
    if b.len() != 36 || [8, 13, 18, 23].iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut bits = 0u128;
    for (i, &c) in b.iter().enumerate() {
        if [8, 13, 18, 23].contains(&i) {
            continue;
        }
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        bits = (bits << 4) | u128::from(d);
    }
    Some(bits)
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
            assert!(c.is(text));
            assert!(!c.is("something else"));
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
        assert!(!CompactText::new("313").is("0313"));
    }
}
