//! Peer revocation for the reloading identity: which CRLs the verifiers check, kept current from
//! `crl.pem` the way the identity is (a bad update is refused and the last good CRLs stay until
//! they go stale), and refusal of every peer while there is no usable CRL.

use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::crl::{self, CRL_FILE, InvalidCrl, ValidatedCrls};
use super::options::RevocationCheck;
use super::snapshot::{self, SnapshotError};

/// What the peer verifiers check revocation against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRevocation {
    /// Nothing ([`RevocationCheck::Disabled`]).
    NotChecked,
    /// These CRLs: a listed peer is refused, and so is one whose issuer has no CRL among them,
    /// or whose CRL is past its nextUpdate at the handshake.
    Crls(ValidatedCrls),
    /// Checking is required but there is no usable CRL (why): every peer is refused.
    Unavailable(String),
}

/// How peers' revocation is checked now, as [`ReloadingIdentity::revocation`] reports it.
///
/// [`ReloadingIdentity::revocation`]: super::ReloadingIdentity::revocation
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevocationStatus {
    /// Peers are checked against `crls` CRLs. From `next_update` on (the earliest nextUpdate),
    /// every peer is refused until a newer `crl.pem` is loaded.
    Checking {
        crls: usize,
        next_update: OffsetDateTime,
    },
    /// Checking is required but there is no usable CRL: every peer is refused.
    Unavailable { reason: String },
    /// Revocation is not checked ([`RevocationCheck::Disabled`]).
    Disabled,
}

impl RevocationStatus {
    /// Whether peers are refused at `now` whatever their certificate: no usable CRL, or a stale one.
    pub fn refuses_every_peer_at(&self, now: OffsetDateTime) -> bool {
        match self {
            RevocationStatus::Checking { next_update, .. } => now >= *next_update,
            RevocationStatus::Unavailable { .. } => true,
            RevocationStatus::Disabled => false,
        }
    }
}

impl PeerRevocation {
    /// The public facts of what the verifiers check against.
    pub fn status(&self) -> RevocationStatus {
        match self {
            PeerRevocation::NotChecked => RevocationStatus::Disabled,
            PeerRevocation::Crls(crls) => RevocationStatus::Checking {
                crls: crls.ders.len(),
                next_update: crls.next_update,
            },
            PeerRevocation::Unavailable(reason) => RevocationStatus::Unavailable {
                reason: reason.clone(),
            },
        }
    }
}

/// The CRL side of the reload state: where `crl.pem` is, what was read last, what the verifiers
/// use.
pub(super) struct CrlState {
    /// The directory holding `crl.pem`; `None` when revocation is not checked.
    dir: Option<PathBuf>,
    /// Digest of the `crl.pem` looked at last (accepted or refused).
    digest: Option<[u8; 32]>,
    revocation: PeerRevocation,
    /// What was refused last and why, so a bad `crl.pem` is counted once, not at every poll.
    last_refused: Option<(String, InvalidCrl)>,
}

/// What a look at `crl.pem` found.
#[derive(Debug, Default)]
pub(super) struct CrlRefresh {
    /// The verifiers must be rebuilt: new CRLs, or a new reason for having none.
    pub changed: bool,
    /// CRLs other than those in use were accepted.
    pub accepted: bool,
    /// Why `crl.pem` was refused, and whether this refusal is new (to be counted and logged).
    pub refused: Option<(InvalidCrl, bool)>,
}

impl CrlState {
    pub(super) fn new(check: &RevocationCheck, identity_dir: &Path) -> Self {
        let dir = check.crl_dir(identity_dir).map(Path::to_owned);
        let revocation = match dir {
            Some(_) => PeerRevocation::Unavailable("crl.pem not read yet".into()),
            None => PeerRevocation::NotChecked,
        };
        CrlState {
            dir,
            digest: None,
            revocation,
            last_refused: None,
        }
    }

    /// The directory holding `crl.pem`, when revocation is checked.
    pub(super) fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// What the verifiers are to check against.
    pub(super) fn revocation(&self) -> &PeerRevocation {
        &self.revocation
    }

    /// Reads `crl.pem` and, if it changed since the last look or `bundle_changed`, checks it
    /// against `bundle_pem` at `now`. A refused file leaves the CRLs in use as they were (only
    /// the reason is updated when there are none). Blocking (file reads).
    pub(super) fn refresh(
        &mut self,
        bundle_pem: &[u8],
        bundle_changed: bool,
        now: OffsetDateTime,
    ) -> CrlRefresh {
        let Some(dir) = &self.dir else {
            return CrlRefresh::default();
        };
        let file = snapshot::read_crl_file(dir);
        let digest = file.as_ref().ok().map(|file| file.digest);
        if digest.is_some() && digest == self.digest && !bundle_changed {
            // The same file as last time: refused again if it was, without counting it again.
            return CrlRefresh {
                refused: self.last_refused.as_ref().map(|(_, e)| (e.clone(), false)),
                ..CrlRefresh::default()
            };
        }
        let checked = match file {
            Ok(file) => match &file.pem {
                Some(pem) => crl::validate_crls(pem, bundle_pem, now),
                None => Err(InvalidCrl::Missing(dir.join(CRL_FILE))),
            },
            Err(error) => Err(unreadable(dir, error)),
        };
        self.digest = digest;
        match checked {
            Ok(crls) => {
                let crls = PeerRevocation::Crls(crls);
                let accepted = self.revocation != crls;
                self.revocation = crls;
                self.last_refused = None;
                CrlRefresh {
                    changed: accepted || bundle_changed,
                    accepted,
                    refused: None,
                }
            }
            Err(error) => {
                let key = format!("{}: {error}", digest.map(hex::encode).unwrap_or_default());
                let new = self.last_refused.as_ref().map(|(k, _)| k) != Some(&key);
                self.last_refused = Some((key, error.clone()));
                let changed = match &self.revocation {
                    PeerRevocation::Unavailable(reason) if *reason != error.to_string() => {
                        self.revocation = PeerRevocation::Unavailable(error.to_string());
                        true
                    }
                    _ => false,
                };
                CrlRefresh {
                    changed,
                    accepted: false,
                    refused: Some((error, new)),
                }
            }
        }
    }
}

fn unreadable(dir: &Path, error: SnapshotError) -> InvalidCrl {
    let path = match &error {
        SnapshotError::Io { path, .. } => path.clone(),
        _ => dir.join(CRL_FILE),
    };
    let reason = match error {
        SnapshotError::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    InvalidCrl::Unreadable { path, reason }
}
