//! Builds and signs an identity's leaf certificate (an X.509-SVID-compatible certificate).

use std::fmt;

use rcgen::{
    CertificateParams, CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PublicKeyData, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::ca::CertificateAuthority;
use crate::serial::random_serial;
use nhi_api::Usage;
use nhi_identity::certificate::{CertificateInfo, thumbprint};

/// How far notBefore is backdated to tolerate clock skew between machines.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::seconds(60);

/// Custom extensions of a certificate: (OID arcs, DER content) pairs.
pub type CustomExtensions = Vec<(Vec<u64>, Vec<u8>)>;

/// Everything that goes into an identity's certificate, as plain data.
#[derive(Clone, Debug, PartialEq)]
pub struct LeafRequest {
    /// The SPIFFE ID (the only URI SAN).
    pub spiffe_id: String,
    /// Subject common name: the SPIFFE ID when it fits (see [`leaf_common_name`]), else none.
    pub common_name: Option<String>,
    /// Subject organizational unit (the identity's namespace).
    pub namespace: String,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// Extended key usages.
    pub usages: Vec<Usage>,
    /// Requested lifetime.
    pub ttl: Duration,
    /// A hard upper bound on notAfter (for example the earliest expiry of a carried grant).
    pub not_after_cap: Option<OffsetDateTime>,
    /// Custom extensions (DER content with OID), for example the entitlements extension.
    pub extensions: CustomExtensions,
}

/// Why a certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(
        "the CA expires at {ca_not_after}, before the certificate would ({not_after}); rotate the CA or lower the ttl"
    )]
    CaExpiresTooSoon {
        ca_not_after: String,
        not_after: String,
    },
    #[error(
        "the requested validity is empty (notAfter {not_after} is not after notBefore {not_before})"
    )]
    EmptyValidity {
        not_before: String,
        not_after: String,
    },
    #[error("a DNS name or the SPIFFE ID is not a valid IA5 string: {0}")]
    BadName(String),
    #[error("signing the certificate failed: {0}")]
    Signing(rcgen::Error),
}

/// A freshly issued certificate with its key. `Debug` never shows the key.
pub struct IssuedCertificate {
    /// PEM of the leaf followed by the CA chain (`tls.crt`).
    pub chain_pem: String,
    /// PEM (PKCS#8) of the private key (`tls.key`).
    pub key_pem: String,
    /// DER of the leaf.
    pub leaf_der: Vec<u8>,
    /// Facts about the leaf, for status.
    pub info: CertificateInfo,
}

impl fmt::Debug for IssuedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCertificate")
            .field("info", &self.info)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The longest common name X.509 allows (RFC 5280's ub-common-name).
pub const MAX_COMMON_NAME: usize = 64;

/// The subject common name of an identity's leaf: its SPIFFE ID, or none when that is longer
/// than a common name may be. Never the bare identity name: PostgreSQL's `cert` authentication
/// and many proxies map the CN to a user, and an identity named `postgres` in any namespace
/// would then be `postgres`. A SPIFFE ID names the namespace and the trust domain; relying
/// parties should use the URI SAN anyway (the CN carries nothing the SAN does not).
pub fn leaf_common_name(spiffe_id: &str) -> Option<String> {
    (spiffe_id.len() <= MAX_COMMON_NAME).then(|| spiffe_id.to_string())
}

/// The SPIFFE ID of an identity: `spiffe://<trust-domain>/ns/<namespace>/mi/<name>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/mi/{name}")
}

