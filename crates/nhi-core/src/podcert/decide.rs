//! The decision on one PodCertificateRequest, as plain data: the identity that covers the pod,
//! whether it stands, whether the key and lifetime fit, and so issue, or deny with a stable reason.

use time::{Duration, OffsetDateTime};

use super::MIN_LIFETIME;
use super::key_type::{KubeletKeyType, kubelet_key_type};
use crate::issue::leaf::CLOCK_SKEW_ALLOWANCE;
use crate::issue::renewal::plan_renewal;
use nhi_api::KeyAlgorithm;

/// Reason: no MachineIdentity covers the pod's ServiceAccount.
pub const NO_IDENTITY: &str = "NoIdentity";
/// Reason: more than one MachineIdentity covers the pod's ServiceAccount.
pub const AMBIGUOUS_IDENTITY: &str = "AmbiguousIdentity";
/// Reason: the identity is being deleted.
pub const IDENTITY_DELETED: &str = "IdentityDeleted";
/// Reason: the identity is suspended (its review lapsed).
pub const IDENTITY_SUSPENDED: &str = "IdentitySuspended";
/// Reason (defined by the Kubernetes API): the key type is not the identity's.
pub const UNSUPPORTED_KEY_TYPE: &str = "UnsupportedKeyType";
/// Reason: no lifetime fits both the identity's and the request's bounds.
pub const TTL_OUT_OF_BOUNDS: &str = "TTLOutOfBounds";
/// Reason: the stub CSR cannot be used.
pub const BAD_REQUEST: &str = "BadRequest";
/// Reason: the pod the request names is gone, or is not the one running (uid, ServiceAccount or
/// node differ), or has no volume for this signer.
pub const POD_MISMATCH: &str = "PodMismatch";
/// Reason: the request carries `unverifiedUserAnnotations`; this signer recognises none (the API
/// asks signers to deny keys they do not know).
pub const UNRECOGNIZED_ANNOTATIONS: &str = "UnrecognizedUserAnnotations";
/// Reason (Failed): the CA could not sign the certificate.
pub const SIGNING_FAILED: &str = "SigningFailed";
/// Reason (Failed): the apiserver refused the answer (its validation; the message says why).
pub const CERTIFICATE_REJECTED: &str = "CertificateRejected";

/// A MachineIdentity of the request's namespace that covers a ServiceAccount's pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant {
    pub name: String,
    /// `spec.podCertificates.serviceAccountName`.
    pub service_account: String,
}

/// Which identity covers a pod running as `service_account`, among its namespace's claimants.
pub fn bind<'a>(service_account: &str, claimants: &'a [Claimant]) -> Result<&'a Claimant, Denial> {
    let mut matching = claimants
        .iter()
        .filter(|c| c.service_account == service_account);
    match (matching.next(), matching.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(Denial::new(
            NO_IDENTITY,
            format!(
                "no MachineIdentity in this namespace covers ServiceAccount {service_account} \
                 (spec.podCertificates.serviceAccountName)"
            ),
        )),
        (Some(_), Some(_)) => {
            let mut names: Vec<&str> = claimants
                .iter()
                .filter(|c| c.service_account == service_account)
                .map(|c| c.name.as_str())
                .collect();
            names.sort_unstable();
            Err(Denial::new(
                AMBIGUOUS_IDENTITY,
                format!(
                    "MachineIdentities {} all cover ServiceAccount {service_account}; a pod gets \
                     at most one identity: keep one",
                    names.join(", ")
                ),
            ))
        }
    }
}

/// A denial: the stable reason and a message for the pod's author.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    pub reason: &'static str,
    pub message: String,
}

impl Denial {
    pub fn new(reason: &'static str, message: String) -> Denial {
        Denial { reason, message }
    }
}

/// Where the bound identity stands, as the identity controller would judge it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Standing {
    /// Being deleted.
    pub deleting: bool,
    /// Suspended, and why (its review lapsed).
    pub suspended: Option<String>,
    /// What its namespace's policy, or its own spec, forbids: (reason, message).
    pub refused: Option<(&'static str, String)>,
}

/// The request, as far as the decision needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The key the kubelet generated, or why it cannot be read.
    pub key: Result<KubeletKeyType, String>,
    /// `spec.maxExpirationSeconds` (the apiserver defaults it to 24 h).
    pub max_expiration: Duration,
}

/// What to issue: the certificate's lifetime from the moment of signing (its notBefore is
/// backdated by the usual clock-skew allowance besides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    pub ttl: Duration,
}

