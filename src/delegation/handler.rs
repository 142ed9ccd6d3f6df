//! One delegation request, answered: who asks (the verified client certificate), what its
//! identity allows now, the pure decision, the per-identity budget, then the child signed for its
//! own key. Every answer to a known parent is audited, counted and batched into its status.

use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use super::DelegationContext;
use super::audit::{self, AuditCertificate, AuditChild, AuditRecord, AuditTask, ancestors_of};
use super::parent::read_parent;
use super::tls::Served;
use nhi_api::DelegationRecord;
use nhi_core::delegate::decide::{Refusal, TaskRequest, decide};
use nhi_core::delegate::parent::DEFAULT_PER_MINUTE;
use nhi_core::delegate::sign::{SignChildError, sign_child};
use nhi_identity::delegate::wire::{ChildBody, PATH, RefusalBody, TaskRequestBody};
use nhi_identity::delegation::DIGEST_LEN;
use nhi_identity::timestamp::rfc3339;
use nhi_identity::verify::{Purpose, Revocation, VerifiedIdentity, verify_identity_or_task};

/// The request cannot be read (not JSON of the documented shape, a bad digest or CSR).
pub const BAD_REQUEST: &str = "BadRequest";
/// The identity's children per minute are spent.
pub const RATE_LIMITED: &str = "RateLimited";
/// The client certificate names no identity this endpoint serves.
pub const PARENT_INVALID: &str = "ParentInvalid";
pub use super::parent::NOT_READY;
/// The CA could not sign.
pub const SIGNING_FAILED: &str = "SigningFailed";

/// The HTTP answer.
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl Answer {
    pub fn refused(status: StatusCode, reason: &str, message: String) -> Self {
        let body = serde_json::to_vec(&RefusalBody {
            reason: reason.into(),
            message,
        })
        .unwrap_or_default();
        Answer {
            status,
            body,
            retry_after: None,
        }
    }
}

/// A refusal, for the answer and the audit line.
struct Refused {
    status: StatusCode,
    reason: String,
    message: String,
    retry_after: Option<u64>,
    /// Whether the identity's status counts the refusal (not for an identity unknown here, nor
    /// for a rate-limit refusal: those would make the writes the budget prevents).
    counted: bool,
    /// Whether the refusal gets an audit line (a run of rate-limit refusals gets one).
    audited: bool,
}

impl Refused {
    fn new(status: StatusCode, reason: &str, message: String) -> Self {
        Refused {
            status,
            reason: reason.into(),
            message,
            retry_after: None,
            counted: true,
            audited: true,
        }
    }

    fn of(status: StatusCode, r: Refusal) -> Self {
        Self::new(status, r.reason, r.message)
    }
}

/// A child signed: its audit facts and the answer.
struct Signed {
    child: AuditChild,
    answer: Answer,
}

