//! Kubernetes client credentials for identities, pure: the user name, the certificate signing
//! request, which CSRs the operator may approve, and the kubeconfig it writes.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use time::Duration;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

/// The signer of Kubernetes API client certificates.
pub const SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The only usage requested and accepted.
pub const CLIENT_AUTH: &str = "client auth";
/// The shortest client certificate lifetime Kubernetes accepts.
pub const MIN_EXPIRATION_SECONDS: i32 = 600;

/// Why `field` gets nothing from an operator running without `--kubernetes-access`.
pub fn access_disabled(field: &str) -> String {
    format!(
        "{field} needs the operator to run with --kubernetes-access (Helm: kubernetesAccess.enabled=true)"
    )
}

/// The Kubernetes user of one issuance of an identity: `nhi:<namespace>:<name>:<issuance>`
/// (no groups), where the issuance is the last 16 hex digits of the identity certificate's
/// serial it was obtained with. Each issuance has a user of its own, so a RoleBinding that names
/// only the current one cuts off every earlier client certificate at once (a revoked one
/// included), and the apiserver's audit log names the certificate behind each request.
pub fn kube_user(namespace: &str, name: &str, serial_hex: &str) -> String {
    let serial = serial_hex.to_ascii_lowercase();
    let issuance = &serial[serial.len().saturating_sub(16)..];
    format!("nhi:{namespace}:{name}:{issuance}")
}

/// The requested client certificate lifetime: the identity's TTL, at least 600 s.
pub fn expiration_seconds(ttl: Duration) -> i32 {
    i32::try_from(ttl.whole_seconds())
        .unwrap_or(i32::MAX)
        .max(MIN_EXPIRATION_SECONDS)
}

/// How much later than asked for a signed client certificate may end: the signer's clock and
/// its rounding, nothing more.
pub const CLIENT_VALIDITY_SLACK: Duration = Duration::minutes(5);

/// Why a client certificate signed for a request made at `requested_at` with
/// `expiration_seconds`, and ending at `not_after`, is refused, if it is: a signer that ignores
/// `expirationSeconds` (the field is advisory) can issue a certificate for up to a year, which
/// no revocation of the identity could cut short.
pub fn overlong_client_certificate(
    not_after: time::OffsetDateTime,
    requested_at: time::OffsetDateTime,
    expiration_seconds: i32,
) -> Option<String> {
    let asked = requested_at + Duration::seconds(i64::from(expiration_seconds));
    (not_after > asked + CLIENT_VALIDITY_SLACK).then(|| {
        format!(
            "the signer issued a client certificate valid until {}, later than the {}s asked for \
             (until {}); it is not used",
            nhi_identity::timestamp::rfc3339(not_after),
            expiration_seconds,
            nhi_identity::timestamp::rfc3339(asked)
        )
    })
}

/// A PEM PKCS#10 request for `user` signed by `key`: subject CN only, no organisation (so no
/// groups), no extensions.
pub fn client_csr_pem(user: &str, key: &KeyPair) -> Result<String, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, user);
    params.distinguished_name = dn;
    params.serialize_request(key)?.pem()
}

/// Whether the operator may approve `csr` for `expected_user`: the Kubernetes client signer,
/// `client auth` only, and a request whose subject is exactly `CN=<expected_user>` (no other
/// attribute, so no group) with no requested extensions. Anything else is refused, with why.
pub fn approvable(csr: &CertificateSigningRequest, expected_user: &str) -> Result<(), String> {
    let spec = &csr.spec;
    if spec.signer_name != SIGNER {
        return Err(format!("signer {:?} is not {SIGNER}", spec.signer_name));
    }
    if spec.usages.as_deref() != Some(&[CLIENT_AUTH.to_string()][..]) {
        return Err(format!(
            "usages {:?} are not exactly [{CLIENT_AUTH:?}]",
            spec.usages
        ));
    }
    let block = pem::parse(&spec.request.0).map_err(|e| format!("the request is not PEM: {e}"))?;
    if block.tag() != "CERTIFICATE REQUEST" {
        return Err(format!(
            "the request is a {}, not a CERTIFICATE REQUEST",
            block.tag()
        ));
    }
    let (rest, req) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| format!("the request cannot be parsed: {e}"))?;
    if !rest.is_empty() {
        return Err("the request has trailing data".into());
    }
    req.verify_signature()
        .map_err(|e| format!("the request's self-signature does not verify: {e}"))?;
    let info = &req.certification_request_info;
    let attributes: Vec<_> = info.subject.iter_attributes().collect();
    let cn = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok());
    if attributes.len() != 1 || cn != Some(expected_user) {
        return Err(format!(
            "the subject {} is not exactly CN={expected_user}",
            info.subject
        ));
    }
    if req
        .requested_extensions()
        .is_some_and(|mut e| e.next().is_some())
    {
        return Err("the request asks for extensions".into());
    }
    Ok(())
}

