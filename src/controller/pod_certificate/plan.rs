//! The plan for one PodCertificateRequest (pure over its facts): wait, deny, or issue what.

use time::Duration;

use super::facts::Facts;
use nhi_core::issue::inputs::IssuancePolicy;
use nhi_core::issue::leaf::{CLOCK_SKEW_ALLOWANCE, CustomExtensions, LeafRequest};
use nhi_core::podcert::MIN_LIFETIME;
use nhi_core::podcert::decide::{
    AMBIGUOUS_IDENTITY, BAD_REQUEST, Claimant, Denial, NO_IDENTITY, NO_IDENTITY_GRACE,
    POD_MISMATCH, Request, UNRECOGNIZED_ANNOTATIONS, bind, decide, standing_denial,
};
use nhi_core::podcert::identity::{IdentityInputs, resolve_for_pod};
use nhi_core::podcert::pod_check::PodCheck;
use nhi_identity::extension;

/// What to do with a request.
#[derive(Debug)]
pub enum Plan {
    /// Look again after this long: no identity covers the pod yet (within the grace), or the CA
    /// cannot cover an hour's certificate until it is rotated.
    Wait(std::time::Duration),
    Deny(Denial),
    Issue(Box<Issuance>),
}

/// A certificate to sign.
#[derive(Debug)]
pub struct Issuance {
    /// The MachineIdentity's name.
    pub identity: String,
    /// Its leaf, with the lifetime the request and the CA allow.
    pub request: LeafRequest,
    /// The pod's public key (SubjectPublicKeyInfo, DER).
    pub spki: Vec<u8>,
    pub renewal_fraction: f64,
    /// The grants the certificate carries (recorded: a withdrawn one revokes it).
    pub grants: Vec<String>,
    /// Spreads the refreshes of one identity's pods (`namespace/identity/pod-uid`).
    pub jitter_key: String,
}

/// Whether a denial says the cache may not have held the right identities: such a denial is
/// made again from a live list before it is written.
pub fn about_identities(denial: &Denial) -> bool {
    denial.reason == NO_IDENTITY || denial.reason == AMBIGUOUS_IDENTITY
}

/// What is refused before any identity is looked at: a pod that is not the one named, and user
/// annotations (none is recognised).
fn refused_as_asked(facts: &Facts) -> Option<Denial> {
    if let PodCheck::Differs(why) = &facts.pod {
        return Some(Denial::new(POD_MISMATCH, why.clone()));
    }
    (!facts.user_annotations.is_empty()).then(|| {
        Denial::new(
            UNRECOGNIZED_ANNOTATIONS,
            format!(
                "this signer recognises no userAnnotations; the request has {}",
                facts.user_annotations.join(", ")
            ),
        )
    })
}

/// Plans the answer to a request with `facts`.
pub fn plan(facts: &Facts, issuance: &IssuancePolicy, review_warning: Duration) -> Plan {
    if let Some(denial) = refused_as_asked(facts) {
        return Plan::Deny(denial);
    }
    let claimants: Vec<Claimant> = facts.claimants.iter().map(|(c, _)| c.clone()).collect();
    let bound = match bind(&facts.service_account, &claimants) {
        Ok(c) => c.name.clone(),
        Err(d) if d.reason == NO_IDENTITY && facts.age < NO_IDENTITY_GRACE => {
            return Plan::Wait(std::time::Duration::from_secs(5));
        }
        Err(d) => return Plan::Deny(d),
    };
    let Some((_, mi)) = facts.claimants.iter().find(|(c, _)| c.name == bound) else {
        return Plan::Wait(std::time::Duration::from_secs(5));
    };
    let inputs = IdentityInputs {
        identity: mi,
        policy: &facts.policy,
        issuance,
        entitlements: &facts.entitlements,
        review_warning,
        now: facts.now,
    };
    let resolved = match resolve_for_pod(&inputs) {
        Ok(r) => r,
        Err(standing) => {
            return Plan::Deny(standing_denial(&bound, &standing).unwrap_or_else(|| {
                Denial::new(
                    BAD_REQUEST,
                    format!("MachineIdentity {bound} cannot be issued"),
                )
            }));
        }
    };
    // No certificate outlives the CA: until a rotation leaves room for an hour's, wait (a
    // passing condition, never a denial).
    let shortest = MIN_LIFETIME - CLOCK_SKEW_ALLOWANCE;
    let ca_room = facts.ca_not_after - facts.now;
    if ca_room < shortest && resolved.request.ttl >= shortest {
        return Plan::Wait(std::time::Duration::from_secs(60));
    }
    let ttl = resolved.request.ttl.min(ca_room);
    let request = Request {
        key: facts
            .key
            .as_ref()
            .map(|(k, _)| k.clone())
            .map_err(Clone::clone),
        max_expiration: facts.max_expiration,
    };
    let alg = mi.spec.certificate.key_algorithm;
    let grant = match decide(&bound, alg, ttl, &request) {
        Ok(g) => g,
        Err(d) => return Plan::Deny(d),
    };
    let Ok((_, spki)) = &facts.key else {
        return Plan::Deny(Denial::new(
            BAD_REQUEST,
            "the request's key is unreadable".into(),
        ));
    };
    let grants = carried_grants(&resolved.request.extensions);
    let mut leaf = resolved.request;
    leaf.ttl = grant.ttl;
    Plan::Issue(Box::new(Issuance {
        identity: bound.clone(),
        request: leaf,
        spki: spki.clone(),
        renewal_fraction: resolved.renewal_fraction,
        grants,
        jitter_key: format!("{}/{bound}/{}", facts.namespace, facts.pod_uid),
    }))
}

/// The grants an identity extension among `extensions` carries.
fn carried_grants(extensions: &CustomExtensions) -> Vec<String> {
    extensions
        .iter()
        .filter(|(oid, _)| oid.as_slice() == extension::EXTENSION_OID)
        .filter_map(|(_, der)| extension::decode(der).ok())
        .flat_map(|claims| claims.grants)
        .collect()
}