/// Answers `method path` with `body` from the client that presented `peer`.
pub fn answer(
    ctx: &DelegationContext,
    served: &Served,
    peer: &[CertificateDer<'static>],
    (method, path, body): (&Method, &str, &Bytes),
) -> Answer {
    let started = Instant::now();
    let now = OffsetDateTime::now_utc();
    if path != PATH {
        return Answer::refused(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("no {path}: POST {PATH}"),
        );
    }
    if method != Method::POST {
        return Answer::refused(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("POST {PATH}"),
        );
    }
    // Until the revocation record is loaded, a revoked parent could not be told from others;
    // until the tenant policies are, a namespace's bounds could not be.
    if ctx.revoker.record_crl_bytes().is_none() {
        return Answer::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            NOT_READY,
            "the operator has not loaded its revocation record yet; try again".into(),
        );
    }
    if !ctx.policies.is_synced() {
        return Answer::refused(
            StatusCode::SERVICE_UNAVAILABLE,
            NOT_READY,
            "the operator has not loaded the tenant policies yet; try again".into(),
        );
    }
    // The handshake checked the chain; this reads who it is (and refuses what is no identity).
    let caller = match verify_identity_or_task(
        peer,
        &served.bundle,
        Revocation::NotChecked,
        Purpose::Client,
        now,
    ) {
        Ok(caller) => caller,
        Err(e) => {
            ctx.metrics.count_delegation(
                "Refused",
                PARENT_INVALID,
                started.elapsed().as_secs_f64(),
            );
            return Answer::refused(StatusCode::FORBIDDEN, PARENT_INVALID, e.to_string());
        }
    };
    let request: Result<TaskRequestBody, String> =
        serde_json::from_slice(body).map_err(|e| request_error(&e));
    let outcome = decide_and_sign(ctx, served, &caller, request.as_ref(), now);
    let mut audited = true;
    let mut record = AuditRecord {
        kind: audit::KIND,
        version: audit::VERSION,
        time: audit::audit_time(OffsetDateTime::now_utc()),
        outcome: "Signed",
        reason: None,
        message: None,
        identity: format!("{}/{}", caller.identity.namespace, caller.identity.name),
        parent: AuditCertificate {
            serial_number: caller.serial_hex.clone(),
            spiffe_id: caller.identity.spiffe_id.clone(),
            attributes: caller.attributes.clone(),
        },
        ancestors: ancestors_of(caller.delegation.as_ref()),
        task: request.as_ref().ok().map(|r| AuditTask {
            id: r.task_id.clone(),
            purpose: r.purpose.clone(),
            input_sha256: r.input_sha256.clone(),
            grants: r.grants.clone(),
            ttl_seconds: r.ttl_seconds,
        }),
        child: None,
    };
    let (ns, name) = (&caller.identity.namespace, &caller.identity.name);
    let seconds = started.elapsed().as_secs_f64();
    let answer = match outcome {
        Ok(Signed { child, answer }) => {
            ctx.status.signed(
                ns,
                name,
                DelegationRecord {
                    serial_number: child.serial_number.clone(),
                    spiffe_id: child.spiffe_id.clone(),
                    parent_serial_number: caller.serial_hex.clone(),
                    task_id: record
                        .task
                        .as_ref()
                        .map(|t| t.id.clone())
                        .unwrap_or_default(),
                    purpose: record
                        .task
                        .as_ref()
                        .map(|t| t.purpose.clone())
                        .unwrap_or_default(),
                    grants: child.grants.clone(),
                    delegated_at: rfc3339(now),
                    not_after: child.not_after.clone(),
                },
            );
            ctx.metrics.count_delegation("Signed", "", seconds);
            record.child = Some(child);
            answer
        }
        Err(refused) => {
            if refused.counted {
                ctx.status.refused(ns, name);
            }
            audited = refused.audited;
            ctx.metrics
                .count_delegation("Refused", &refused.reason, seconds);
            record.outcome = "Refused";
            record.reason = Some(refused.reason.clone());
            record.message = Some(refused.message.clone());
            let mut answer = Answer::refused(refused.status, &refused.reason, refused.message);
            answer.retry_after = refused.retry_after;
            answer
        }
    };
    if audited {
        audit::write(&record);
    }
    answer
}

/// What is wrong with a request body, without quoting its values (only the documented field
/// names, or the one the caller added).
fn request_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = match e.classify() {
        serde_json::error::Category::Data
            if text.starts_with("missing field") || text.starts_with("unknown field") =>
        {
            text.split(" at line")
                .next()
                .unwrap_or_default()
                .to_string()
        }
        serde_json::error::Category::Data => "a field has the wrong type or value".into(),
        serde_json::error::Category::Syntax => "it is not JSON".into(),
        serde_json::error::Category::Eof => "the JSON ends early".into(),
        serde_json::error::Category::Io => "it cannot be read".into(),
    };
    format!(
        "the request is not a delegation request: {what} (line {}, column {})",
        e.line(),
        e.column()
    )
}

