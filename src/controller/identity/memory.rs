//! What the MachineIdentity controller remembers between reconciles, per identity (by uid): the
//! certificate in its Secret at a version, the last revocation it made, what last triggered a
//! reconcile, and the status it wrote moments ago.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use super::remembered_certificate::RememberedCertificate;
use crate::controller::status_memory::RecentStatusWrites;
use crate::controller::uid_key::{UidKey, uid_key};
use nhi_api::{MachineIdentity, RevocationStatus};
use nhi_core::issue::assess::KnownCertificate;
use nhi_identity::certificate::CertificateInfo;

/// The identity controller's memory.
#[derive(Default)]
pub struct IdentityMemory {
    /// The certificate in each identity's Secret, with the Secret's resourceVersion it was seen
    /// at: while that version is current, the Secret need not be read.
    certificates: Mutex<HashMap<UidKey, RememberedCertificate>>,
    /// The last revocation made per identity: the status shows it even when the cache does not
    /// show our own status write yet.
    revocations: Mutex<HashMap<UidKey, RevocationStatus>>,
    /// Hash of what may change an identity's certificate (generation, labels, annotations) when
    /// it last triggered a reconcile: status-only updates (our own writes) trigger nothing.
    triggered: Mutex<HashMap<UidKey, u64>>,
    /// The statuses written moments ago.
    pub statuses: RecentStatusWrites,
}

impl IdentityMemory {
    /// Whether the identity changed in a way that needs a reconcile since it last triggered one:
    /// its generation (spec), labels or annotations. Records the change.
    pub fn worth_reconciling(&self, mi: &MachineIdentity) -> bool {
        let Some(uid) = mi.metadata.uid.as_deref() else {
            return true;
        };
        let mut h = DefaultHasher::new();
        mi.metadata.generation.hash(&mut h);
        mi.metadata.labels.hash(&mut h);
        mi.metadata.annotations.hash(&mut h);
        mi.metadata.deletion_timestamp.is_some().hash(&mut h);
        let hash = h.finish();
        match self.triggered.lock() {
            Ok(mut t) => t.insert(uid_key(uid), hash) != Some(hash),
            Err(_) => true,
        }
    }

    /// The last revocation made for identity `uid` by this operator, if any.
    pub fn last_revocation(&self, uid: &str) -> Option<RevocationStatus> {
        self.revocations.lock().ok()?.get(&uid_key(uid)).cloned()
    }

    /// Remembers a revocation made for identity `uid`.
    pub fn remember_revocation(&self, uid: &str, revocation: &RevocationStatus) {
        if let Ok(mut r) = self.revocations.lock() {
            r.insert(uid_key(uid), revocation.clone());
        }
    }

    /// Forgets an identity that is going away.
    pub fn forget(&self, uid: &str) {
        self.statuses.forget(uid);
        if let Ok(mut r) = self.revocations.lock() {
            r.remove(&uid_key(uid));
        }
        if let Ok(mut t) = self.triggered.lock() {
            t.remove(&uid_key(uid));
        }
        self.forget_certificate(uid);
    }

    /// Keeps what is remembered of the identities whose uid `keep` accepts, and nothing of the
    /// others.
    pub fn retain(&self, keep: impl Fn(UidKey) -> bool) {
        if let Ok(mut c) = self.certificates.lock() {
            c.retain(|uid, _| keep(*uid));
        }
        if let Ok(mut r) = self.revocations.lock() {
            r.retain(|uid, _| keep(*uid));
        }
        if let Ok(mut t) = self.triggered.lock() {
            t.retain(|uid, _| keep(*uid));
        }
    }

    /// The certificate known for identity `uid` if its Secret is still at `resource_version`.
    pub fn known_certificate(&self, uid: &str, resource_version: &str) -> Option<KnownCertificate> {
        let known = self.certificates.lock().ok()?;
        known.get(&uid_key(uid))?.at_version(resource_version)
    }

    /// The certificate last known for identity `uid`, whatever the Secret's version.
    pub fn any_known_certificate(&self, uid: &str) -> Option<CertificateInfo> {
        let known = self.certificates.lock().ok()?;
        known.get(&uid_key(uid)).map(RememberedCertificate::info)
    }

    /// Whether any certificate is known for identity `uid` (its Secret was seen or written).
    pub fn has_known_certificate(&self, uid: &str) -> bool {
        self.certificates
            .lock()
            .map(|k| k.contains_key(&uid_key(uid)))
            .unwrap_or(false)
    }

    /// Remembers the certificate in identity `uid`'s Secret at `resource_version`.
    pub fn remember_certificate(
        &self,
        uid: &str,
        resource_version: Option<String>,
        cert: KnownCertificate,
    ) {
        if let (Ok(mut known), Some(rv)) = (self.certificates.lock(), resource_version) {
            known.insert(uid_key(uid), RememberedCertificate::new(rv, cert));
        }
    }

    /// Forgets the certificate of identity `uid` (its Secret is gone or unknown).
    pub fn forget_certificate(&self, uid: &str) {
        if let Ok(mut known) = self.certificates.lock() {
            known.remove(&uid_key(uid));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn known(serial: &str) -> KnownCertificate {
        let nb = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let info = CertificateInfo {
            serial_hex: serial.into(),
            thumbprint_sha256: "ab".into(),
            not_before: nb,
            not_after: nb + time::Duration::hours(1),
        };
        KnownCertificate::new(info, "h", b"ca")
    }

    #[test]
    fn a_certificate_is_known_at_its_secret_version_only() {
        let m = IdentityMemory::default();
        m.remember_certificate("u", Some("5".into()), known("4a"));
        assert_eq!(m.known_certificate("u", "5"), Some(known("4a")));
        assert_eq!(m.known_certificate("u", "6"), None);
        assert_eq!(m.any_known_certificate("u").unwrap().serial_hex, "4a");
        assert!(m.has_known_certificate("u") && !m.has_known_certificate("v"));
        // Without a version nothing is remembered.
        m.remember_certificate("v", None, known("4b"));
        assert!(!m.has_known_certificate("v"));
        m.forget("u");
        assert!(!m.has_known_certificate("u"));
    }

    #[test]
    fn after_a_relist_only_the_listed_identities_are_remembered() {
        let m = IdentityMemory::default();
        m.remember_certificate("listed", Some("5".into()), known("4a"));
        m.remember_certificate("gone", Some("5".into()), known("4b"));
        m.retain(|uid| uid == uid_key("listed"));
        assert!(m.has_known_certificate("listed") && !m.has_known_certificate("gone"));
    }

    #[test]
    fn status_only_changes_are_not_worth_a_reconcile() {
        let m = IdentityMemory::default();
        let mut mi: MachineIdentity = serde_json::from_value(serde_json::json!({
            "apiVersion": "nhi.dev/v1alpha1", "kind": "MachineIdentity",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {"owner": {"team": "t"}, "secretName": "a-id"}
        }))
        .unwrap();
        assert!(m.worth_reconciling(&mi));
        mi.status = Some(Default::default());
        assert!(!m.worth_reconciling(&mi));
        mi.metadata.generation = Some(2);
        assert!(m.worth_reconciling(&mi));
    }
}
