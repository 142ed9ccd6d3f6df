//! The identity extension: an identity's grants and attributes as one DER-encoded, non-critical
//! X.509 extension (see `docs/identity-extension.md` for the ASN.1 module).

use std::collections::{BTreeMap, BTreeSet};

use der::{Decode, Encode, Sequence};

use super::grant::{GRANT_MAX_LENGTH, GRANTS_MAX_ITEMS};
use super::grant::{valid_attribute_key, valid_grant};

/// The project's UUID, `952d7419-5d35-43fc-ad64-65c9255af5e5`. Its X.667 arc is
/// `2.25.198290979499651118797781490795856721381`.
pub const PROJECT_UUID: &str = "952d7419-5d35-43fc-ad64-65c9255af5e5";

/// The extension's OID: the project UUID's registration-free arc, plus `.1`.
///
/// The arc is the UUID's Microsoft form (`1.2.840.113556.1.8000.2554` followed by the UUID in
/// 16-bit groups and a final 32-bit group), not its X.667 form `2.25.<uuid>`: the certificate
/// builder (rcgen, newest release) takes OID arcs as `u64` and const-oid deliberately stops at
/// `u32`, so no well-kept Rust crate can write a 128-bit arc today.
pub const EXTENSION_OID: &[u64] = &[
    1, 2, 840, 113556, 1, 8000, 2554, 38189, 29721, 23861, 17404, 44388, 26057, 626718181, 1,
];

/// The dotted form of [`EXTENSION_OID`].
pub fn extension_oid_string() -> String {
    EXTENSION_OID
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// The encoding version this module writes and reads.
pub const VERSION: u8 = 1;
/// The most attributes an extension carries.
pub const MAX_ATTRIBUTES: usize = 16;
/// The longest attribute key and value.
pub const MAX_ATTRIBUTE_KEY: usize = 63;
pub const MAX_ATTRIBUTE_VALUE: usize = 128;
/// The most grants one certificate carries (the union of several Entitlements' grants).
pub const MAX_GRANTS: usize = 16 * GRANTS_MAX_ITEMS;

/// What the extension says about an identity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityClaims {
    /// Entitlement names (sorted, unique).
    pub grants: BTreeSet<String>,
    /// Key/value context from the identity's `spec.attributes`.
    pub attributes: BTreeMap<String, String>,
}

impl IdentityClaims {
    /// Whether there is nothing to carry (the certificate then has no extension).
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty() && self.attributes.is_empty()
    }
}