/// The decision and, when it is yes, the signed child (its audit facts, and the answer).
fn decide_and_sign(
    ctx: &DelegationContext,
    served: &Served,
    caller: &VerifiedIdentity,
    request: Result<&TaskRequestBody, &String>,
    now: OffsetDateTime,
) -> Result<Signed, Refused> {
    // Every authenticated request takes from its identity's budget, refused ones too.
    let asker = read_parent(ctx, caller, now);
    let (bucket, per_minute) = match &asker {
        Ok(a) => (a.uid.clone(), a.per_minute),
        Err(_) => (
            format!("{}/{}", caller.identity.namespace, caller.identity.name),
            DEFAULT_PER_MINUTE,
        ),
    };
    if let Err(spent) = ctx.limits.take(&bucket, per_minute, Instant::now()) {
        let seconds = spent.wait.as_secs_f64().ceil().max(1.0) as u64;
        return Err(Refused {
            retry_after: Some(seconds),
            counted: false,
            audited: spent.first,
            ..Refused::new(
                StatusCode::TOO_MANY_REQUESTS,
                RATE_LIMITED,
                format!(
                    "MachineIdentity {}/{} may make {per_minute} delegation requests per minute (spec.delegation.maxPerMinute, within its namespace's IdentityPolicies); try again in {seconds}s",
                    caller.identity.namespace, caller.identity.name
                ),
            )
        });
    }
    let asker = asker.map_err(|r| {
        let status = match r.reason {
            NOT_READY => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::FORBIDDEN,
        };
        Refused {
            counted: r.reason != super::parent::PARENT_UNKNOWN,
            ..Refused::of(status, r)
        }
    })?;
    let bad_request = |message: String| Refused::new(StatusCode::BAD_REQUEST, BAD_REQUEST, message);
    let body = request.map_err(|e| bad_request(e.clone()))?;
    let task = task_request(body).map_err(bad_request)?;
    let csr = match pem::parse(&body.csr) {
        Ok(block) if block.tag() == "CERTIFICATE REQUEST" => block.into_contents(),
        _ => {
            return Err(bad_request(
                "csr: expected a PEM CERTIFICATE REQUEST".into(),
            ));
        }
    };
    let plan = decide(&asker.parent, &task, now).map_err(|r| {
        let status = match r.reason {
            nhi_core::delegate::decide::BAD_TASK => StatusCode::BAD_REQUEST,
            _ => StatusCode::FORBIDDEN,
        };
        Refused::of(status, r)
    })?;
    let ca = ctx.ca.current();
    let signed =
        sign_child(&ca, &plan, &caller.identity.namespace, &csr, now).map_err(|e| match e {
            SignChildError::Csr(_) | SignChildError::UnsupportedKey(_) => {
                bad_request(format!("csr: {e}"))
            }
            e => Refused::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                SIGNING_FAILED,
                e.to_string(),
            ),
        })?;
    let info = &signed.leaf.info;
    let grants: Vec<String> = plan.grants.iter().cloned().collect();
    let child = AuditChild {
        serial_number: info.serial_hex.clone(),
        spiffe_id: plan.spiffe_id.clone(),
        not_before: rfc3339(info.not_before),
        not_after: rfc3339(info.not_after),
        grants: grants.clone(),
    };
    let body = serde_json::to_vec(&ChildBody {
        spiffe_id: plan.spiffe_id,
        serial_number: info.serial_hex.clone(),
        not_after: rfc3339(info.not_after),
        grants,
        certificate: signed.chain_pem,
        ca_bundle: served.bundle_pem.to_string(),
    })
    .unwrap_or_default();
    let answer = Answer {
        status: StatusCode::OK,
        body,
        retry_after: None,
    };
    Ok(Signed { child, answer })
}

/// The decision's view of the request.
fn task_request(body: &TaskRequestBody) -> Result<TaskRequest, String> {
    let input_digest = match &body.input_sha256 {
        None => None,
        Some(text) => {
            let bytes = hex::decode(text)
                .ok()
                .and_then(|b| <[u8; DIGEST_LEN]>::try_from(b).ok())
                .ok_or("inputSHA256: expected 64 hexadecimal digits")?;
            Some(bytes)
        }
    };
    let ttl = match body.ttl_seconds {
        None => None,
        Some(s) => Some(time::Duration::seconds(
            i64::try_from(s).map_err(|_| "ttlSeconds is too large")?,
        )),
    };
    Ok(TaskRequest {
        task_id: body.task_id.clone(),
        purpose: body.purpose.clone(),
        input_digest,
        grants: body.grants.iter().cloned().collect(),
        ttl,
    })
}