/// Computes the validity window for a request at `now`, refusing one the CA cannot cover.
pub fn validity(
    req: &LeafRequest,
    ca_not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(OffsetDateTime, OffsetDateTime), IssueError> {
    // Certificates carry whole seconds.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let not_before = now - CLOCK_SKEW_ALLOWANCE;
    let mut not_after = now + req.ttl;
    if let Some(cap) = req.not_after_cap {
        not_after = not_after.min(cap.replace_nanosecond(0).unwrap_or(cap));
    }
    if not_after <= now {
        return Err(IssueError::EmptyValidity {
            not_before: nhi_identity::timestamp::rfc3339(not_before),
            not_after: nhi_identity::timestamp::rfc3339(not_after),
        });
    }
    if not_after > ca_not_after {
        return Err(IssueError::CaExpiresTooSoon {
            ca_not_after: nhi_identity::timestamp::rfc3339(ca_not_after),
            not_after: nhi_identity::timestamp::rfc3339(not_after),
        });
    }
    Ok((not_before, not_after))
}

/// Signs a leaf certificate for `key` with the CA. Pure apart from the random serial.
pub fn issue_leaf(
    ca: &CertificateAuthority,
    req: &LeafRequest,
    key: &KeyPair,
    now: OffsetDateTime,
) -> Result<IssuedCertificate, IssueError> {
    let signed = sign_leaf(ca, req, key, now)?;
    Ok(IssuedCertificate {
        chain_pem: format!("{}{}", signed.leaf_pem, ca.chain_pem()),
        key_pem: key.serialize_pem(),
        info: signed.info,
        leaf_der: signed.leaf_der,
    })
}

/// A leaf signed for a public key whose private key is elsewhere (with the caller, or on a node).
#[derive(Clone, Debug)]
pub struct SignedLeaf {
    /// PEM of the leaf alone.
    pub leaf_pem: String,
    /// DER of the leaf.
    pub leaf_der: Vec<u8>,
    /// Facts about the leaf, for status.
    pub info: CertificateInfo,
}

/// Signs a leaf certificate for `public_key` with the CA. Pure apart from the random serial.
pub fn sign_leaf(
    ca: &CertificateAuthority,
    req: &LeafRequest,
    public_key: &impl PublicKeyData,
    now: OffsetDateTime,
) -> Result<SignedLeaf, IssueError> {
    let (not_before, not_after) = validity(req, ca.not_after(), now)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(cn) = &req.common_name {
        dn.push(DnType::CommonName, cn.as_str());
    }
    dn.push(DnType::OrganizationalUnitName, req.namespace.as_str());
    params.distinguished_name = dn;
    // An end entity, said explicitly (basicConstraints cA:FALSE): no verifier may take it for a
    // CA, whatever its other extensions.
    params.is_ca = IsCa::ExplicitNoCa;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    let uri = req
        .spiffe_id
        .clone()
        .try_into()
        .map_err(|_| IssueError::BadName(req.spiffe_id.clone()))?;
    params.subject_alt_names.push(SanType::URI(uri));
    for name in &req.dns_names {
        let dns = name
            .clone()
            .try_into()
            .map_err(|_| IssueError::BadName(name.clone()))?;
        params.subject_alt_names.push(SanType::DnsName(dns));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = req
        .usages
        .iter()
        .map(|u| match u {
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        })
        .collect();
    params.use_authority_key_identifier_extension = true;
    for (oid, content) in &req.extensions {
        let mut ext = CustomExtension::from_oid_content(oid, content.clone());
        ext.set_criticality(false);
        params.custom_extensions.push(ext);
    }
    let cert = params
        .signed_by(public_key, ca.issuer())
        .map_err(IssueError::Signing)?;
    let leaf_der = cert.der().to_vec();
    let serial_hex = params
        .serial_number
        .as_ref()
        .map(|s| hex::encode(s.to_bytes()))
        .unwrap_or_default();
    Ok(SignedLeaf {
        leaf_pem: cert.pem(),
        info: CertificateInfo {
            serial_hex,
            thumbprint_sha256: thumbprint(&leaf_der),
            not_before,
            not_after,
        },
        leaf_der,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::issue::keys::generate_key;
    use x509_parser::prelude::*;

    fn ca() -> CertificateAuthority {
        let now = OffsetDateTime::now_utc();
        let m = CertificateAuthority::generate_root("t", Duration::days(30), now).unwrap();
        CertificateAuthority::from_material(&m, now).unwrap()
    }

    fn request() -> LeafRequest {
        LeafRequest {
            spiffe_id: spiffe_id("cluster.local", "payments", "api"),
            common_name: leaf_common_name(&spiffe_id("cluster.local", "payments", "api")),
            namespace: "payments".into(),
            dns_names: vec!["api.payments.svc".into()],
            usages: vec![Usage::Client, Usage::Server],
            ttl: Duration::hours(1),
            not_after_cap: None,
            extensions: vec![],
        }
    }

    #[test]
    fn leaf_has_exactly_one_uri_san_dns_names_and_usages() {
        let ca = ca();
        let key = generate_key(nhi_api::KeyAlgorithm::EcdsaP256).unwrap();
        let now = OffsetDateTime::now_utc();
        let issued = issue_leaf(&ca, &request(), &key, now).unwrap();
        let (_, cert) = X509Certificate::from_der(&issued.leaf_der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap().value;
        let uris: Vec<_> = san
            .general_names
            .iter()
            .filter_map(|g| {
                if let GeneralName::URI(u) = g {
                    Some(*u)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(uris, vec!["spiffe://cluster.local/ns/payments/mi/api"]);
        assert!(
            san.general_names
                .contains(&GeneralName::DNSName("api.payments.svc"))
        );
        let ku = cert.key_usage().unwrap().unwrap();
        assert!(ku.critical);
        assert!(ku.value.digital_signature());
        assert!(!ku.value.key_cert_sign());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && eku.server_auth);
        assert!(!cert.is_ca());
        // cA:FALSE said explicitly, and the CN is the SPIFFE ID, never the bare name.
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        let cns: Vec<_> = cert
            .subject()
            .iter_common_name()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(cns, vec!["spiffe://cluster.local/ns/payments/mi/api"]);
        let ous: Vec<_> = cert
            .subject()
            .iter_organizational_unit()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(ous, vec!["payments"]);
        assert_eq!(cert.raw_serial().len(), 16);
        assert_eq!(hex::encode(cert.raw_serial()), issued.info.serial_hex);
        assert!(
            cert.verify_signature(Some(
                &X509Certificate::from_der(ca.cert_der())
                    .unwrap()
                    .1
                    .public_key()
                    .clone()
            ))
            .is_ok()
        );
        let nb = cert.validity().not_before.to_datetime();
        assert!(nb <= now - Duration::seconds(59));
        assert_eq!(issued.info.thumbprint_sha256, thumbprint(&issued.leaf_der));
        assert!(issued.chain_pem.matches("BEGIN CERTIFICATE").count() == 2);
    }

    #[test]
    fn a_spiffe_id_too_long_for_a_common_name_leaves_the_cn_out() {
        let long = spiffe_id("cluster.local", &"n".repeat(40), &"i".repeat(40));
        assert_eq!(leaf_common_name(&long), None);
        let ca = ca();
        let key = generate_key(nhi_api::KeyAlgorithm::EcdsaP256).unwrap();
        let mut req = request();
        req.spiffe_id = long;
        req.common_name = None;
        let issued = issue_leaf(&ca, &req, &key, OffsetDateTime::now_utc()).unwrap();
        let (_, cert) = X509Certificate::from_der(&issued.leaf_der).unwrap();
        assert_eq!(cert.subject().iter_common_name().count(), 0);
        assert_eq!(cert.subject().iter_organizational_unit().count(), 1);
    }

    #[test]
    fn serials_differ_between_issuances() {
        let ca = ca();
        let key = generate_key(nhi_api::KeyAlgorithm::EcdsaP256).unwrap();
        let now = OffsetDateTime::now_utc();
        let a = issue_leaf(&ca, &request(), &key, now).unwrap();
        let b = issue_leaf(&ca, &request(), &key, now).unwrap();
        assert_ne!(a.info.serial_hex, b.info.serial_hex);
    }

    #[test]
    fn refuses_a_leaf_outliving_the_ca() {
        let ca = ca();
        let key = generate_key(nhi_api::KeyAlgorithm::EcdsaP256).unwrap();
        let mut req = request();
        req.ttl = Duration::days(31);
        let err = issue_leaf(&ca, &req, &key, OffsetDateTime::now_utc()).unwrap_err();
        assert!(matches!(err, IssueError::CaExpiresTooSoon { .. }), "{err}");
    }

    #[test]
    fn not_after_is_capped() {
        let now = OffsetDateTime::now_utc();
        let mut req = request();
        req.not_after_cap = Some(now + Duration::minutes(10));
        let (_, na) = validity(&req, now + Duration::days(1), now).unwrap();
        assert_eq!(
            na.unix_timestamp(),
            (now + Duration::minutes(10)).unix_timestamp()
        );
        assert_eq!(na.nanosecond(), 0);
        req.not_after_cap = Some(now - Duration::minutes(1));
        assert!(matches!(
            validity(&req, now + Duration::days(1), now),
            Err(IssueError::EmptyValidity { .. })
        ));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let ca = ca();
        let key = generate_key(nhi_api::KeyAlgorithm::Ed25519).unwrap();
        let issued = issue_leaf(&ca, &request(), &key, OffsetDateTime::now_utc()).unwrap();
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    }
}
