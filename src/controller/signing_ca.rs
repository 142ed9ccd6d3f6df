//! The CA that signs right now, shared by the controllers that sign or publish with it and
//! replaced in place by the CA rotation controller.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::ca::CertificateAuthority;

/// The signing CA's slot.
#[derive(Clone)]
pub struct SigningCa(Arc<ArcSwap<CertificateAuthority>>);

impl SigningCa {
    pub fn new(ca: CertificateAuthority) -> Self {
        SigningCa(Arc::new(ArcSwap::from_pointee(ca)))
    }

    /// The CA currently signing.
    pub fn current(&self) -> Arc<CertificateAuthority> {
        self.0.load_full()
    }

    /// Replaces the signing CA (a rotation moved on, or the CA Secret was replaced).
    pub fn replace(&self, ca: Arc<CertificateAuthority>) {
        self.0.store(ca);
    }

    /// The slot itself, for services that sign with whatever CA is current.
    pub fn shared(&self) -> Arc<ArcSwap<CertificateAuthority>> {
        self.0.clone()
    }
}
