//! Whether a parent (an identity's certificate, or a task certificate) may delegate a task, and
//! what the child certificate holds: never more grants than the parent holds now and may
//! delegate, never longer than the parent, never deeper than the identity allows.

use std::collections::BTreeSet;

use nhi_identity::delegation::{
    Ancestor, DIGEST_LEN, Delegation, MAX_CHAIN, canonical_serial_hex, valid_purpose, valid_task_id,
};
use time::{Duration, OffsetDateTime};

/// What the identity at the root of the chain allows (`spec.delegation`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DelegationPolicy {
    /// The longest a child lives.
    pub max_child_ttl: Duration,
    /// How many delegations deep a chain may go (1: the identity's children only).
    pub max_depth: usize,
    /// The grants that may be delegated (None: any the parent holds).
    pub delegable: Option<BTreeSet<String>>,
    /// The IdentityPolicy whose bound `max_depth` is (None: the identity's own limit).
    pub max_depth_by: Option<String>,
}

/// Where the identity at the root of the chain stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    Current,
    /// Its review lapsed (why).
    Suspended(String),
    /// It is being deleted.
    Deleting,
    /// The parent's certificate, or an ancestor's, is revoked (its serial).
    Revoked(String),
}

/// The certificate the parent authenticated with (its TLS client certificate, verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentCertificate {
    pub serial_hex: String,
    pub spiffe_id: String,
    pub not_after: OffsetDateTime,
    /// The grants it carries.
    pub grants: BTreeSet<String>,
    pub attributes: std::collections::BTreeMap<String, String>,
    /// Its own delegation (None: the identity's own certificate).
    pub delegation: Option<Delegation>,
}

/// Everything the decision needs about the parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parent {
    /// The identity at the root of the chain (`namespace/name`).
    pub identity: String,
    /// Its `spec.delegation` within its namespace's bounds (None: delegation is off).
    pub policy: Option<DelegationPolicy>,
    /// Why its namespace's IdentityPolicies refuse delegation the identity allows (None: they
    /// do not).
    pub policy_denial: Option<String>,
    pub standing: Standing,
    /// The identity's grants now (its Entitlements as resolved now): a grant withdrawn since
    /// the parent's certificate was issued is not delegated.
    pub current_grants: BTreeSet<String>,
    /// When those of the grants that end (just-in-time Entitlements) end: no child outlives a
    /// grant it carries.
    pub grant_ends: std::collections::BTreeMap<String, OffsetDateTime>,
    pub certificate: ParentCertificate,
}

/// What the parent asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRequest {
    pub task_id: String,
    pub purpose: String,
    pub input_digest: Option<[u8; DIGEST_LEN]>,
    pub grants: BTreeSet<String>,
    /// The lifetime asked for (None: the longest allowed).
    pub ttl: Option<Duration>,
}

/// The child certificate to sign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildPlan {
    pub spiffe_id: String,
    pub grants: BTreeSet<String>,
    /// The parent's attributes, carried on.
    pub attributes: std::collections::BTreeMap<String, String>,
    pub not_after: OffsetDateTime,
    pub delegation: Delegation,
}

/// Why a delegation is refused: a stable reason and a message for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

pub const NOT_ENABLED: &str = "DelegationNotEnabled";
/// The namespace's IdentityPolicies do not allow delegation.
pub const POLICY_DENIED: &str = "PolicyDenied";
pub const PARENT_SUSPENDED: &str = "ParentSuspended";
pub const PARENT_DELETING: &str = "ParentDeleting";
pub const PARENT_REVOKED: &str = "ParentRevoked";
pub const PARENT_EXPIRING: &str = "ParentExpiring";
pub const DEPTH_EXCEEDED: &str = "DepthExceeded";
pub const GRANT_NOT_HELD: &str = "GrantNotHeld";
pub const GRANT_NOT_DELEGABLE: &str = "GrantNotDelegable";
pub const BAD_TASK: &str = "InvalidTask";

/// The shortest child worth signing: a parent closer to its end than this cannot delegate.
pub const MIN_CHILD_TTL: Duration = Duration::seconds(10);

fn refuse(reason: &'static str, message: String) -> Result<ChildPlan, Refusal> {
    Err(Refusal { reason, message })
}

