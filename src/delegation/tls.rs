//! The endpoint's TLS: a serving certificate signed by the CA (for the names clients dial), and
//! client certificates required and chained to the CA's trust bundle. Both are made again when
//! the signing CA changes (a rotation) and when the serving certificate is half through its life.

use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;
use rustls::server::WebPkiClientVerifier;
use time::{Duration, OffsetDateTime};
use tokio_rustls::TlsAcceptor;

use nhi_api::{KeyAlgorithm, Usage};
use nhi_core::ca::CertificateAuthority;
use nhi_core::issue::keys::generate_key;
use nhi_core::issue::leaf::{LeafRequest, issue_leaf};
use nhi_identity::pem_chain::root_store;
use nhi_identity::verify::{TrustBundle, certificates_from_pem};

use crate::controller::signing_ca::SigningCa;

/// How long the serving certificate lives (at most: never past the CA).
const SERVING_TTL: Duration = Duration::hours(24);

/// What the endpoint serves with now.
pub struct Served {
    pub acceptor: TlsAcceptor,
    /// The roots clients are verified against (the CA's bundle), for the handler's checks.
    pub bundle: Arc<TrustBundle>,
    /// The same bundle, PEM (what a child gets as `ca.crt`).
    pub bundle_pem: Arc<str>,
    ca: Arc<CertificateAuthority>,
    renew_at: OffsetDateTime,
}

/// Makes and keeps the TLS configuration.
pub struct TlsSource {
    ca: SigningCa,
    /// The serving certificate's SPIFFE ID (not an identity's: no relying service takes it for one).
    spiffe_id: String,
    operator_namespace: String,
    dns_names: Vec<String>,
    current: tokio::sync::Mutex<Option<Arc<Served>>>,
}

impl TlsSource {
    pub fn new(
        ca: SigningCa,
        trust_domain: &str,
        operator_namespace: &str,
        dns_names: Vec<String>,
    ) -> Self {
        TlsSource {
            ca,
            spiffe_id: format!(
                "spiffe://{trust_domain}/ns/{operator_namespace}/sa/nhi-operator-delegation"
            ),
            operator_namespace: operator_namespace.into(),
            dns_names,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The configuration to serve with: the last one while its CA signs and its certificate is
    /// young, else a new one.
    pub async fn current(&self) -> Result<Arc<Served>, String> {
        let ca = self.ca.current();
        let mut slot = self.current.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(served) = slot.as_ref()
            && Arc::ptr_eq(&served.ca, &ca)
            && now < served.renew_at
        {
            return Ok(served.clone());
        }
        let key = tokio::task::spawn_blocking(|| generate_key(KeyAlgorithm::EcdsaP256))
            .await
            .map_err(|e| format!("key generation stopped: {e}"))?
            .map_err(|e| format!("cannot generate the serving key: {e}"))?;
        let request = LeafRequest {
            spiffe_id: self.spiffe_id.clone(),
            common_name: Some("nhi-operator delegation endpoint".into()),
            namespace: self.operator_namespace.clone(),
            dns_names: self.dns_names.clone(),
            usages: vec![Usage::Server],
            ttl: SERVING_TTL,
            not_after_cap: Some(ca.not_after()),
            extensions: vec![],
        };
        let issued = issue_leaf(&ca, &request, &key, now)
            .map_err(|e| format!("cannot sign the serving certificate: {e}"))?;
        let lifetime = issued.info.not_after - now;
        let served = Arc::new(Served {
            acceptor: TlsAcceptor::from(Arc::new(server_config(
                &issued.chain_pem,
                PrivateKeyDer::Pkcs8(key.serialize_der().into()),
                ca.trust_bundle_pem(),
            )?)),
            bundle: Arc::new(
                TrustBundle::from_pem(ca.trust_bundle_pem()).map_err(|e| e.to_string())?,
            ),
            bundle_pem: Arc::from(ca.trust_bundle_pem()),
            renew_at: now + lifetime / 2,
            ca,
        });
        tracing::info!(
            not_after = %nhi_identity::timestamp::rfc3339(issued.info.not_after),
            names = ?self.dns_names,
            "delegation endpoint: serving certificate signed"
        );
        *slot = Some(served.clone());
        Ok(served)
    }
}

/// A server config presenting `chain_pem` and requiring clients chained to `bundle_pem`.
fn server_config(
    chain_pem: &str,
    key: PrivateKeyDer<'static>,
    bundle_pem: &str,
) -> Result<rustls::ServerConfig, String> {
    let chain = certificates_from_pem(chain_pem).map_err(|e| e.to_string())?;
    let roots = root_store(bundle_pem).map_err(|e| format!("the trust bundle: {e}"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("the client verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| format!("the serving certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
