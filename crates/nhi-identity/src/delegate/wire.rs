//! The delegation endpoint's wire format: one JSON request, and a child or a refusal back.
//!
//! `POST /v1/delegations` over mTLS (the parent's certificate is the client certificate):
//! a [`TaskRequestBody`]; answered `200` with a [`ChildBody`], or with a [`RefusalBody`]: `400`,
//! `403`, `404`, `405`, `413`, `429` (with `Retry-After`, in seconds), `500` or `503`. The reasons
//! are listed in `docs/delegation.md`.

use serde::{Deserialize, Serialize};

/// The path of the endpoint.
pub const PATH: &str = "/v1/delegations";

/// The largest request body the endpoint reads.
pub const MAX_BODY: usize = 64 * 1024;

/// What the parent asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskRequestBody {
    /// The task ID: 1 to 64 letters, digits, `.`, `-` or `_` (a SPIFFE ID segment).
    #[serde(rename = "taskID")]
    pub task_id: String,
    /// A short purpose (at most 256 characters, no control characters).
    #[serde(default)]
    pub purpose: String,
    /// SHA-256 of the task's input, 64 hexadecimal digits (optional).
    #[serde(
        default,
        rename = "inputSHA256",
        skip_serializing_if = "Option::is_none"
    )]
    pub input_sha256: Option<String>,
    /// The grants asked for: each must be held by the parent and delegable.
    #[serde(default)]
    pub grants: Vec<String>,
    /// The lifetime asked for, in seconds (absent: the longest allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// The child's PKCS#10 certificate request, PEM.
    pub csr: String,
}

/// The child certificate signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildBody {
    #[serde(rename = "spiffeID")]
    pub spiffe_id: String,
    /// Serial number, hexadecimal.
    pub serial_number: String,
    /// RFC 3339.
    pub not_after: String,
    pub grants: Vec<String>,
    /// The leaf and the CA chain, PEM (an identity directory's `tls.crt`).
    pub certificate: String,
    /// The trust bundle, PEM (`ca.crt`).
    pub ca_bundle: String,
}

/// Why a request was refused: a stable reason and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusalBody {
    pub reason: String,
    pub message: String,
}
