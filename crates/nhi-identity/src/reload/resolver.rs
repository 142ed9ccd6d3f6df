//! The rustls side of a reloading identity: a certificate resolver and trust verifiers that read
//! the current identity from an `ArcSwap` at every handshake, so configs built once keep working
//! and new handshakes use whatever was swapped in last.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::validate::{IdentityInfo, ValidatedIdentity};

/// Everything a handshake needs from the current identity: swapped as one unit.
pub struct ServingIdentity {
    pub certified_key: Arc<CertifiedKey>,
    server_verifier: Arc<WebPkiServerVerifier>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    pub info: IdentityInfo,
}

impl fmt::Debug for ServingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingIdentity")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl ServingIdentity {
    /// Builds the verifiers for a validated identity's trust bundle.
    pub fn build(
        identity: ValidatedIdentity,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(identity.roots.clone(), provider.clone())
                .build()?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(identity.roots, provider.clone())
                .build()?;
        Ok(ServingIdentity {
            certified_key: identity.certified_key,
            server_verifier,
            client_verifier,
            info: identity.info,
        })
    }
}

/// The identity currently served, shared by every config built from it.
pub type CurrentIdentity = Arc<ArcSwap<ServingIdentity>>;

/// Presents the current certificate, as a server and as a client.
#[derive(Debug)]
pub struct IdentityResolver {
    pub current: CurrentIdentity,
}

impl ResolvesServerCert for IdentityResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified_key.clone())
    }
}

impl ResolvesClientCert for IdentityResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().certified_key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Verifies servers against the current trust bundle (WebPKI, with host name checks).
#[derive(Debug)]
pub struct ReloadingServerVerifier {
    pub current: CurrentIdentity,
    /// The provider's signature algorithms: handshake signatures do not depend on the bundle.
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ReloadingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        self.current.load().server_verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Verifies clients against the current trust bundle (WebPKI). Sends no CA hints: the bundle
/// can change under a live config.
#[derive(Debug)]
pub struct ReloadingClientVerifier {
    pub current: CurrentIdentity,
    /// Whether a client without a certificate is refused.
    pub mandatory: bool,
    /// The provider's signature algorithms: handshake signatures do not depend on the bundle.
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ReloadingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.current
            .load()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
