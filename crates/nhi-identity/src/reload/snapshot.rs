//! Reads an identity directory as one consistent snapshot: key, chain and bundle from the same
//! kubelet generation (through the resolved `..data` link), retried once if the link moved; and
//! a trust directory's `crl.pem` the same way.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The link kubelet swaps atomically to publish a new generation of a Secret volume.
pub const DATA_LINK: &str = "..data";

/// The files of an identity directory, as read at one moment.
pub struct Snapshot {
    /// PEM of the leaf and its chain (`tls.crt`, or `identity.pem`).
    pub cert_pem: Vec<u8>,
    /// PEM of the private key (`tls.key`, or `identity.pem`).
    pub key_pem: Vec<u8>,
    /// PEM of the trust bundle (`ca.crt`).
    pub bundle_pem: Vec<u8>,
    /// The directory the files were read from (the kubelet generation, or the directory itself).
    pub source: PathBuf,
    /// SHA-256 over the three contents, to tell whether anything changed.
    pub digest: [u8; 32],
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("source", &self.source)
            .field("digest", &hex::encode(self.digest))
            .finish_non_exhaustive()
    }
}

/// Why a directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0} holds neither tls.crt and tls.key nor identity.pem")]
    NoIdentityFiles(PathBuf),
    #[error("{0} kept changing while it was read")]
    Unsettled(PathBuf),
}

/// `crl.pem` of a trust directory, as read at one moment.
pub struct CrlFile {
    /// The path read (through `..data` when there is one).
    pub path: PathBuf,
    /// Its contents; `None` when there is no such file.
    pub pem: Option<Vec<u8>>,
    /// SHA-256 over the contents (or their absence), to tell whether anything changed.
    pub digest: [u8; 32],
}

impl fmt::Debug for CrlFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CrlFile")
            .field("path", &self.path)
            .field("present", &self.pem.is_some())
            .field("digest", &hex::encode(self.digest))
            .finish()
    }
}

/// Reads `dir` as one snapshot. When `dir/..data` is a symlink (a Secret volume), the files are
/// read from its target, and the read is retried once if the link changed meanwhile.
pub fn read_snapshot(dir: &Path) -> Result<Snapshot, SnapshotError> {
    read_generation(dir, read_files)
}

/// Reads `dir/crl.pem` (a missing file is not an error: `pem` is `None`), through `..data` like
/// [`read_snapshot`].
pub fn read_crl_file(dir: &Path) -> Result<CrlFile, SnapshotError> {
    read_generation(dir, |source| {
        let path = source.join(crate::reload::crl::CRL_FILE);
        let pem = read_optional(&path)?;
        let mut hasher = Sha256::new();
        match &pem {
            Some(bytes) => {
                hasher.update([1]);
                hasher.update(bytes);
            }
            None => hasher.update([0]),
        }
        Ok(CrlFile {
            path,
            pem,
            digest: hasher.finalize().into(),
        })
    })
}

/// Reads the generation `dir/..data` points to (or `dir` itself) with `read`, again if the link
/// moved meanwhile.
fn read_generation<T>(
    dir: &Path,
    read: impl Fn(&Path) -> Result<T, SnapshotError>,
) -> Result<T, SnapshotError> {
    for _ in 0..2 {
        let before = data_target(dir)?;
        let source = before
            .as_ref()
            .map_or_else(|| dir.to_owned(), |t| dir.join(t));
        let result = read(&source);
        if data_target(dir)? == before {
            return result;
        }
    }
    Err(SnapshotError::Unsettled(dir.to_owned()))
}

/// The target of `dir/..data` when it is a symlink.
fn data_target(dir: &Path) -> Result<Option<PathBuf>, SnapshotError> {
    let link = dir.join(DATA_LINK);
    match std::fs::read_link(&link) {
        Ok(target) => Ok(Some(target)),
        // Absent, or a plain directory or file: no kubelet generations to follow.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
            ) =>
        {
            Ok(None)
        }
        Err(source) => Err(SnapshotError::Io { path: link, source }),
    }
}