/// Decides on a request bound to `identity` (its name, key algorithm and TTL), which stands
/// (see [`standing_denial`] for one that does not): the key, then the lifetime.
pub fn decide(
    identity: &str,
    key_algorithm: KeyAlgorithm,
    identity_ttl: Duration,
    request: &Request,
) -> Result<Grant, Denial> {
    check_key(identity, key_algorithm, &request.key)?;
    lifetime(identity, identity_ttl, request.max_expiration).map(|ttl| Grant { ttl })
}

/// The denial an identity's standing alone implies (None: it stands).
pub fn standing_denial(identity: &str, standing: &Standing) -> Option<Denial> {
    if standing.deleting {
        return Some(Denial::new(
            IDENTITY_DELETED,
            format!("MachineIdentity {identity} is being deleted"),
        ));
    }
    if let Some(why) = &standing.suspended {
        return Some(Denial::new(
            IDENTITY_SUSPENDED,
            format!("MachineIdentity {identity} is suspended: {why}"),
        ));
    }
    standing.refused.as_ref().map(|(reason, message)| {
        Denial::new(reason, format!("MachineIdentity {identity}: {message}"))
    })
}

/// The key must be the identity's algorithm; the message names the keyType that would be.
fn check_key(
    identity: &str,
    alg: KeyAlgorithm,
    key: &Result<KubeletKeyType, String>,
) -> Result<(), Denial> {
    let key = key
        .as_ref()
        .map_err(|why| Denial::new(BAD_REQUEST, why.clone()))?;
    let wanted = kubelet_key_type(alg);
    if wanted.as_ref() == Some(key) {
        return Ok(());
    }
    // The algorithm as spec.certificate.keyAlgorithm spells it.
    let spelled = serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{alg:?}"));
    let hint = match wanted {
        Some(w) => format!("set keyType: {} in the podCertificate volume", w.name()),
        None => format!(
            "the kubelet cannot generate {spelled} keys: give the identity another \
             spec.certificate.keyAlgorithm"
        ),
    };
    Err(Denial::new(
        UNSUPPORTED_KEY_TYPE,
        format!(
            "MachineIdentity {identity} issues {spelled} keys, the request's is {}; {hint}",
            key.name()
        ),
    ))
}

/// The identity's TTL, shortened to fit `max_expiration` (which bounds the certificate's whole
/// validity, backdating included); refused when that leaves less than Kubernetes' minimum of an
/// hour.
fn lifetime(identity: &str, ttl: Duration, max_expiration: Duration) -> Result<Duration, Denial> {
    let ttl = ttl.min(max_expiration - CLOCK_SKEW_ALLOWANCE);
    if ttl + CLOCK_SKEW_ALLOWANCE < MIN_LIFETIME {
        return Err(Denial::new(
            TTL_OUT_OF_BOUNDS,
            format!(
                "MachineIdentity {identity} allows certificates of {}s at most here (its ttl, and \
                 the request's maxExpirationSeconds {}), below the {}s Kubernetes requires of pod \
                 certificates",
                ttl.whole_seconds().max(0),
                max_expiration.whole_seconds(),
                MIN_LIFETIME.whole_seconds()
            ),
        ));
    }
    Ok(ttl)
}

/// How long a request with no identity is held before it is denied: a pod and the identity that
/// covers it are often applied together, and a denial is final for the pod.
pub const NO_IDENTITY_GRACE: Duration = Duration::seconds(20);

/// Kubernetes keeps `beginRefreshAt` at least this far from either end of the validity.
pub const REFRESH_MARGIN: Duration = Duration::minutes(10);

