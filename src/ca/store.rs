//! Loads the CA from its Secret in the operator's namespace, or bootstraps one race-safely.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use time::{Duration, OffsetDateTime};
use tracing::{info, warn};

use super::rotation_state::{SecretText, keys};
use super::{CaError, CaMaterial, CertificateAuthority};
use nhi_core::labels;

/// Errors loading or bootstrapping the CA through the Kubernetes API.
#[derive(Debug, thiserror::Error)]
pub enum CaStoreError {
    #[error("reading or writing the CA Secret {namespace}/{name} failed: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the CA Secret {namespace}/{name} is not usable: {source}")]
    Invalid {
        namespace: String,
        name: String,
        #[source]
        source: CaError,
    },
    #[error("generating the CA key failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Where the CA lives and how a bootstrapped one is made.
#[derive(Clone, Debug)]
pub struct CaLocation {
    pub namespace: String,
    pub secret_name: String,
    pub bootstrap_lifetime: Duration,
    pub common_name: String,
}

/// Loads the CA Secret, or creates a self-signed root when none exists. Two operators starting at
/// once end with the same CA: creation is a create-if-absent, and the loser reads the winner's.
pub async fn load_or_bootstrap(
    client: Client,
    loc: &CaLocation,
) -> Result<CertificateAuthority, CaStoreError> {
    let api: Api<Secret> = Api::namespaced(client, &loc.namespace);
    let api_err = |source| CaStoreError::Api {
        namespace: loc.namespace.clone(),
        name: loc.secret_name.clone(),
        source,
    };
    if let Some(secret) = api.get_opt(&loc.secret_name).await.map_err(api_err)? {
        return load(&secret, loc);
    }
    let (name, lifetime) = (loc.common_name.clone(), loc.bootstrap_lifetime);
    let material = tokio::task::spawn_blocking(move || {
        CertificateAuthority::generate_root(&name, lifetime, OffsetDateTime::now_utc())
    })
    .await?
    .map_err(|source| CaStoreError::Invalid {
        namespace: loc.namespace.clone(),
        name: loc.secret_name.clone(),
        source,
    })?;
    let secret = ca_secret(loc, &material);
    match api.create(&PostParams::default(), &secret).await {
        Ok(created) => {
            info!(namespace = %loc.namespace, name = %loc.secret_name, "bootstrapped a new root CA");
            load(&created, loc)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            info!(namespace = %loc.namespace, name = %loc.secret_name, "another operator created the CA first; using it");
            let winner = api.get(&loc.secret_name).await.map_err(api_err)?;
            load(&winner, loc)
        }
        Err(e) => Err(api_err(e)),
    }
}

/// Loads the CA from its Secret: the signing CA and, during a rotation, the retiring one (which
/// is left out once it has expired: nothing it signed is valid any more).
pub fn load(secret: &Secret, loc: &CaLocation) -> Result<CertificateAuthority, CaStoreError> {
    let invalid = |source| CaStoreError::Invalid {
        namespace: loc.namespace.clone(),
        name: loc.secret_name.clone(),
        source,
    };
    let data = secret_text(secret);
    let now = OffsetDateTime::now_utc();
    let material = CaMaterial {
        cert_chain_pem: data
            .get(keys::TLS_CRT)
            .cloned()
            .ok_or_else(|| invalid(CaError::MissingKey("tls.crt")))?,
        key_pem: data
            .get(keys::TLS_KEY)
            .cloned()
            .ok_or_else(|| invalid(CaError::MissingKey("tls.key")))?,
        trust_bundle_pem: data.get(keys::CA_CRT).cloned(),
    };
    let mut ca = CertificateAuthority::from_material(&material, now).map_err(invalid)?;
    if let Some(retiring) = companion(&data, keys::RETIRING_CRT, keys::RETIRING_KEY, now) {
        ca = ca.with_retiring(retiring);
    }
    if let Some(next) = companion(&data, keys::NEXT_CRT, keys::NEXT_KEY, now) {
        ca = ca.with_next(next);
    }
    Ok(ca)
}

/// The retiring or next CA of a rotation, from its keys in the CA Secret; None when absent or
/// not usable (an expired retiring CA: nothing it signed is valid any more).
fn companion(
    data: &SecretText,
    crt: &str,
    key: &str,
    now: OffsetDateTime,
) -> Option<CertificateAuthority> {
    let material = CaMaterial {
        cert_chain_pem: data.get(crt)?.clone(),
        key_pem: data.get(key)?.clone(),
        trust_bundle_pem: None,
    };
    match CertificateAuthority::from_material(&material, now) {
        Ok(ca) => Some(ca),
        Err(e) => {
            warn!(error = %e, key = crt, "a CA of the rotation in the CA Secret is not usable; it signs no CRL");
            None
        }
    }
}

/// The CA Secret's keys as text (the PEM it holds).
pub fn secret_text(secret: &Secret) -> SecretText {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

fn ca_secret(loc: &CaLocation, material: &CaMaterial) -> Secret {
    let mut data = BTreeMap::new();
    data.insert(
        "tls.crt".to_string(),
        ByteString(material.cert_chain_pem.clone().into_bytes()),
    );
    data.insert(
        "tls.key".to_string(),
        ByteString(material.key_pem.clone().into_bytes()),
    );
    data.insert(
        "ca.crt".to_string(),
        ByteString(material.cert_chain_pem.clone().into_bytes()),
    );
    Secret {
        metadata: ObjectMeta {
            name: Some(loc.secret_name.clone()),
            namespace: Some(loc.namespace.clone()),
            labels: Some(labels::ca_labels()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".to_string()),
        data: Some(data),
        ..Default::default()
    }
}
