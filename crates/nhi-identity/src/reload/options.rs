//! How an identity directory is watched, how peers' revocation is checked, and whether a server
//! asks clients for a certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How an identity directory is watched, and how peers' revocation is checked.
///
/// The default checks revocation against `crl.pem` in the identity directory and refuses every
/// peer while that file is missing or unusable (fails closed). Turning the check off is spelled
/// out: `revocation: RevocationCheck::Disabled`.
#[derive(Clone, Debug)]
pub struct ReloadOptions {
    /// How often the directories are read and compared, whatever the events say. This is what
    /// catches `subPath` mounts and filesystems without inotify.
    pub poll_interval: Duration,
    /// Whether to watch the directories for filesystem events (inotify on Linux).
    pub watch_events: bool,
    /// How long a burst of events must settle before the directories are read.
    pub debounce: Duration,
    /// How peer certificates' revocation is checked. Default: `crl.pem` in the identity
    /// directory, required.
    pub revocation: RevocationCheck,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
            poll_interval: Duration::from_secs(30),
            watch_events: true,
            debounce: Duration::from_millis(50),
            revocation: RevocationCheck::default(),
        }
    }
}

/// Whether and where the CRLs that peer certificates are checked against come from: the
/// `crl.pem` of the namespace's `nhi-trust` ConfigMap (one PEM CRL per issuing CA).
///
/// When checking, a peer (a client seen by a server config, a server seen by a client config) is
/// refused if its certificate is listed, and every peer is refused while there is no usable CRL:
/// `crl.pem` missing, unreadable, unparsable, not issued by a CA of `ca.crt`, or past its
/// nextUpdate. A bad new `crl.pem` is refused and the last good one kept until it goes stale.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RevocationCheck {
    /// Check against `crl.pem` in the identity directory (a projected volume holding the
    /// identity Secret and `nhi-trust`'s `crl.pem`). The default.
    #[default]
    CrlInIdentityDir,
    /// Check against `crl.pem` in this directory (a volume of the `nhi-trust` ConfigMap),
    /// watched like the identity directory.
    CrlInDir(PathBuf),
    /// Do not check: a revoked peer is accepted until its certificate expires. Only for
    /// programs that check revocation some other way.
    Disabled,
}

impl RevocationCheck {
    /// The directory holding `crl.pem`, given the identity directory; `None` when disabled.
    pub fn crl_dir<'a>(&'a self, identity_dir: &'a Path) -> Option<&'a Path> {
        match self {
            RevocationCheck::CrlInIdentityDir => Some(identity_dir),
            RevocationCheck::CrlInDir(dir) => Some(dir),
            RevocationCheck::Disabled => None,
        }
    }
}

/// Whether a server asks clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients must present a certificate chaining to the trust bundle (mutual TLS).
    Required,
    /// Clients may present one; if they do, it must chain to the trust bundle.
    Optional,
    /// Clients are not asked for a certificate.
    None,
}
