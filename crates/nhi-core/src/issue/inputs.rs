//! Turns a MachineIdentity and the operator's settings into the certificate request it implies.

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::Duration;

use super::leaf::{CustomExtensions, LeafRequest, leaf_common_name, spiffe_id};
use crate::duration::parse_go_duration;
use crate::entitle::resolve::EffectiveGrants;
use nhi_api::{KeyAlgorithm, MachineIdentity};
use nhi_identity::extension::{self, IdentityClaims};

/// The operator settings that shape certificates.
#[derive(Clone, Debug, PartialEq)]
pub struct IssuancePolicy {
    pub trust_domain: String,
    pub default_ttl: Duration,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub renewal_fraction: f64,
}

/// Problems in a spec that the schema could not catch. Reported as a condition, never a panic.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("spec.certificate.ttl {0:?} is not a valid duration")]
    InvalidTtl(String),
    #[error("spec.certificate.ttl {ttl} is outside the operator's bounds [{min}, {max}]")]
    TtlOutOfBounds {
        ttl: String,
        min: String,
        max: String,
    },
    #[error("the object has no namespace or name")]
    MissingIdentity,
    #[error("spec.attributes cannot be encoded in the certificate: {0}")]
    InvalidAttributes(String),
}

impl SpecError {
    /// Stable CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecError::InvalidTtl(_) => "InvalidTTL",
            SpecError::TtlOutOfBounds { .. } => "TTLOutOfBounds",
            SpecError::MissingIdentity => "InvalidSpec",
            SpecError::InvalidAttributes(_) => "InvalidAttributes",
        }
    }
}

/// What an identity's certificate must be, resolved from its spec.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedIdentity {
    pub request: LeafRequest,
    pub key_algorithm: KeyAlgorithm,
    pub renewal_fraction: f64,
    /// Hash of everything that shapes the certificate; a change means re-issue.
    pub inputs_hash: String,
    /// Stable key for renewal jitter (`namespace/name`).
    pub identity_key: String,
}

#[derive(Serialize)]
struct HashedInputs<'a> {
    spiffe_id: &'a str,
    common_name: &'a str,
    namespace: &'a str,
    dns_names: &'a [String],
    usages: Vec<&'static str>,
    ttl_seconds: i64,
    not_after_cap: Option<i64>,
    key_algorithm: KeyAlgorithm,
    extensions: Vec<(Vec<u64>, String)>,
    /// Omitted when false, so enabling it is what changes the hash.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    kubernetes_access: bool,
}

/// The identity extension for the identity's grants and attributes (none when both are empty).
pub fn claims_extension(
    mi: &MachineIdentity,
    grants: &EffectiveGrants,
) -> Result<CustomExtensions, SpecError> {
    let claims = IdentityClaims {
        grants: grants.grants.clone(),
        attributes: mi.spec.attributes.to_map(),
    };
    if claims.is_empty() {
        return Ok(vec![]);
    }
    let der =
        extension::encode(&claims).map_err(|e| SpecError::InvalidAttributes(e.to_string()))?;
    Ok(vec![(extension::EXTENSION_OID.to_vec(), der)])
}

/// Resolves the certificate request of an identity. `extensions` are the custom extensions the
/// certificate must carry (entitlements, attributes) and `not_after_cap` the earliest grant expiry.
pub fn resolve_identity(
    mi: &MachineIdentity,
    policy: &IssuancePolicy,
    extensions: CustomExtensions,
    not_after_cap: Option<time::OffsetDateTime>,
) -> Result<ResolvedIdentity, SpecError> {
    let namespace = mi
        .metadata
        .namespace
        .clone()
        .ok_or(SpecError::MissingIdentity)?;
    let name = mi.metadata.name.clone().ok_or(SpecError::MissingIdentity)?;
    let cert = &mi.spec.certificate;
    let ttl = match &cert.ttl {
        None => policy.default_ttl,
        Some(s) => parse_go_duration(s).map_err(|_| SpecError::InvalidTtl(s.clone()))?,
    };
    if ttl < policy.min_ttl || ttl > policy.max_ttl {
        return Err(SpecError::TtlOutOfBounds {
            ttl: cert.ttl.clone().unwrap_or_default(),
            min: format!("{}s", policy.min_ttl.whole_seconds()),
            max: format!("{}s", policy.max_ttl.whole_seconds()),
        });
    }
    let mut dns_names: Vec<String> = cert.dns_names.iter().map(|d| d.0.clone()).collect();
    dns_names.sort();
    dns_names.dedup();
    let request = LeafRequest {
        spiffe_id: spiffe_id(&policy.trust_domain, &namespace, &name),
        common_name: leaf_common_name(&spiffe_id(&policy.trust_domain, &namespace, &name)),
        namespace: namespace.clone(),
        dns_names,
        usages: mi.usages(),
        ttl,
        not_after_cap,
        extensions,
    };
    let renewal_fraction = cert
        .renewal_percent
        .map(|p| f64::from(p) / 100.0)
        .unwrap_or(policy.renewal_fraction);
    let inputs_hash = hash_inputs(
        &request,
        &name,
        cert.key_algorithm,
        mi.wants_kubernetes_access(),
    );
    Ok(ResolvedIdentity {
        request,
        key_algorithm: cert.key_algorithm,
        renewal_fraction,
        inputs_hash,
        identity_key: format!("{namespace}/{name}"),
    })
}