/// Decides on `request` from `parent` at `now`.
pub fn decide(
    parent: &Parent,
    request: &TaskRequest,
    now: OffsetDateTime,
) -> Result<ChildPlan, Refusal> {
    let Some(policy) = &parent.policy else {
        return refuse(
            NOT_ENABLED,
            format!(
                "MachineIdentity {} does not allow delegation (spec.delegation)",
                parent.identity
            ),
        );
    };
    if let Some(denial) = &parent.policy_denial {
        return refuse(
            POLICY_DENIED,
            format!(
                "MachineIdentity {} may not delegate: {denial}",
                parent.identity
            ),
        );
    }
    match &parent.standing {
        Standing::Current => {}
        Standing::Suspended(why) => {
            return refuse(
                PARENT_SUSPENDED,
                format!("MachineIdentity {} is suspended: {why}", parent.identity),
            );
        }
        Standing::Deleting => {
            return refuse(
                PARENT_DELETING,
                format!("MachineIdentity {} is being deleted", parent.identity),
            );
        }
        Standing::Revoked(serial) => {
            return refuse(
                PARENT_REVOKED,
                format!("certificate {serial} in the parent's chain is revoked"),
            );
        }
    }
    check_task(request)?;
    let cert = &parent.certificate;
    let depth = cert.delegation.as_ref().map_or(0, Delegation::depth) + 1;
    let max_depth = policy.max_depth.min(MAX_CHAIN);
    if depth > max_depth {
        return refuse(
            DEPTH_EXCEEDED,
            format!(
                "a child would be {depth} delegations deep; {} allows {max_depth}",
                policy
                    .max_depth_by
                    .clone()
                    .unwrap_or_else(|| format!("MachineIdentity {}", parent.identity))
            ),
        );
    }
    let grants = grants(parent, policy, &request.grants)?;
    let mut longest = (cert.not_after - now).min(policy.max_child_ttl);
    let grants_until = grants.iter().filter_map(|g| parent.grant_ends.get(g)).min();
    if let Some(until) = grants_until {
        longest = longest.min(*until - now);
    }
    let ttl = request.ttl.map_or(longest, |asked| asked.min(longest));
    if ttl < MIN_CHILD_TTL {
        return refuse(
            PARENT_EXPIRING,
            format!(
                "the child would live {}s, under the {}s floor: the parent's certificate ends at {}{} (renew it, then delegate)",
                ttl.whole_seconds(),
                MIN_CHILD_TTL.whole_seconds(),
                cert.not_after,
                grants_until
                    .map(|u| format!(" and a grant it would carry at {u}"))
                    .unwrap_or_default()
            ),
        );
    }
    let mut ancestors = cert
        .delegation
        .as_ref()
        .map(|d| d.ancestors.clone())
        .unwrap_or_default();
    ancestors.push(Ancestor {
        serial_hex: canonical_serial_hex(&cert.serial_hex),
        spiffe_id: cert.spiffe_id.clone(),
        attributes: cert.attributes.clone(),
    });
    Ok(ChildPlan {
        spiffe_id: format!("{}/task/{}", cert.spiffe_id, request.task_id),
        grants,
        attributes: cert.attributes.clone(),
        not_after: now + ttl,
        delegation: Delegation {
            ancestors,
            task_id: request.task_id.clone(),
            purpose: request.purpose.clone(),
            input_digest: request.input_digest,
        },
    })
}

fn check_task(request: &TaskRequest) -> Result<(), Refusal> {
    if !valid_task_id(&request.task_id) {
        return Err(Refusal {
            reason: BAD_TASK,
            message: format!(
                "task ID {:?}: 1 to 64 letters, digits, '.', '-' or '_' (it becomes a SPIFFE ID segment)",
                request.task_id
            ),
        });
    }
    if !valid_purpose(&request.purpose) {
        return Err(Refusal {
            reason: BAD_TASK,
            message: "the purpose must be at most 256 characters without control characters".into(),
        });
    }
    Ok(())
}

/// The child's grants: exactly those asked for, each held by the parent's certificate and by the
/// identity now, and delegable. Fails closed, naming every grant that is not.
fn grants(
    parent: &Parent,
    policy: &DelegationPolicy,
    asked: &BTreeSet<String>,
) -> Result<BTreeSet<String>, Refusal> {
    let not_held: Vec<&str> = asked
        .iter()
        .filter(|g| !(parent.certificate.grants.contains(*g) && parent.current_grants.contains(*g)))
        .map(String::as_str)
        .collect();
    if !not_held.is_empty() {
        return Err(Refusal {
            reason: GRANT_NOT_HELD,
            message: format!(
                "the parent does not hold {}: a child never holds more than its parent",
                not_held.join(", ")
            ),
        });
    }
    let not_delegable: Vec<&str> = match &policy.delegable {
        None => vec![],
        Some(allowed) => asked
            .iter()
            .filter(|g| !allowed.contains(*g))
            .map(String::as_str)
            .collect(),
    };
    if !not_delegable.is_empty() {
        return Err(Refusal {
            reason: GRANT_NOT_DELEGABLE,
            message: format!(
                "MachineIdentity {} does not allow delegating {} (spec.delegation.grants)",
                parent.identity,
                not_delegable.join(", ")
            ),
        });
    }
    Ok(asked.clone())
}

#[cfg(test)]
mod tests;
