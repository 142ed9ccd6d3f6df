//! Obtains an identity's Kubernetes client certificate: a CSR for the
//! `kubernetes.io/kube-apiserver-client` signer, approved by the operator only after checking it
//! is exactly the request it made, then deleted once signed.

use std::fmt;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestCondition, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, ResourceExt};
use rand::RngCore;
use rcgen::PublicKeyData;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use nhi_api::{KeyAlgorithm, KubernetesAccessStatus, MachineIdentity};
use nhi_core::issue::keys::generate_key;
use nhi_core::issue::kube_client::{
    CLIENT_AUTH, KubeEndpoint, SIGNER, approvable, client_csr_pem, expiration_seconds, kube_user,
    kubeconfig_yaml, overlong_client_certificate,
};
use nhi_core::labels;

/// How long to wait for the signer.
const SIGNING_TIMEOUT: Duration = Duration::from_secs(15);

/// A Kubernetes client credential, ready for the identity Secret. `Debug` never shows the key.
pub struct KubeCredential {
    pub kubeconfig: String,
    pub status: KubernetesAccessStatus,
}

impl fmt::Debug for KubeCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeCredential")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Why no credential could be obtained. Reported as a condition and an Event; retried.
#[derive(Debug, thiserror::Error)]
pub enum KubeAccessError {
    #[error("creating the CertificateSigningRequest failed: {0}")]
    Create(kube::Error),
    #[error("the CertificateSigningRequest {name} was not approved: {message}")]
    NotApprovable { name: String, message: String },
    #[error("approving the CertificateSigningRequest {name} failed: {source}")]
    Approve { name: String, source: kube::Error },
    #[error("the signer {SIGNER} refused the CertificateSigningRequest {name}: {message}")]
    Refused { name: String, message: String },
    #[error("the signer {SIGNER} did not sign the CertificateSigningRequest {name} within {}s", SIGNING_TIMEOUT.as_secs())]
    Timeout { name: String },
    #[error("the signed client certificate cannot be used: {0}")]
    BadCertificate(String),
    #[error("{0}")]
    Overlong(String),
    #[error("the client key could not be generated: {0}")]
    Key(String),
    #[error("reading the CertificateSigningRequest failed: {0}")]
    Read(kube::Error),
}

impl KubeAccessError {
    /// Stable CamelCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            KubeAccessError::Create(_) | KubeAccessError::Read(_) => "CSRRequestFailed",
            KubeAccessError::NotApprovable { .. } => "CSRNotApprovable",
            KubeAccessError::Approve { .. } => "CSRApprovalFailed",
            KubeAccessError::Refused { .. } => "CSRRefused",
            KubeAccessError::Timeout { .. } => "CSRNotSigned",
            KubeAccessError::BadCertificate(_) | KubeAccessError::Key(_) => "CSRFailed",
            KubeAccessError::Overlong(_) => "ClientCertificateTooLong",
        }
    }
}

