//! The delegation audit log: one JSON object per answered request, on its own line on standard
//! output (the operator's logs go to standard error), in the schema of
//! `docs/delegation.md#audit-log`. Collected with the container's logs, it outlives the operator
//! and answers which certificate held which grant, for which task, under which ancestors.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;
use time::OffsetDateTime;

use nhi_identity::delegation::Delegation;

/// The `kind` of every audit line.
pub const KIND: &str = "nhi.dev/delegation";
/// The schema version.
pub const VERSION: u32 = 1;

/// One certificate of the chain.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditCertificate {
    pub serial_number: String,
    #[serde(rename = "spiffeID")]
    pub spiffe_id: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// The task asked for.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditTask {
    pub id: String,
    pub purpose: String,
    #[serde(rename = "inputSHA256", skip_serializing_if = "Option::is_none")]
    pub input_sha256: Option<String>,
    pub grants: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// The child signed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditChild {
    pub serial_number: String,
    #[serde(rename = "spiffeID")]
    pub spiffe_id: String,
    pub not_before: String,
    pub not_after: String,
    pub grants: Vec<String>,
}

/// One audit line.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub kind: &'static str,
    pub version: u32,
    /// When the answer was given (RFC 3339, milliseconds).
    pub time: String,
    /// `Signed` or `Refused`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The MachineIdentity at the root of the chain (`namespace/name`).
    pub identity: String,
    /// The certificate that asked.
    pub parent: AuditCertificate,
    /// The certificates that delegated the parent, root first (empty: the identity's own).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ancestors: Vec<AuditCertificate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<AuditTask>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child: Option<AuditChild>,
}

/// The ancestors of a parent's own delegation, as audit entries.
pub fn ancestors_of(delegation: Option<&Delegation>) -> Vec<AuditCertificate> {
    delegation
        .map(|d| {
            d.ancestors
                .iter()
                .map(|a| AuditCertificate {
                    serial_number: a.serial_hex.clone(),
                    spiffe_id: a.spiffe_id.clone(),
                    attributes: a.attributes.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An RFC 3339 time with milliseconds.
pub fn audit_time(at: OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// Writes `record` as one line on standard output (one write: lines never interleave).
pub fn write(record: &AuditRecord) {
    let Ok(mut line) = serde_json::to_vec(record) else {
        return;
    };
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&line).and_then(|_| out.flush()) {
        tracing::warn!(error = %e, "cannot write the delegation audit line");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_carries_the_documented_fields_and_no_empty_ones() {
        let record = AuditRecord {
            kind: KIND,
            version: VERSION,
            time: audit_time(OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()),
            outcome: "Signed",
            reason: None,
            message: None,
            identity: "support/agent".into(),
            parent: AuditCertificate {
                serial_number: "8f".into(),
                spiffe_id: "spiffe://cluster.local/ns/support/mi/agent".into(),
                attributes: [("model".to_string(), "m-1".to_string())].into(),
            },
            ancestors: vec![],
            task: Some(AuditTask {
                id: "T-1".into(),
                purpose: "refund".into(),
                input_sha256: None,
                grants: vec!["payments.refund".into()],
                ttl_seconds: None,
            }),
            child: None,
        };
        let json: serde_json::Value = serde_json::to_value(&record).unwrap();
        assert_eq!(json["kind"], "nhi.dev/delegation");
        assert_eq!(json["time"], "2027-01-15T08:00:00.000Z");
        assert_eq!(
            json["parent"]["spiffeID"],
            "spiffe://cluster.local/ns/support/mi/agent"
        );
        assert_eq!(json["parent"]["attributes"]["model"], "m-1");
        assert_eq!(json["task"]["grants"][0], "payments.refund");
        for absent in ["reason", "message", "ancestors", "child"] {
            assert!(json.get(absent).is_none(), "{absent}");
        }
    }
}
