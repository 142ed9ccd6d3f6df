//! The delegation extension: who authorized a task certificate (its ancestors: the identity that
//! delegated first, then each task certificate down to the direct parent) and for what task, as
//! one DER-encoded, non-critical X.509 extension (see `docs/delegation-extension.md`).

use std::collections::BTreeMap;

use der::asn1::{OctetString, Uint};
use der::{Decode, Encode, Sequence};

use crate::extension::{MAX_ATTRIBUTE_KEY, MAX_ATTRIBUTE_VALUE, MAX_ATTRIBUTES};
use crate::grant::valid_attribute_key;
pub use crate::verify::spiffe::valid_task_id;
use crate::verify::spiffe::{MAX_TASK_ID, parse_spiffe_id};

/// The extension's OID: the identity extension's arc with `.2` (see
/// [`EXTENSION_OID`](crate::extension::EXTENSION_OID)).
pub const DELEGATION_OID: &[u64] = &[
    1, 2, 840, 113556, 1, 8000, 2554, 38189, 29721, 23861, 17404, 44388, 26057, 626718181, 2,
];

/// The encoding version this module writes and reads.
pub const VERSION: u8 = 1;
/// The most ancestors a chain has (the deepest delegation any parent may allow): as many as a
/// SPIFFE ID has `task` levels.
pub const MAX_CHAIN: usize = crate::verify::spiffe::MAX_TASK_LEVELS;
/// The longest purpose, in characters.
pub const MAX_PURPOSE: usize = 256;
/// The length of the task input's digest (SHA-256).
pub const DIGEST_LEN: usize = 32;
/// The longest serial number X.509 allows (RFC 5280: 20 octets).
pub const MAX_SERIAL: usize = 20;

/// One certificate of the chain that delegated: its serial (what revokes it and its descendants),
/// its SPIFFE ID and its attributes (a model version, say) at the time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ancestor {
    /// The serial, lowercase hex without leading zeros (as the CRL check compares them).
    pub serial_hex: String,
    pub spiffe_id: String,
    pub attributes: BTreeMap<String, String>,
}

/// What a task certificate's delegation extension says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delegation {
    /// The identity that delegated first, then each task certificate down to the direct parent.
    pub ancestors: Vec<Ancestor>,
    pub task_id: String,
    /// A short human description of the task.
    pub purpose: String,
    /// SHA-256 of the task's input, when the parent gave one.
    pub input_digest: Option<[u8; DIGEST_LEN]>,
}

impl Delegation {
    /// How many delegations lie between the identity and this certificate (1: a child of the
    /// identity).
    pub fn depth(&self) -> usize {
        self.ancestors.len()
    }
}

/// Why an extension could not be encoded or decoded. Every malformed input ends here, never in a
/// panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegationError {
    #[error("the delegation extension is not valid DER: {0}")]
    Der(String),
    #[error("the delegation extension has version {0}; this reader knows version {VERSION}")]
    UnknownVersion(u8),
    #[error("the delegation extension has {0} ancestors; it must have 1 to {MAX_CHAIN}")]
    ChainLength(usize),
    #[error(
        "the delegation extension has an ancestor serial that is empty or over {MAX_SERIAL} octets"
    )]
    BadSerial,
    #[error("the delegation extension has an ancestor that is not a SPIFFE ID: {0:?}")]
    BadSpiffeId(String),
    #[error("the delegation extension carries an invalid attribute {0:?} (key, length or order)")]
    BadAttribute(String),
    #[error("task ID {0:?}: 1 to {MAX_TASK_ID} letters, digits, '.', '-' or '_', not '.' or '..'")]
    BadTaskId(String),
    #[error("the purpose must be at most {MAX_PURPOSE} characters without control characters")]
    BadPurpose,
    #[error("the task input digest must be {DIGEST_LEN} octets (SHA-256)")]
    BadDigest,
    #[error("the certificate carries the delegation extension more than once")]
    Duplicate,
    #[error("the delegation extension is marked critical; it never is")]
    Critical,
}

#[derive(Sequence)]
struct DelegationExtension {
    version: u8,
    ancestors: Vec<AncestorDer>,
    task_id: String,
    purpose: String,
    #[asn1(optional = "true")]
    input_digest: Option<OctetString>,
}

