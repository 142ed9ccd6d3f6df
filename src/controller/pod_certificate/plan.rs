//! The plan for one PodCertificateRequest (pure over its facts): wait, deny, or issue what.

use time::Duration;

use super::facts::{Facts, PodCheck};
use nhi_core::issue::inputs::IssuancePolicy;
use nhi_core::issue::leaf::LeafRequest;
use nhi_core::podcert::decide::{
    Claimant, Denial, NO_IDENTITY, NO_IDENTITY_GRACE, POD_MISMATCH, Request, bind, decide,
    standing_denial,
};
use nhi_core::podcert::identity::{IdentityInputs, resolve_for_pod};

/// What to do with a request.
#[derive(Debug)]
pub enum Plan {
    /// Look again after this long (no identity covers the pod yet, within the grace).
    Wait(std::time::Duration),
    Deny(Denial),
    Issue(Box<Issuance>),
}

/// A certificate to sign.
#[derive(Debug)]
pub struct Issuance {
    /// The MachineIdentity's name.
    pub identity: String,
    /// Its leaf, with the lifetime the request allows.
    pub request: LeafRequest,
    /// The pod's public key (SubjectPublicKeyInfo, DER).
    pub spki: Vec<u8>,
    pub renewal_fraction: f64,
    /// Spreads the refreshes of one identity's pods (`namespace/identity/pod-uid`).
    pub jitter_key: String,
}

/// Plans the answer to a request with `facts`.
pub fn plan(facts: &Facts, issuance: &IssuancePolicy, review_warning: Duration) -> Plan {
    if let PodCheck::Differs(why) = &facts.pod {
        return Plan::Deny(Denial::new(POD_MISMATCH, why.clone()));
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
                    "IdentityUnavailable",
                    format!("MachineIdentity {bound} cannot be issued"),
                )
            }));
        }
    };
    let request = Request {
        key: facts
            .key
            .as_ref()
            .map(|(k, _)| k.clone())
            .map_err(Clone::clone),
        max_expiration: facts.max_expiration,
    };
    let alg = mi.spec.certificate.key_algorithm;
    let grant = match decide(
        &bound,
        &Default::default(),
        alg,
        resolved.request.ttl,
        &request,
    ) {
        Ok(g) => g,
        Err(d) => return Plan::Deny(d),
    };
    let Ok((_, spki)) = &facts.key else {
        return Plan::Deny(Denial::new(
            "BadRequest",
            "the request's key is unreadable".into(),
        ));
    };
    let mut leaf = resolved.request;
    leaf.ttl = grant.ttl;
    Plan::Issue(Box::new(Issuance {
        identity: bound.clone(),
        request: leaf,
        spki: spki.clone(),
        renewal_fraction: resolved.renewal_fraction,
        jitter_key: format!("{}/{bound}/{}", facts.namespace, facts.pod_uid),
    }))
}
