//! The parent as the endpoint sees it: the verified client certificate, and from the caches its
//! MachineIdentity's delegation limits (within its namespace's IdentityPolicies), standing and
//! current grants.

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use time::OffsetDateTime;

use super::DelegationContext;
use crate::controller::identity::facts::entitlement_facts;
use nhi_api::MachineIdentity;
use nhi_core::delegate::decide::{Parent, ParentCertificate, Refusal, Standing};
use nhi_core::delegate::parent::{DEFAULT_PER_MINUTE, limits, revoked_in_chain, standing, within};
use nhi_core::entitle::resolve::effective_grants;
use nhi_core::policy::delegation::delegation_bound;
use nhi_identity::verify::VerifiedIdentity;

/// A parent not known here (another trust domain, or no such MachineIdentity).
pub const PARENT_UNKNOWN: &str = "ParentUnknown";
/// The operator cannot answer yet (a cache it decides from is not loaded).
pub const NOT_READY: &str = "NotReady";
/// The identity's `spec.delegation` holds a value the schema should have refused.
pub const INVALID_DELEGATION: &str = "InvalidDelegation";

/// The parent and its identity's budget.
pub struct Asker {
    pub parent: Parent,
    /// The identity's UID (its rate-limit bucket).
    pub uid: String,
    /// Its requests per minute (`maxPerMinute`; the default without delegation).
    pub per_minute: u32,
}

/// Reads the parent of `caller` (verified) at `now`.
pub fn read_parent(
    ctx: &DelegationContext,
    caller: &VerifiedIdentity,
    now: OffsetDateTime,
) -> Result<Asker, Refusal> {
    let id = &caller.identity;
    let key = format!("{}/{}", id.namespace, id.name);
    let unknown = |message: String| Refusal {
        reason: PARENT_UNKNOWN,
        message,
    };
    if id.trust_domain != ctx.trust_domain {
        return Err(unknown(format!(
            "{} is not of trust domain {}",
            id.spiffe_id, ctx.trust_domain
        )));
    }
    let mi: std::sync::Arc<MachineIdentity> = ctx
        .identities
        .get(&ObjectRef::new(&id.name).within(&id.namespace))
        .ok_or_else(|| unknown(format!("MachineIdentity {key} does not exist")))?;
    let (policy, namespace_known) = ctx.policies.effective(&id.namespace);
    if !namespace_known {
        // Its labels decide which policies apply: without them, none can be told.
        return Err(Refusal {
            reason: NOT_READY,
            message: format!(
                "namespace {} is not known here yet; try again",
                id.namespace
            ),
        });
    }
    let bound = delegation_bound(&policy);
    let limits = match &mi.spec.delegation {
        None => None,
        Some(spec) => Some(within(
            limits(spec).map_err(|message| Refusal {
                reason: INVALID_DELEGATION,
                message,
            })?,
            &bound,
        )),
    };
    let certificate = ParentCertificate {
        serial_hex: caller.serial_hex.clone(),
        spiffe_id: id.spiffe_id.clone(),
        not_after: caller.not_after,
        grants: caller.grants.clone(),
        attributes: caller.attributes.clone(),
        delegation: caller.delegation.clone(),
    };
    // A suspension or a deletion says more than the revocation it brings.
    let mut standing = standing(&mi, ctx.review_warning, now);
    if standing == Standing::Current
        && let Some(serial) = revoked_in_chain(&certificate, |s| ctx.revoker.is_revoked(s))
    {
        standing = Standing::Revoked(serial);
    }
    let entitlements = entitlement_facts(&ctx.entitlements, &id.namespace, &policy);
    let uid = mi.uid().unwrap_or_default();
    let grants = effective_grants(&id.name, &uid, mi.labels(), &entitlements, now);
    Ok(Asker {
        per_minute: limits.as_ref().map_or(DEFAULT_PER_MINUTE, |l| l.per_minute),
        parent: Parent {
            identity: key,
            policy_denial: limits.as_ref().and(bound.denial()),
            policy: limits.map(|l| l.policy),
            standing,
            current_grants: grants.grants,
            grant_ends: grants.grant_ends,
            certificate,
        },
        uid,
    })
}