#[derive(Sequence)]
struct AncestorDer {
    serial: Uint,
    spiffe_id: String,
    attributes: Vec<AttributeDer>,
}

#[derive(Sequence)]
struct AttributeDer {
    key: String,
    value: String,
}

/// Whether `purpose` can be carried: at most [`MAX_PURPOSE`] characters, none a control
/// character or a bidirectional formatting one (which would make `inspect` show other text than
/// the certificate holds).
pub fn valid_purpose(purpose: &str) -> bool {
    let bidi = |c: char| matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    purpose.chars().count() <= MAX_PURPOSE && !purpose.chars().any(|c| c.is_control() || bidi(c))
}

/// DER-encodes `delegation` (the extension's `extnValue` content); what the decoder would refuse
/// is an error.
pub fn encode(delegation: &Delegation) -> Result<Vec<u8>, DelegationError> {
    let der_err = |e: der::Error| DelegationError::Der(e.to_string());
    let ancestors = delegation
        .ancestors
        .iter()
        .map(|a| {
            let serial = hex::decode(&a.serial_hex).map_err(|_| DelegationError::BadSerial)?;
            Ok(AncestorDer {
                serial: Uint::new(&serial).map_err(der_err)?,
                spiffe_id: a.spiffe_id.clone(),
                attributes: a
                    .attributes
                    .iter()
                    .map(|(key, value)| AttributeDer {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>, DelegationError>>()?;
    let ext = DelegationExtension {
        version: VERSION,
        ancestors,
        task_id: delegation.task_id.clone(),
        purpose: delegation.purpose.clone(),
        input_digest: delegation
            .input_digest
            .map(|d| OctetString::new(d.to_vec()))
            .transpose()
            .map_err(der_err)?,
    };
    let der_bytes = ext.to_der().map_err(der_err)?;
    // Never write what a verifier would refuse.
    decode(&der_bytes)?;
    Ok(der_bytes)
}

/// Decodes and validates an extension's content: DER only, known version, 1 to [`MAX_CHAIN`]
/// ancestors each with a serial, a SPIFFE ID and canonical attributes, a valid task ID, purpose
/// and digest.
pub fn decode(der_bytes: &[u8]) -> Result<Delegation, DelegationError> {
    let ext = DelegationExtension::from_der(der_bytes)
        .map_err(|e| DelegationError::Der(e.to_string()))?;
    if ext.version != VERSION {
        return Err(DelegationError::UnknownVersion(ext.version));
    }
    if !(1..=MAX_CHAIN).contains(&ext.ancestors.len()) {
        return Err(DelegationError::ChainLength(ext.ancestors.len()));
    }
    let ancestors = ext
        .ancestors
        .into_iter()
        .map(ancestor)
        .collect::<Result<Vec<_>, _>>()?;
    if !valid_task_id(&ext.task_id) {
        return Err(DelegationError::BadTaskId(ext.task_id));
    }
    if !valid_purpose(&ext.purpose) {
        return Err(DelegationError::BadPurpose);
    }
    let input_digest = match ext.input_digest {
        None => None,
        Some(d) => Some(
            <[u8; DIGEST_LEN]>::try_from(d.as_bytes()).map_err(|_| DelegationError::BadDigest)?,
        ),
    };
    Ok(Delegation {
        ancestors,
        task_id: ext.task_id,
        purpose: ext.purpose,
        input_digest,
    })
}

fn ancestor(a: AncestorDer) -> Result<Ancestor, DelegationError> {
    let serial = a.serial.as_bytes();
    if serial.is_empty() || serial.len() > MAX_SERIAL || serial == [0] {
        return Err(DelegationError::BadSerial);
    }
    if parse_spiffe_id(&a.spiffe_id).is_err() {
        return Err(DelegationError::BadSpiffeId(a.spiffe_id));
    }
    if a.attributes.len() > MAX_ATTRIBUTES {
        return Err(DelegationError::BadAttribute("(too many)".into()));
    }
    let mut attributes = BTreeMap::new();
    let mut previous: Option<&str> = None;
    for attr in &a.attributes {
        let ordered = previous.is_none_or(|p| p < attr.key.as_str());
        if !ordered
            || attr.key.len() > MAX_ATTRIBUTE_KEY
            || !valid_attribute_key(&attr.key)
            || attr.value.chars().count() > MAX_ATTRIBUTE_VALUE
        {
            return Err(DelegationError::BadAttribute(attr.key.clone()));
        }
        previous = Some(&attr.key);
        attributes.insert(attr.key.clone(), attr.value.clone());
    }
    Ok(Ancestor {
        serial_hex: serial_hex(serial),
        spiffe_id: a.spiffe_id,
        attributes,
    })
}

/// A serial as lowercase hex without leading zero octets: how ancestors and CRL entries compare.
pub fn serial_hex(raw: &[u8]) -> String {
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    hex::encode(&raw[first..])
}

/// `hex_serial` (lowercase or not, perhaps with leading zero octets, as a DER serial's content
/// prints) in the form ancestors carry: lowercase, without leading zero octets.
pub fn canonical_serial_hex(hex_serial: &str) -> String {
    match hex::decode(hex_serial) {
        Ok(raw) => serial_hex(&raw),
        Err(_) => hex_serial.to_ascii_lowercase(),
    }
}

/// The DER content octets of serial `hex` (as a CRL entry holds them: a leading zero octet when
/// the high bit is set), or None when it is not hex.
pub fn serial_der(hex_serial: &str) -> Option<Vec<u8>> {
    let mut bytes = hex::decode(hex_serial).ok()?;
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    Some(bytes)
}

/// Checks that a certificate's SPIFFE ID and its delegation agree, as the operator writes them:
/// an identity's own certificate has no delegation; a task certificate's chain ends with the
/// identity, then one ancestor per task level above it, each with the ID of its level, and its
/// task ID is the last level's.
pub fn consistent(
    identity: &crate::verify::SpiffeIdentity,
    delegation: Option<&Delegation>,
) -> Result<(), String> {
    let Some(d) = delegation else {
        return match identity.is_task() {
            false => Ok(()),
            true => Err(format!(
                "{} names a task but carries no delegation",
                identity.spiffe_id
            )),
        };
    };
    if d.depth() != identity.tasks.len() || identity.tasks.last() != Some(&d.task_id) {
        return Err(format!(
            "{} does not match its delegation (task {}, {} ancestors)",
            identity.spiffe_id,
            d.task_id,
            d.depth()
        ));
    }
    let mut expected = format!(
        "spiffe://{}/ns/{}/mi/{}",
        identity.trust_domain, identity.namespace, identity.name
    );
    for (i, ancestor) in d.ancestors.iter().enumerate() {
        if ancestor.spiffe_id != expected {
            return Err(format!(
                "ancestor {i} of {} is {}, not {expected}",
                identity.spiffe_id, ancestor.spiffe_id
            ));
        }
        expected = format!("{expected}/task/{}", identity.tasks[i]);
    }
    Ok(())
}

/// The delegation in a parsed certificate: None when it has none (an identity's own certificate),
/// an error when the extension is malformed, critical or repeated.
pub fn delegation_of(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<Option<Delegation>, DelegationError> {
    let oid = x509_parser::der_parser::oid::Oid::from(DELEGATION_OID)
        .map_err(|_| DelegationError::Der("the extension OID cannot be represented".into()))?;
    let mut found = None;
    for ext in cert.extensions() {
        if ext.oid == oid {
            if found.is_some() {
                return Err(DelegationError::Duplicate);
            }
            if ext.critical {
                return Err(DelegationError::Critical);
            }
            found = Some(ext.value);
        }
    }
    found.map(decode).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    pub(crate) fn sample() -> Delegation {
        Delegation {
            ancestors: vec![
                Ancestor {
                    serial_hex: "8f3a0c11d2e4f5a6b7c8d9e0f1a2b3c4".into(),
                    spiffe_id: "spiffe://cluster.local/ns/support/mi/agent".into(),
                    attributes: [("model".to_string(), "claude-x-2026-11".to_string())].into(),
                },
                Ancestor {
                    serial_hex: "1c".into(),
                    spiffe_id: "spiffe://cluster.local/ns/support/mi/agent/task/T-1".into(),
                    attributes: Default::default(),
                },
            ],
            task_id: "T-1.refund_2".into(),
            purpose: "refund order 1042 (ü)".into(),
            input_digest: Some([7; DIGEST_LEN]),
        }
    }

    #[test]
    fn round_trips_with_and_without_a_digest() {
        let d = sample();
        assert_eq!(decode(&encode(&d).unwrap()).unwrap(), d);
        let bare = Delegation {
            input_digest: None,
            purpose: String::new(),
            ..sample()
        };
        assert_eq!(decode(&encode(&bare).unwrap()).unwrap(), bare);
        assert_eq!(bare.depth(), 2);
    }

    #[test]
    fn a_serial_with_the_high_bit_set_keeps_its_value() {
        // INTEGER content gains a leading zero octet; the hex form does not.
        let d = sample();
        let der = encode(&d).unwrap();
        assert_eq!(
            decode(&der).unwrap().ancestors[0].serial_hex,
            d.ancestors[0].serial_hex
        );
        assert_eq!(serial_hex(&[0, 0x8f, 0x3a]), "8f3a");
    }

    #[test]
    fn refuses_what_the_operator_never_writes() {
        let bad = |f: &dyn Fn(&mut Delegation)| {
            let mut d = sample();
            f(&mut d);
            encode(&d).expect_err("refused")
        };
        assert_eq!(
            bad(&|d| d.ancestors.clear()),
            DelegationError::ChainLength(0)
        );
        assert_eq!(
            bad(&|d| d.ancestors = vec![d.ancestors[0].clone(); MAX_CHAIN + 1]),
            DelegationError::ChainLength(MAX_CHAIN + 1)
        );
        assert_eq!(
            bad(&|d| d.ancestors[0].serial_hex = "00".into()),
            DelegationError::BadSerial
        );
        assert_eq!(
            bad(&|d| d.ancestors[0].serial_hex = "ab".repeat(21)),
            DelegationError::BadSerial
        );
        assert!(matches!(
            bad(&|d| d.ancestors[1].spiffe_id = "https://example.com".into()),
            DelegationError::BadSpiffeId(_)
        ));
        assert!(matches!(
            bad(&|d| {
                d.ancestors[0]
                    .attributes
                    .insert("Bad Key".into(), "x".into());
            }),
            DelegationError::BadAttribute(_)
        ));
        for id in ["", ".", "..", "a/b", "t 1", &"x".repeat(MAX_TASK_ID + 1)] {
            assert!(
                matches!(
                    bad(&|d| d.task_id = id.into()),
                    DelegationError::BadTaskId(_)
                ),
                "{id:?}"
            );
        }
        assert_eq!(
            bad(&|d| d.purpose = "x".repeat(MAX_PURPOSE + 1)),
            DelegationError::BadPurpose
        );
        assert_eq!(
            bad(&|d| d.purpose = "a\nb".into()),
            DelegationError::BadPurpose
        );
        assert_eq!(
            bad(&|d| d.purpose = "refund \u{202e}gnp.exe".into()),
            DelegationError::BadPurpose
        );
        let mut der = encode(&sample()).unwrap();
        der.push(0);
        assert!(
            matches!(decode(&der), Err(DelegationError::Der(_))),
            "trailing data"
        );
    }

    /// A bounded fuzz run of the decoder: random bytes, and damage to a valid encoding. No input
    /// may panic; whatever is accepted re-encodes to the same bytes.
    #[test]
    fn decoder_never_panics_on_malformed_input() {
        let mut rng = StdRng::seed_from_u64(0x64656c);
        let valid = encode(&sample()).unwrap();
        for case in 0..100_000u32 {
            let input: Vec<u8> = match case % 4 {
                0 => (0..rng.random_range(0..128))
                    .map(|_| rng.random())
                    .collect(),
                1 => {
                    let mut v = valid.clone();
                    let i = rng.random_range(0..v.len());
                    v[i] ^= 1 << rng.random_range(0..8);
                    v
                }
                2 => valid[..rng.random_range(0..valid.len())].to_vec(),
                _ => {
                    let mut v = valid.clone();
                    let at = rng.random_range(0..v.len());
                    v.splice(
                        at..at,
                        (0..rng.random_range(1..6)).map(|_| rng.random::<u8>()),
                    );
                    v
                }
            };
            if let Ok(d) = decode(&input) {
                assert_eq!(encode(&d).unwrap(), input);
            }
        }
    }
}