/// Obtains a client certificate for the identity's issuance whose certificate has serial
/// `serial_hex` (its user is that issuance's: see [`kube_user`]) and returns its kubeconfig.
pub async fn obtain_kube_credential(
    client: &Client,
    endpoint: &KubeEndpoint,
    mi: &MachineIdentity,
    ttl: time::Duration,
    serial_hex: &str,
) -> Result<KubeCredential, KubeAccessError> {
    let namespace = mi.namespace().unwrap_or_default();
    let user = kube_user(&namespace, &mi.name_any(), serial_hex);
    let csr_user = user.clone();
    let (key, request) = tokio::task::spawn_blocking(move || {
        let key = generate_key(KeyAlgorithm::EcdsaP256).map_err(|e| e.to_string())?;
        let request = client_csr_pem(&csr_user, &key).map_err(|e| e.to_string())?;
        Ok::<_, String>((key, request))
    })
    .await
    .map_err(|e| KubeAccessError::Key(e.to_string()))?
    .map_err(KubeAccessError::Key)?;

    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let requested_at = OffsetDateTime::now_utc();
    let mut suffix = [0u8; 4];
    rand::rng().fill_bytes(&mut suffix);
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(csr_name(&namespace, &mi.name_any(), &hex::encode(suffix))),
            labels: Some(
                [
                    (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
                    (labels::IDENTITY.to_string(), mi.name_any()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: SIGNER.to_string(),
            usages: Some(vec![CLIENT_AUTH.to_string()]),
            expiration_seconds: Some(expiration_seconds(ttl)),
            ..Default::default()
        },
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(KubeAccessError::Create)?;
    let name = created.name_any();
    let result = approve_and_wait(&api, &created, &user).await;
    // Completed or failed, the request is not needed any more.
    if let Err(e) = api.delete(&name, &DeleteParams::default()).await {
        tracing::debug!(csr = %name, error = %e, "deleting the CertificateSigningRequest failed");
    }
    let cert_pem = result?;
    let not_after = client_certificate_not_after(&cert_pem, &key)?;
    if let Some(why) = overlong_client_certificate(not_after, requested_at, expiration_seconds(ttl))
    {
        return Err(KubeAccessError::Overlong(why));
    }
    let kubeconfig = kubeconfig_yaml(endpoint, &user, &namespace, &cert_pem, &key.serialize_pem())
        .map_err(|e| KubeAccessError::BadCertificate(e.to_string()))?;
    Ok(KubeCredential {
        kubeconfig,
        status: KubernetesAccessStatus {
            user,
            client_certificate_not_after: nhi_identity::timestamp::rfc3339(not_after),
        },
    })
}

/// The name of an identity's CSR: readable, unique, within the 253-character limit.
fn csr_name(namespace: &str, name: &str, suffix: &str) -> String {
    let mut base = format!("nhi-{namespace}-{name}");
    base.truncate(240);
    format!("{}-{suffix}", base.trim_end_matches(['-', '.']))
}

/// Approves the request the operator just created (after checking it is exactly that request),
/// and waits for the signed certificate.
async fn approve_and_wait(
    api: &Api<CertificateSigningRequest>,
    created: &CertificateSigningRequest,
    user: &str,
) -> Result<String, KubeAccessError> {
    let name = created.name_any();
    // Re-read: approve the object as stored, and only the one this call created.
    let mut stored = api.get(&name).await.map_err(KubeAccessError::Read)?;
    if stored.metadata.uid != created.metadata.uid {
        return Err(KubeAccessError::NotApprovable {
            name,
            message: "it was replaced after it was created".into(),
        });
    }
    approvable(&stored, user).map_err(|message| KubeAccessError::NotApprovable {
        name: name.clone(),
        message,
    })?;
    let status = stored.status.get_or_insert_with(Default::default);
    status
        .conditions
        .get_or_insert_with(Vec::new)
        .push(CertificateSigningRequestCondition {
            type_: "Approved".into(),
            status: "True".into(),
            reason: Some("NhiOperatorApproved".into()),
            message: Some(format!(
                "nhi-operator approves the client certificate of its identity {user}"
            )),
            last_update_time: Some(Time(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        });
    api.replace_subresource("approval", &name, &PostParams::default(), &stored)
        .await
        .map_err(|source| KubeAccessError::Approve {
            name: name.clone(),
            source,
        })?;
    let deadline = tokio::time::Instant::now() + SIGNING_TIMEOUT;
    let mut delay = Duration::from_millis(50);
    loop {
        let csr = api.get(&name).await.map_err(KubeAccessError::Read)?;
        let status = csr.status.unwrap_or_default();
        if let Some(refusal) = status
            .conditions
            .iter()
            .flatten()
            .find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
        {
            return Err(KubeAccessError::Refused {
                name,
                message: refusal.message.clone().unwrap_or_default(),
            });
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            return String::from_utf8(cert.0)
                .map_err(|_| KubeAccessError::BadCertificate("not UTF-8 PEM".into()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(KubeAccessError::Timeout { name });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// The signed certificate's notAfter, after checking it is for our key.
fn client_certificate_not_after(
    cert_pem: &str,
    key: &rcgen::KeyPair,
) -> Result<OffsetDateTime, KubeAccessError> {
    let ders = nhi_identity::pem_chain::pem_certificates(cert_pem)
        .map_err(|e| KubeAccessError::BadCertificate(e.to_string()))?;
    let (_, cert) = X509Certificate::from_der(&ders[0])
        .map_err(|e| KubeAccessError::BadCertificate(e.to_string()))?;
    if cert.public_key().raw != key.subject_public_key_info() {
        return Err(KubeAccessError::BadCertificate(
            "the signed certificate is not for the requested key".into(),
        ));
    }
    Ok(cert.validity().not_after.to_datetime())
}

#[cfg(test)]
mod tests {
    use super::csr_name;

    #[test]
    fn csr_names_are_bounded() {
        assert_eq!(csr_name("pay", "tf", "0a1b2c3d"), "nhi-pay-tf-0a1b2c3d");
        let long = csr_name(&"n".repeat(63), &"m".repeat(253), "0a1b2c3d");
        assert!(long.len() <= 253, "{}", long.len());
    }
}
