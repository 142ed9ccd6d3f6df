//! The child's own key pair (ECDSA P-256, generated where the child runs) and the PKCS#10
//! request that proves it holds it. The private key is only ever written to the child's
//! identity directory, never sent.

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};

/// A child's key and its certificate request.
pub struct ChildKey {
    key: KeyPair,
    csr_pem: String,
}

impl std::fmt::Debug for ChildKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildKey").finish_non_exhaustive()
    }
}

/// Why a key or its request could not be made or read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl ChildKey {
    /// A fresh ECDSA P-256 key and its request.
    pub fn generate() -> Result<Self, KeyError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| KeyError(format!("cannot generate a key: {e}")))?;
        Self::from_key(key)
    }

    /// The key of a PEM PKCS#8 file the child wrote earlier, and a request for it.
    pub fn from_pem(key_pem: &str) -> Result<Self, KeyError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|_| KeyError("the key file does not hold a usable PKCS#8 key".into()))?;
        Self::from_key(key)
    }

    fn from_key(key: KeyPair) -> Result<Self, KeyError> {
        let csr = CertificateParams::default()
            .serialize_request(&key)
            .and_then(|r| r.pem())
            .map_err(|e| KeyError(format!("cannot make the certificate request: {e}")))?;
        Ok(ChildKey { key, csr_pem: csr })
    }

    /// The PKCS#10 request, PEM: what the parent sends.
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// The private key, PEM PKCS#8: for the child's `tls.key` only.
    pub fn private_key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Writes the private key to `dir/tls.key`, mode 0600 (also when the file existed: `open`
    /// keeps an old file's mode), creating `dir`.
    pub fn write_private_key(&self, dir: &std::path::Path) -> std::io::Result<()> {
        write_file(dir, "tls.key", &self.private_key_pem(), 0o600)
    }

    /// The public key, DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> Vec<u8> {
        use rcgen::PublicKeyData;
        self.key.subject_public_key_info()
    }
}

/// Writes `text` to `dir/file` with `mode` through a temporary file renamed into place (a reader
/// never sees half a file), creating `dir`.
pub(super) fn write_file(
    dir: &std::path::Path,
    file: &str,
    text: &str,
    mode: u32,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{file}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(file))
}
