//! Tenant policy, pure: which IdentityPolicies apply to a namespace ([`effective`]), what its
//! identities may claim ([`identity`]) and delegate ([`delegation`]), what its Entitlements may give ([`entitlement`]), and the
//! pattern and rule matching they share ([`pattern`], [`rules`]).

pub mod delegation;
pub mod effective;
pub mod entitlement;
pub mod identity;
pub mod pattern;
pub mod rules;
pub mod status;

pub use effective::{EffectivePolicy, effective_policy};

/// The stable reason of everything a policy refuses (conditions and Events).
pub const POLICY_DENIED: &str = "PolicyDenied";

/// One thing a policy refuses: the field, and why (naming the policy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The field refused, for example `spec.certificate.dnsNames[1]`.
    pub field: String,
    /// The IdentityPolicy that refuses it (or the built-in default, or the fixed floor).
    pub policy: String,
    /// What is refused, for example `"payments-api.payments.svc" is not allowed`.
    pub what: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: refused by {}: {}",
            self.field, self.policy, self.what
        )
    }
}

/// The refusals as one message (the first few, and how many more).
pub fn refusal_message(refusals: &[Refusal]) -> String {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = refusals.iter().take(SHOWN).map(|r| r.to_string()).collect();
    if refusals.len() > SHOWN {
        parts.push(format!("and {} more", refusals.len() - SHOWN));
    }
    parts.join("; ")
}