/// Why an extension could not be decoded. Every malformed input ends here, never in a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    #[error("the identity extension is not valid DER: {0}")]
    Der(String),
    #[error("the identity extension has version {0}; this reader knows version {VERSION}")]
    UnknownVersion(u8),
    #[error("the identity extension carries an invalid grant name {0:?}")]
    BadGrant(String),
    #[error("the identity extension carries an invalid attribute key {0:?}")]
    BadAttributeKey(String),
    #[error(
        "the identity extension's attribute {0:?} has a value longer than {MAX_ATTRIBUTE_VALUE}"
    )]
    AttributeTooLong(String),
    #[error("the identity extension's {0} are not sorted and unique")]
    NotCanonical(&'static str),
    #[error("the identity extension carries too many {0}")]
    TooMany(&'static str),
    #[error("the certificate carries the identity extension more than once")]
    Duplicate,
    #[error("the identity extension is marked critical; it never is")]
    Critical,
}

#[derive(Sequence)]
struct IdentityExtension {
    version: u8,
    grants: Vec<String>,
    attributes: Vec<Attribute>,
}

#[derive(Sequence)]
struct Attribute {
    key: String,
    value: String,
}

/// DER-encodes the claims (the extension's `extnValue` content); claims the decoder would refuse
/// are an error.
pub fn encode(claims: &IdentityClaims) -> Result<Vec<u8>, ExtensionError> {
    let ext = IdentityExtension {
        version: VERSION,
        grants: claims.grants.iter().cloned().collect(),
        attributes: claims
            .attributes
            .iter()
            .map(|(key, value)| Attribute {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
    };
    let der = ext
        .to_der()
        .map_err(|e| ExtensionError::Der(e.to_string()))?;
    // Never write what a verifier would refuse (too many grants, a bad attribute key...).
    decode(&der)?;
    Ok(der)
}

/// Decodes and validates an extension's content: DER only (no BER), known version, valid and
/// canonical (sorted, unique) grants and attributes within their limits.
pub fn decode(der_bytes: &[u8]) -> Result<IdentityClaims, ExtensionError> {
    let ext =
        IdentityExtension::from_der(der_bytes).map_err(|e| ExtensionError::Der(e.to_string()))?;
    if ext.version != VERSION {
        return Err(ExtensionError::UnknownVersion(ext.version));
    }
    if ext.grants.len() > MAX_GRANTS {
        return Err(ExtensionError::TooMany("grants"));
    }
    if ext.attributes.len() > MAX_ATTRIBUTES {
        return Err(ExtensionError::TooMany("attributes"));
    }
    for grant in &ext.grants {
        if grant.len() > GRANT_MAX_LENGTH || !valid_grant(grant) {
            return Err(ExtensionError::BadGrant(grant.clone()));
        }
    }
    if !strictly_increasing(ext.grants.iter()) {
        return Err(ExtensionError::NotCanonical("grants"));
    }
    for a in &ext.attributes {
        if a.key.len() > MAX_ATTRIBUTE_KEY || !valid_attribute_key(&a.key) {
            return Err(ExtensionError::BadAttributeKey(a.key.clone()));
        }
        if a.value.chars().count() > MAX_ATTRIBUTE_VALUE {
            return Err(ExtensionError::AttributeTooLong(a.key.clone()));
        }
    }
    if !strictly_increasing(ext.attributes.iter().map(|a| &a.key)) {
        return Err(ExtensionError::NotCanonical("attribute keys"));
    }
    Ok(IdentityClaims {
        grants: ext.grants.into_iter().collect(),
        attributes: ext
            .attributes
            .into_iter()
            .map(|a| (a.key, a.value))
            .collect(),
    })
}

fn strictly_increasing<'a>(mut items: impl Iterator<Item = &'a String>) -> bool {
    let Some(mut prev) = items.next() else {
        return true;
    };
    for item in items {
        if item <= prev {
            return false;
        }
        prev = item;
    }
    true
}

/// The claims in a parsed certificate: empty when it has no identity extension, an error when the
/// extension is malformed, critical or repeated.
pub fn claims_of(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<IdentityClaims, ExtensionError> {
    let oid = x509_parser::der_parser::oid::Oid::from(EXTENSION_OID)
        .map_err(|_| ExtensionError::Der("the extension OID cannot be represented".into()))?;
    let mut found = None;
    for ext in cert.extensions() {
        if ext.oid == oid {
            if found.is_some() {
                return Err(ExtensionError::Duplicate);
            }
            if ext.critical {
                return Err(ExtensionError::Critical);
            }
            found = Some(ext.value);
        }
    }
    match found {
        Some(value) => decode(value),
        None => Ok(IdentityClaims::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn sample() -> IdentityClaims {
        IdentityClaims {
            grants: ["payments.process", "patients.read"]
                .map(String::from)
                .into(),
            attributes: [("project", "checkout"), ("security-level", "high ü")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        }
    }

    #[test]
    fn round_trips() {
        let claims = sample();
        let der = encode(&claims).unwrap();
        assert_eq!(decode(&der).unwrap(), claims);
        let empty = IdentityClaims::default();
        assert_eq!(decode(&encode(&empty).unwrap()).unwrap(), empty);
    }

    #[test]
    fn encoding_is_the_documented_der() {
        let claims = IdentityClaims {
            grants: ["payments.process".to_string()].into(),
            attributes: [("project".to_string(), "checkout".to_string())].into(),
        };
        // The example in docs/identity-extension.md.
        assert_eq!(
            hex::encode(encode(&claims).unwrap()),
            concat!(
                "302e",
                "020101",
                "3012",
                "0c107061796d656e74732e70726f63657373",
                "3015",
                "3013",
                "0c0770726f6a656374",
                "0c08636865636b6f7574"
            )
        );
        let der = encode(&claims).unwrap();
        assert_eq!(der[0], 0x30, "a SEQUENCE");
        assert_eq!(&der[2..5], &[0x02, 0x01, 0x01], "version 1");
    }

    #[test]
    fn refuses_what_the_operator_never_writes() {
        let mut ext = IdentityExtension {
            version: 2,
            grants: vec![],
            attributes: vec![],
        };
        let enc = |e: &IdentityExtension| e.to_der().unwrap();
        assert_eq!(decode(&enc(&ext)), Err(ExtensionError::UnknownVersion(2)));
        ext.version = 1;
        ext.grants = vec!["Payments".into()];
        assert!(matches!(
            decode(&enc(&ext)),
            Err(ExtensionError::BadGrant(_))
        ));
        ext.grants = vec!["b.read".into(), "a.read".into()];
        assert_eq!(
            decode(&enc(&ext)),
            Err(ExtensionError::NotCanonical("grants"))
        );
        ext.grants = vec!["a.read".into(), "a.read".into()];
        assert_eq!(
            decode(&enc(&ext)),
            Err(ExtensionError::NotCanonical("grants"))
        );
        ext.grants = vec![];
        ext.attributes = vec![Attribute {
            key: "Bad Key".into(),
            value: "x".into(),
        }];
        assert!(matches!(
            decode(&enc(&ext)),
            Err(ExtensionError::BadAttributeKey(_))
        ));
        ext.attributes = vec![Attribute {
            key: "k".into(),
            value: "x".repeat(129),
        }];
        assert!(matches!(
            decode(&enc(&ext)),
            Err(ExtensionError::AttributeTooLong(_))
        ));
        let too_many = IdentityClaims {
            grants: (0..=MAX_GRANTS).map(|i| format!("g{i}.read")).collect(),
            attributes: Default::default(),
        };
        assert_eq!(encode(&too_many), Err(ExtensionError::TooMany("grants")));
        let mut der = encode(&sample()).unwrap();
        der.push(0);
        assert!(
            matches!(decode(&der), Err(ExtensionError::Der(_))),
            "trailing data"
        );
    }

    /// A bounded fuzz run of the decoder: random bytes, and every kind of damage to valid
    /// encodings (bit flips, truncation, splices, length changes). No input may panic.
    #[test]
    fn decoder_never_panics_on_malformed_input() {
        let mut rng = StdRng::seed_from_u64(0x6e6869);
        let valid = encode(&sample()).unwrap();
        let mut accepted = 0usize;
        for case in 0..200_000u32 {
            let input: Vec<u8> = match case % 5 {
                0 => {
                    let len = rng.random_range(0..96);
                    (0..len).map(|_| rng.random()).collect()
                }
                1 => {
                    let mut v = valid.clone();
                    for _ in 0..rng.random_range(1..4) {
                        let i = rng.random_range(0..v.len());
                        v[i] ^= 1 << rng.random_range(0..8);
                    }
                    v
                }
                2 => valid[..rng.random_range(0..valid.len())].to_vec(),
                3 => {
                    let mut v = valid.clone();
                    let i = rng.random_range(0..v.len());
                    v[i] = rng.random();
                    v
                }
                _ => {
                    let mut v = valid.clone();
                    let at = rng.random_range(0..v.len());
                    let extra: Vec<u8> =
                        (0..rng.random_range(1..8)).map(|_| rng.random()).collect();
                    v.splice(at..at, extra);
                    v
                }
            };
            if let Ok(claims) = decode(&input) {
                accepted += 1;
                // Whatever is accepted is canonical: it re-encodes to the same bytes.
                assert_eq!(encode(&claims).unwrap(), input);
            }
        }
        assert!(accepted < 200_000);
    }
}