/// When the kubelet should begin refreshing a certificate valid from `not_before` to
/// `not_after`: at the identity's renewal fraction with its jitter (`jitter_key`), kept at least
/// [`REFRESH_MARGIN`] from both ends as Kubernetes requires.
pub fn begin_refresh_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    fraction: f64,
    jitter_key: &str,
) -> OffsetDateTime {
    let planned = plan_renewal(not_before, not_after, fraction, jitter_key);
    let at = planned
        .min(not_after - REFRESH_MARGIN)
        .max(not_before + REFRESH_MARGIN);
    at.replace_nanosecond(0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimant(name: &str, sa: &str) -> Claimant {
        Claimant {
            name: name.into(),
            service_account: sa.into(),
        }
    }

    fn request(key: KubeletKeyType, max: Duration) -> Request {
        Request {
            key: Ok(key),
            max_expiration: max,
        }
    }

    #[test]
    fn refresh_keeps_ten_minutes_from_either_end() {
        let nb = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let at = begin_refresh_at(nb, nb + Duration::hours(1), 2.0 / 3.0, "shop/web/pod-1");
        let secs = (at - nb).whole_seconds();
        assert!((2200..=2700).contains(&secs), "{secs}");
        assert_eq!(at.nanosecond(), 0);
        let early = begin_refresh_at(nb, nb + Duration::hours(1), 0.1, "k");
        assert_eq!(early, nb + REFRESH_MARGIN);
        let late = begin_refresh_at(nb, nb + Duration::hours(1), 0.95, "k");
        assert_eq!(late, nb + Duration::minutes(50));
    }

    #[test]
    fn a_service_account_binds_to_its_one_identity_or_is_denied_clearly() {
        let all = [claimant("web", "web-sa"), claimant("api", "api-sa")];
        assert_eq!(bind("web-sa", &all).unwrap().name, "web");
        let none = bind("other", &all).unwrap_err();
        assert_eq!(none.reason, NO_IDENTITY);
        assert!(
            none.message.contains("ServiceAccount other"),
            "{}",
            none.message
        );
        let twice = [claimant("b", "sa"), claimant("a", "sa")];
        let ambiguous = bind("sa", &twice).unwrap_err();
        assert_eq!(ambiguous.reason, AMBIGUOUS_IDENTITY);
        assert!(ambiguous.message.contains("a, b"), "{}", ambiguous.message);
    }

    #[test]
    fn each_standing_that_is_not_good_has_its_denial() {
        let suspended = Standing {
            suspended: Some("reviewBy 2026-01-01 lapsed".into()),
            ..Standing::default()
        };
        let d = standing_denial("web", &suspended);
        assert_eq!(d.unwrap().reason, IDENTITY_SUSPENDED);
        let deleting = Standing {
            deleting: true,
            ..Standing::default()
        };
        let d = standing_denial("web", &deleting);
        assert_eq!(d.unwrap().reason, IDENTITY_DELETED);
        let refused = Standing {
            refused: Some(("PolicyDenied", "dnsNames not allowed".into())),
            ..Standing::default()
        };
        let d = standing_denial("web", &refused);
        assert_eq!(d.unwrap().reason, "PolicyDenied");
        assert_eq!(standing_denial("web", &Standing::default()), None);
    }

    #[test]
    fn another_key_type_is_denied_with_the_one_that_would_do() {
        let d = decide(
            "web",
            KeyAlgorithm::EcdsaP256,
            Duration::hours(1),
            &request(KubeletKeyType::Ed25519, Duration::hours(24)),
        )
        .unwrap_err();
        assert_eq!(d.reason, UNSUPPORTED_KEY_TYPE);
        assert!(
            d.message.contains("issues ECDSA-P256 keys"),
            "{}",
            d.message
        );
        assert!(d.message.contains("keyType: ECDSAP256"), "{}", d.message);
        let d = decide(
            "web",
            KeyAlgorithm::Rsa2048,
            Duration::hours(1),
            &request(KubeletKeyType::Rsa3072, Duration::hours(24)),
        )
        .unwrap_err();
        assert!(d.message.contains("cannot generate"), "{}", d.message);
        let unreadable = Request {
            key: Err("the stub PKCS#10 request does not parse".into()),
            max_expiration: Duration::hours(24),
        };
        let d = decide(
            "web",
            KeyAlgorithm::EcdsaP256,
            Duration::hours(1),
            &unreadable,
        );
        assert_eq!(d.unwrap_err().reason, BAD_REQUEST);
    }

    #[test]
    fn the_lifetime_is_the_identity_ttl_within_the_request_and_at_least_an_hour() {
        let key = KubeletKeyType::EcdsaP256;
        let issue = |ttl: Duration, max: Duration| {
            decide(
                "web",
                KeyAlgorithm::EcdsaP256,
                ttl,
                &request(key.clone(), max),
            )
        };
        assert_eq!(
            issue(Duration::hours(2), Duration::hours(24)).unwrap().ttl,
            Duration::hours(2)
        );
        // The whole validity (backdating included) stays within maxExpirationSeconds.
        let short = issue(Duration::hours(24), Duration::hours(1)).unwrap().ttl;
        assert_eq!(short + CLOCK_SKEW_ALLOWANCE, Duration::hours(1));
        let d = issue(Duration::minutes(30), Duration::hours(24)).unwrap_err();
        assert_eq!(d.reason, TTL_OUT_OF_BOUNDS);
        assert!(d.message.contains("1800s"), "{}", d.message);
    }
}