/// Where the kubeconfig points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeEndpoint {
    /// The API server URL.
    pub server: String,
    /// PEM of the CA that signed the API server's certificate (none: the system roots).
    pub ca_pem: Option<String>,
}

/// A kubeconfig for `user` with an embedded client certificate and key, defaulting to
/// `namespace`.
pub fn kubeconfig_yaml(
    endpoint: &KubeEndpoint,
    user: &str,
    namespace: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<String, serde_yaml::Error> {
    use base64::Engine;
    let encode = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut cluster = serde_json::json!({"server": endpoint.server});
    if let Some(ca) = &endpoint.ca_pem {
        cluster["certificate-authority-data"] = encode(ca.as_bytes()).into();
    }
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": user, "user": {
            "client-certificate-data": encode(cert_pem.as_bytes()),
            "client-key-data": encode(key_pem.as_bytes()),
        }}],
        "contexts": [{"name": user, "context": {"cluster": "cluster", "user": user, "namespace": namespace}}],
        "current-context": user,
    });
    serde_yaml::to_string(&doc)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_certificate_longer_than_asked_for_is_refused() {
        let at = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        // As asked, or within the slack: used.
        assert_eq!(
            overlong_client_certificate(at + Duration::hours(1), at, 3600),
            None
        );
        let slack = at + Duration::hours(1) + CLIENT_VALIDITY_SLACK;
        assert_eq!(overlong_client_certificate(slack, at, 3600), None);
        // A signer that ignored expirationSeconds (a year): refused, and said why.
        let why = overlong_client_certificate(at + Duration::days(365), at, 3600).unwrap();
        assert!(why.contains("later than the 3600s asked for"), "{why}");
    }

    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;

    fn csr(request_pem: &str, usages: &[&str], signer: &str) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(request_pem.as_bytes().to_vec()),
                signer_name: signer.into(),
                usages: Some(usages.iter().map(|u| u.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn user_and_lifetime() {
        assert_eq!(
            kube_user("pay", "tf", "4A5B6C7D8E9F00112233445566778899"),
            "nhi:pay:tf:2233445566778899"
        );
        assert_ne!(
            kube_user("pay", "tf", "4a5b6c7d8e9f00112233445566778899"),
            kube_user("pay", "tf", "4a5b6c7d8e9f00112233445566778800"),
            "every issuance its own user"
        );
        assert_eq!(expiration_seconds(Duration::minutes(5)), 600);
        assert_eq!(expiration_seconds(Duration::hours(1)), 3600);
    }

    #[test]
    fn approves_only_the_exact_request_it_makes() {
        let key = KeyPair::generate().unwrap();
        let ours = client_csr_pem("nhi:pay:tf", &key).unwrap();
        assert_eq!(
            approvable(&csr(&ours, &[CLIENT_AUTH], SIGNER), "nhi:pay:tf"),
            Ok(())
        );
        // Someone else's user, other usages, another signer.
        assert!(approvable(&csr(&ours, &[CLIENT_AUTH], SIGNER), "nhi:pay:other").is_err());
        assert!(
            approvable(
                &csr(&ours, &[CLIENT_AUTH, "server auth"], SIGNER),
                "nhi:pay:tf"
            )
            .is_err()
        );
        assert!(
            approvable(
                &csr(&ours, &[CLIENT_AUTH], "kubernetes.io/kubelet-serving"),
                "nhi:pay:tf"
            )
            .is_err()
        );
        // A group (O=system:masters) smuggled into the subject.
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "nhi:pay:tf");
        dn.push(DnType::OrganizationName, "system:masters");
        params.distinguished_name = dn;
        let grouped = params.serialize_request(&key).unwrap().pem().unwrap();
        let err = approvable(&csr(&grouped, &[CLIENT_AUTH], SIGNER), "nhi:pay:tf").unwrap_err();
        assert!(err.contains("not exactly CN=nhi:pay:tf"), "{err}");
        // Requested extensions (SANs).
        let mut params = CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "nhi:pay:tf");
        let with_san = params.serialize_request(&key).unwrap().pem().unwrap();
        assert!(approvable(&csr(&with_san, &[CLIENT_AUTH], SIGNER), "nhi:pay:tf").is_err());
        assert!(approvable(&csr("garbage", &[CLIENT_AUTH], SIGNER), "nhi:pay:tf").is_err());
    }

    #[test]
    fn kubeconfig_embeds_the_credential() {
        let endpoint = KubeEndpoint {
            server: "https://127.0.0.1:6443".into(),
            ca_pem: Some("CA".into()),
        };
        let yaml = kubeconfig_yaml(&endpoint, "nhi:pay:tf", "pay", "CERT", "KEY").unwrap();
        let v: serde_json::Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(v["current-context"], "nhi:pay:tf");
        assert_eq!(
            v["clusters"][0]["cluster"]["certificate-authority-data"],
            "Q0E="
        );
        assert_eq!(v["users"][0]["user"]["client-key-data"], "S0VZ");
        assert_eq!(v["contexts"][0]["context"]["namespace"], "pay");
    }
}