fn read_files(source: &Path) -> Result<Snapshot, SnapshotError> {
    let (cert_pem, key_pem) = match read_optional(&source.join("tls.crt"))? {
        Some(cert) => (cert, read(&source.join("tls.key"))?),
        None => match read_optional(&source.join("identity.pem"))? {
            Some(identity) => (identity.clone(), identity),
            None => return Err(SnapshotError::NoIdentityFiles(source.to_owned())),
        },
    };
    let bundle_pem = read(&source.join("ca.crt"))?;
    let mut hasher = Sha256::new();
    for part in [&cert_pem, &key_pem, &bundle_pem] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    Ok(Snapshot {
        cert_pem,
        key_pem,
        bundle_pem,
        source: source.to_owned(),
        digest: hasher.finalize().into(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    std::fs::read(path).map_err(|source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, SnapshotError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SnapshotError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::test_layout::{write_generation, write_generation_files, write_plain};

    #[test]
    fn reads_through_the_data_link_of_a_secret_volume() {
        let dir = tempfile::tempdir().unwrap();
        write_generation(dir.path(), 1, "CERT1", "KEY1", "CA1");
        let snap = read_snapshot(dir.path()).unwrap();
        assert_eq!(snap.cert_pem, b"CERT1");
        assert_eq!(snap.key_pem, b"KEY1");
        assert_eq!(snap.bundle_pem, b"CA1");
        assert!(snap.source.ends_with("..2026_01_01_00_00_01.0001"));
        write_generation(dir.path(), 2, "CERT2", "KEY2", "CA1");
        let next = read_snapshot(dir.path()).unwrap();
        assert_eq!(next.key_pem, b"KEY2");
        assert_ne!(next.digest, snap.digest);
    }

    #[test]
    fn reads_plain_files_and_identity_pem() {
        let dir = tempfile::tempdir().unwrap();
        write_plain(dir.path(), "CERT", "KEY", "CA");
        let snap = read_snapshot(dir.path()).unwrap();
        assert_eq!(snap.cert_pem, b"CERT");
        assert_eq!(snap.source, dir.path());
        assert_eq!(read_snapshot(dir.path()).unwrap().digest, snap.digest);

        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("identity.pem"), "KEYCHAIN").unwrap();
        std::fs::write(other.path().join("ca.crt"), "CA").unwrap();
        let snap = read_snapshot(other.path()).unwrap();
        assert_eq!(snap.cert_pem, b"KEYCHAIN");
        assert_eq!(snap.key_pem, b"KEYCHAIN");
    }

    #[test]
    fn reads_crl_pem_through_the_data_link_and_tells_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let missing = read_crl_file(dir.path()).unwrap();
        assert!(missing.pem.is_none());
        write_generation_files(dir.path(), 1, &[("crl.pem", "CRL1")]);
        let first = read_crl_file(dir.path()).unwrap();
        assert_eq!(first.pem.as_deref(), Some(&b"CRL1"[..]));
        assert!(first.path.ends_with("..2026_01_01_00_00_01.0001/crl.pem"));
        assert_ne!(first.digest, missing.digest);
        write_generation_files(dir.path(), 2, &[("crl.pem", "")]);
        let empty = read_crl_file(dir.path()).unwrap();
        assert_eq!(empty.pem.as_deref(), Some(&b""[..]));
        assert_ne!(empty.digest, missing.digest);
    }

    #[test]
    fn a_directory_without_identity_files_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_snapshot(dir.path()),
            Err(SnapshotError::NoIdentityFiles(_))
        ));
        std::fs::write(dir.path().join("tls.crt"), "CERT").unwrap();
        assert!(matches!(
            read_snapshot(dir.path()),
            Err(SnapshotError::Io { .. })
        ));
    }
}