/// The hash of what shapes the certificate. `name` is the identity's name, hashed where the
/// common name once was: the CN became the SPIFFE ID (which is hashed anyway), and keeping the
/// hash lets certificates take the new subject at their next renewal rather than all at once.
fn hash_inputs(
    req: &LeafRequest,
    name: &str,
    key_algorithm: KeyAlgorithm,
    kubernetes_access: bool,
) -> String {
    let inputs = HashedInputs {
        spiffe_id: &req.spiffe_id,
        common_name: name,
        namespace: &req.namespace,
        dns_names: &req.dns_names,
        usages: req
            .usages
            .iter()
            .map(|u| match u {
                nhi_api::Usage::Client => "client",
                nhi_api::Usage::Server => "server",
            })
            .collect(),
        ttl_seconds: req.ttl.whole_seconds(),
        not_after_cap: req.not_after_cap.map(|t| t.unix_timestamp()),
        key_algorithm,
        extensions: req
            .extensions
            .iter()
            .map(|(oid, c)| (oid.clone(), hex::encode(c)))
            .collect(),
        kubernetes_access,
    };
    let json = serde_json::to_vec(&inputs).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use nhi_api::{CertificateSpec, DnsName, MachineIdentitySpec, Owner};

    fn policy() -> IssuancePolicy {
        IssuancePolicy {
            trust_domain: "example.org".into(),
            default_ttl: Duration::hours(1),
            min_ttl: Duration::minutes(5),
            max_ttl: Duration::hours(24),
            renewal_fraction: 2.0 / 3.0,
        }
    }

    fn mi(cert: CertificateSpec) -> MachineIdentity {
        let mut mi = MachineIdentity::new(
            "api",
            MachineIdentitySpec {
                owner: Owner {
                    team: "payments".into(),
                    contact: None,
                },
                workload_ref: None,
                review_by: None,
                on_review_lapse: None,
                certificate: cert,
                secret_name: "api-identity".into(),
                attributes: Default::default(),
                kubernetes_access: None,
                pod_certificates: None,
                delegation: None,
            },
        );
        mi.metadata.namespace = Some("pay".into());
        mi
    }

    #[test]
    fn defaults_come_from_the_policy() {
        let r = resolve_identity(&mi(CertificateSpec::default()), &policy(), vec![], None).unwrap();
        assert_eq!(r.request.spiffe_id, "spiffe://example.org/ns/pay/mi/api");
        assert_eq!(r.request.ttl, Duration::hours(1));
        assert!((r.renewal_fraction - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.identity_key, "pay/api");
    }

    #[test]
    fn ttl_outside_operator_bounds_is_a_spec_error() {
        let p = IssuancePolicy {
            max_ttl: Duration::hours(2),
            ..policy()
        };
        let e = resolve_identity(
            &mi(CertificateSpec {
                ttl: Some("3h".into()),
                ..Default::default()
            }),
            &p,
            vec![],
            None,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "TTLOutOfBounds");
        // The schema admits down to 10s; the operator's floor (5m here) refuses what is under it.
        let e = resolve_identity(
            &mi(CertificateSpec {
                ttl: Some("30s".into()),
                ..Default::default()
            }),
            &p,
            vec![],
            None,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "TTLOutOfBounds");
        let e = resolve_identity(
            &mi(CertificateSpec {
                ttl: Some("bogus".into()),
                ..Default::default()
            }),
            &p,
            vec![],
            None,
        )
        .unwrap_err();
        assert_eq!(e.reason(), "InvalidTTL");
    }

    #[test]
    fn hash_changes_with_what_shapes_the_certificate_only() {
        let base =
            resolve_identity(&mi(CertificateSpec::default()), &policy(), vec![], None).unwrap();
        let renewal_only = resolve_identity(
            &mi(CertificateSpec {
                renewal_percent: Some(50),
                ..Default::default()
            }),
            &policy(),
            vec![],
            None,
        )
        .unwrap();
        assert_eq!(base.inputs_hash, renewal_only.inputs_hash);
        let dns = resolve_identity(
            &mi(CertificateSpec {
                dns_names: vec![DnsName("a.example".into())],
                ..Default::default()
            }),
            &policy(),
            vec![],
            None,
        )
        .unwrap();
        assert_ne!(base.inputs_hash, dns.inputs_hash);
        let ext = resolve_identity(
            &mi(CertificateSpec::default()),
            &policy(),
            vec![(vec![2, 25, 1], vec![1])],
            None,
        )
        .unwrap();
        assert_ne!(base.inputs_hash, ext.inputs_hash);
    }
}
