//! The rustls side of a reloading identity: a certificate resolver and trust verifiers that read
//! the current identity from an `ArcSwap` at every handshake, so configs built once keep working
//! and new handshakes use whatever was swapped in last (certificate, trust roots and CRLs).

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
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use super::revocation::{PeerRevocation, RevocationStatus};
use super::validate::{IdentityInfo, ValidatedIdentity};
use crate::verify::{RevocationList, VerifyError, check_ancestors};

/// Everything a handshake needs from the current identity and CRLs: swapped as one unit.
pub struct ServingIdentity {
    pub certified_key: Arc<CertifiedKey>,
    pub info: IdentityInfo,
    /// How the verifiers below check peers' revocation.
    pub revocation: RevocationStatus,
    roots: Arc<RootCertStore>,
    peers: PeerVerifiers,
}

/// How peers are verified: WebPKI against the bundle (and CRLs), or not at all because
/// revocation must be checked and cannot be.
enum PeerVerifiers {
    WebPki {
        server: Arc<WebPkiServerVerifier>,
        client: Arc<dyn ClientCertVerifier>,
        /// The same CRLs, for the ancestors of a task certificate (a client): a task dies with
        /// every certificate that delegated it. None when revocation is not checked.
        ancestors: Option<Arc<RevocationList>>,
    },
    RefuseAll,
}

impl fmt::Debug for ServingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingIdentity")
            .field("info", &self.info)
            .field("revocation", &self.revocation)
            .finish_non_exhaustive()
    }
}

impl ServingIdentity {
    /// Builds the verifiers for a validated identity's trust bundle, checking peers' revocation
    /// as `revocation` says: with CRLs, only the end entity is checked (chains are leaf to
    /// root), a peer whose issuer has no CRL is refused, and so is every peer once a CRL is past
    /// its nextUpdate.
    pub fn build(
        identity: ValidatedIdentity,
        revocation: &PeerRevocation,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let roots = identity.roots;
        let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone());
        let client = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
        // `Crls` always holds at least one CRL (rustls checks nothing with none), and `from_ders`
        // refuses none. The CRLs were validated before they got here; should they not read
        // again, every peer is refused (a task is never accepted with its ancestors unchecked).
        let crls = match revocation {
            PeerRevocation::Crls(crls) => RevocationList::from_ders(&crls.ders)
                .ok()
                .map(|list| (crls, Arc::new(list))),
            PeerRevocation::NotChecked | PeerRevocation::Unavailable(_) => None,
        };
        let peers = match (revocation, crls) {
            (PeerRevocation::NotChecked, _) => PeerVerifiers::WebPki {
                server: server.build()?,
                client: client.build()?,
                ancestors: None,
            },
            (_, Some((crls, list))) => PeerVerifiers::WebPki {
                server: server
                    .with_crls(crls.ders.iter().cloned())
                    .only_check_end_entity_revocation()
                    .enforce_revocation_expiration()
                    .build()?,
                client: client
                    .with_crls(crls.ders.iter().cloned())
                    .only_check_end_entity_revocation()
                    .enforce_revocation_expiration()
                    .build()?,
                ancestors: Some(list),
            },
            (PeerRevocation::Crls(_) | PeerRevocation::Unavailable(_), None) => {
                PeerVerifiers::RefuseAll
            }
        };
        Ok(ServingIdentity {
            certified_key: identity.certified_key,
            info: identity.info,
            revocation: revocation.status(),
            roots,
            peers,
        })
    }

    /// The same identity with verifiers checking revocation as `revocation` says.
    pub fn with_revocation(
        &self,
        revocation: &PeerRevocation,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, rustls::server::VerifierBuilderError> {
        let identity = ValidatedIdentity {
            certified_key: self.certified_key.clone(),
            roots: self.roots.clone(),
            info: self.info.clone(),
        };
        Self::build(identity, revocation, provider)
    }
}

/// What a peer gets when revocation must be checked and cannot be.
fn revocation_unavailable() -> Error {
    Error::InvalidCertificate(CertificateError::UnknownRevocationStatus)
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

/// Verifies servers against the current trust bundle and CRLs (WebPKI, with host name checks).
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
        match &self.current.load().peers {
            PeerVerifiers::WebPki { server, .. } => server.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            PeerVerifiers::RefuseAll => Err(revocation_unavailable()),
        }
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

/// Verifies clients against the current trust bundle and CRLs (WebPKI). Sends no CA hints: the
/// bundle can change under a live config.
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
        match &self.current.load().peers {
            PeerVerifiers::WebPki {
                client, ancestors, ..
            } => {
                let verified = client.verify_client_cert(end_entity, intermediates, now)?;
                if let Some(list) = ancestors {
                    check_ancestors(end_entity, list).map_err(|e| match e {
                        VerifyError::AncestorRevoked(_) => {
                            Error::InvalidCertificate(CertificateError::Revoked)
                        }
                        other => Error::InvalidCertificate(CertificateError::Other(
                            rustls::OtherError(Arc::new(other)),
                        )),
                    })?;
                }
                Ok(verified)
            }
            PeerVerifiers::RefuseAll => Err(revocation_unavailable()),
        }
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
