//! Decides whether the certificate in an identity's Secret is still good, or why to re-issue.

use rcgen::{KeyPair, PublicKeyData};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::SubjectPublicKeyInfo;

use super::renewal::plan_renewal;
use nhi_identity::certificate::{CertificateInfo, info_of, spiffe_id_of, spiffe_path};
use nhi_identity::pem_chain::pem_certificates;

/// What the identity's Secret currently holds (all optional: the Secret may be partial).
#[derive(Clone, Copy, Debug, Default)]
pub struct ExistingMaterial<'a> {
    pub tls_crt: Option<&'a [u8]>,
    pub tls_key: Option<&'a [u8]>,
    /// Whether the Secret holds a `kubeconfig`.
    pub has_kubeconfig: bool,
    /// When the kubeconfig's client certificate expires (RFC 3339), as annotated.
    pub kube_client_not_after: Option<&'a str>,
    pub inputs_hash: Option<&'a str>,
}

/// Why a new certificate must be issued. The names are stable: they appear in Events and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReissueReason {
    /// No Secret, or it holds no certificate or key.
    Missing,
    /// The certificate or key cannot be parsed.
    Unparseable,
    /// The key does not belong to the certificate.
    KeyMismatch,
    /// The certificate was not signed by the current CA.
    WrongIssuer,
    /// The certificate has expired.
    Expired,
    /// The spec or the operator's settings changed what the certificate should contain.
    InputsChanged,
    /// The renewal time has come.
    RenewalDue,
    /// The certificate was revoked on request.
    Revoked,
    /// The certificate names another identity (material copied into this identity's Secret).
    OtherIdentity,
    /// The key is written in a form many consumers cannot read (an Ed25519 key in PKCS#8
    /// version 2, as earlier versions wrote it): re-keyed at once.
    KeyFormat,
}

impl ReissueReason {
    /// Stable CamelCase name, used as an Event reason and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReissueReason::Missing => "SecretMissing",
            ReissueReason::Unparseable => "CertificateUnparseable",
            ReissueReason::KeyMismatch => "KeyMismatch",
            ReissueReason::WrongIssuer => "WrongIssuer",
            ReissueReason::Expired => "Expired",
            ReissueReason::InputsChanged => "InputsChanged",
            ReissueReason::RenewalDue => "RenewalDue",
            ReissueReason::Revoked => "Revoked",
            ReissueReason::OtherIdentity => "OtherIdentity",
            ReissueReason::KeyFormat => "KeyFormat",
        }
    }
}

/// The verdict on the Secret's current certificate.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Keep it; renew at `renew_at`.
    Current {
        info: CertificateInfo,
        renew_at: OffsetDateTime,
    },
    /// Issue a new one. `still_valid` is the current certificate when it can still be used
    /// meanwhile (renewal due, inputs changed).
    Reissue {
        reason: ReissueReason,
        still_valid: Option<(CertificateInfo, OffsetDateTime)>,
    },
}

impl Verdict {
    /// The re-issue reason, if any.
    pub fn reissue_reason(&self) -> Option<ReissueReason> {
        match self {
            Verdict::Current { .. } => None,
            Verdict::Reissue { reason, .. } => Some(*reason),
        }
    }
}

/// Everything the assessment compares against.
#[derive(Clone, Copy, Debug)]
pub struct Expectations<'a> {
    /// DER SubjectPublicKeyInfo of the current CA.
    pub ca_public_key_der: &'a [u8],
    /// DER SubjectPublicKeyInfo of the CA retiring in a rotation (still trusted): its
    /// certificates are re-issued, but stay usable until then.
    pub retiring_ca_public_key_der: Option<&'a [u8]>,
    /// The SPIFFE ID the certificate must carry (its path names the identity; the trust domain
    /// may change, which is an input change). None: not checked.
    pub spiffe_id: Option<&'a str>,
    /// Hash of what the certificate should contain now.
    pub inputs_hash: &'a str,
    /// Fraction of the lifetime at which to renew.
    pub renewal_fraction: f64,
    /// Stable per-identity key for renewal jitter.
    pub identity_key: &'a str,
    /// The latest notAfter the certificate's grants allow (see
    /// [`crate::entitle::resolve::EffectiveGrants::not_after_cap`]).
    pub not_after_cap: Option<OffsetDateTime>,
    /// Whether the Secret must hold a `kubeconfig` (Kubernetes access enabled).
    pub needs_kubeconfig: bool,
    pub now: OffsetDateTime,
}

/// Assesses the Secret's certificate. Checks, in order: present, parseable, key matches, signed by
/// the current CA, not expired, built from the current inputs, renewal time not reached.
pub fn assess(existing: &ExistingMaterial<'_>, expect: &Expectations<'_>) -> Verdict {
    match inspect(existing, expect) {
        Ok(v) => v,
        Err(reason) => Verdict::Reissue {
            reason,
            still_valid: None,
        },
    }
}

fn inspect(
    existing: &ExistingMaterial<'_>,
    expect: &Expectations<'_>,
) -> Result<Verdict, ReissueReason> {
    let (crt, key) = match (existing.tls_crt, existing.tls_key) {
        (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() => (c, k),
        _ => return Err(ReissueReason::Missing),
    };
    let crt = std::str::from_utf8(crt).map_err(|_| ReissueReason::Unparseable)?;
    let key = std::str::from_utf8(key).map_err(|_| ReissueReason::Unparseable)?;
    let chain = pem_certificates(crt).map_err(|_| ReissueReason::Unparseable)?;
    let leaf_der = &chain[0];
    let (_, leaf) = X509Certificate::from_der(leaf_der).map_err(|_| ReissueReason::Unparseable)?;
    let info = info_of(&leaf, leaf_der);
    let key = KeyPair::from_pem(key).map_err(|_| ReissueReason::Unparseable)?;
    if key.subject_public_key_info() != leaf.public_key().raw {
        return Err(ReissueReason::KeyMismatch);
    }
    if !super::keys::is_portable(&key) {
        return Err(ReissueReason::KeyFormat);
    }
    let signed_by = |spki_der: &[u8]| {
        SubjectPublicKeyInfo::from_der(spki_der)
            .is_ok_and(|(_, spki)| leaf.verify_signature(Some(&spki)).is_ok())
    };
    let by_current = signed_by(expect.ca_public_key_der);
    if !by_current && !expect.retiring_ca_public_key_der.is_some_and(signed_by) {
        return Err(ReissueReason::WrongIssuer);
    }
    // Signed by the CA is not enough: another identity's certificate and key, copied in with a
    // matching hash annotation by someone who may write Secrets, is not this identity's.
    if let Some(expected) = expect.spiffe_id {
        let found = spiffe_id_of(&leaf);
        if found.as_deref().and_then(spiffe_path) != spiffe_path(expected) {
            return Err(ReissueReason::OtherIdentity);
        }
    }
    let verdict = judge(
        info,
        existing.inputs_hash,
        existing.kube_client_not_after,
        expect,
    );
    // A missing kubeconfig needs a new credential; the certificate itself stays usable.
    let verdict = match verdict {
        Verdict::Current { info, renew_at }
            if expect.needs_kubeconfig && !existing.has_kubeconfig =>
        {
            Verdict::Reissue {
                reason: ReissueReason::Missing,
                still_valid: Some((info, renew_at)),
            }
        }
        other => other,
    };
    Ok(match by_current {
        true => verdict,
        false => retiring_verdict(verdict),
    })
}

/// What the operator knows of a certificate it wrote or verified itself: enough to decide on
/// renewal without reading the Secret again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownCertificate {
    pub info: CertificateInfo,
    /// The inputs hash the certificate was built from.
    pub inputs_hash: String,
    /// SHA-256 of the signing CA's SubjectPublicKeyInfo (raw: one is kept per identity).
    pub ca_key_sha256: [u8; 32],
    /// When the Kubernetes client certificate written with it expires (RFC 3339), if any.
    pub kube_client_not_after: Option<String>,
}

impl KnownCertificate {
    /// The same, with the expiry of the Kubernetes client certificate written with it.
    pub fn with_kube_client_not_after(mut self, not_after: Option<String>) -> Self {
        self.kube_client_not_after = not_after;
        self
    }

    /// Records a certificate signed by the CA whose SubjectPublicKeyInfo is `ca_public_key_der`.
    pub fn new(info: CertificateInfo, inputs_hash: &str, ca_public_key_der: &[u8]) -> Self {
        KnownCertificate {
            info,
            inputs_hash: inputs_hash.to_string(),
            ca_key_sha256: Sha256::digest(ca_public_key_der).into(),
            kube_client_not_after: None,
        }
    }
}

/// Assesses a certificate known from a previous issuance or assessment (key match and signature
/// were checked then): same CA, not expired, current inputs, renewal not due.
pub fn assess_known(known: &KnownCertificate, expect: &Expectations<'_>) -> Verdict {
    let signed_by =
        |spki_der: &[u8]| known.ca_key_sha256 == <[u8; 32]>::from(Sha256::digest(spki_der));
    if !signed_by(expect.ca_public_key_der) {
        return match expect.retiring_ca_public_key_der {
            Some(retiring) if signed_by(retiring) => retiring_verdict(judge(
                known.info.clone(),
                Some(&known.inputs_hash),
                known.kube_client_not_after.as_deref(),
                expect,
            )),
            _ => Verdict::Reissue {
                reason: ReissueReason::WrongIssuer,
                still_valid: None,
            },
        };
    }
    judge(
        known.info.clone(),
        Some(&known.inputs_hash),
        known.kube_client_not_after.as_deref(),
        expect,
    )
}

/// The verdict on a certificate of the retiring CA: re-issued under the new one, and usable
/// meanwhile (the old root is still trusted) unless it must be replaced for another reason.
fn retiring_verdict(verdict: Verdict) -> Verdict {
    match verdict {
        Verdict::Current { info, renew_at } => Verdict::Reissue {
            reason: ReissueReason::WrongIssuer,
            still_valid: Some((info, renew_at)),
        },
        other => other,
    }
}

/// When to renew: at the planned fraction of the lifetime, except for a certificate cut short by
/// the expiry of a grant it carries. Renewing that one early cannot extend it (its successor is
/// capped at the same moment), so it is replaced when it ends, by one without the expired grant.
pub fn renewal_time(info: &CertificateInfo, expect: &Expectations<'_>) -> OffsetDateTime {
    match expect.not_after_cap {
        Some(cap) if info.not_after >= cap => info.not_after,
        _ => plan_renewal(
            info.not_before,
            info.not_after,
            expect.renewal_fraction,
            expect.identity_key,
        ),
    }
}

/// A renewal time moved earlier when the Kubernetes client certificate written with the
/// certificate (RFC 3339 `client_not_after`) ends first, as when the signer shortens the
/// requested lifetime: renewed a third of the certificate's lifetime before the client one ends.
pub fn renew_before_client_expiry(
    renew_at: OffsetDateTime,
    info: &CertificateInfo,
    client_not_after: Option<&str>,
) -> OffsetDateTime {
    let parsed = client_not_after.and_then(|t| {
        OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    });
    match parsed {
        Some(client) => renew_at.min(client - (info.not_after - info.not_before) / 3_i32),
        None => renew_at,
    }
}

/// The common tail of every assessment: expiry, inputs, renewal time.
fn judge(
    info: CertificateInfo,
    inputs_hash: Option<&str>,
    kube_client_not_after: Option<&str>,
    expect: &Expectations<'_>,
) -> Verdict {
    if expect.now >= info.not_after {
        return Verdict::Reissue {
            reason: ReissueReason::Expired,
            still_valid: None,
        };
    }
    let renew_at =
        renew_before_client_expiry(renewal_time(&info, expect), &info, kube_client_not_after);
    let reason = if inputs_hash != Some(expect.inputs_hash) {
        ReissueReason::InputsChanged
    } else if expect.now >= renew_at {
        ReissueReason::RenewalDue
    } else {
        return Verdict::Current { info, renew_at };
    };
    Verdict::Reissue {
        reason,
        still_valid: Some((info, renew_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CertificateAuthority;
    use crate::issue::keys::generate_key;
    use crate::issue::leaf::{IssuedCertificate, LeafRequest, issue_leaf};
    use nhi_api::{KeyAlgorithm, Usage};
    use time::Duration;

    fn ca() -> CertificateAuthority {
        let now = OffsetDateTime::now_utc();
        let m = CertificateAuthority::generate_root("t", Duration::days(30), now).unwrap();
        CertificateAuthority::from_material(&m, now).unwrap()
    }

    fn issue(ca: &CertificateAuthority, now: OffsetDateTime) -> IssuedCertificate {
        issue_with(ca, now, &generate_key(KeyAlgorithm::EcdsaP256).unwrap())
    }

    fn issue_with(
        ca: &CertificateAuthority,
        now: OffsetDateTime,
        key: &rcgen::KeyPair,
    ) -> IssuedCertificate {
        let req = LeafRequest {
            spiffe_id: "spiffe://cluster.local/ns/a/mi/b".into(),
            common_name: None,
            namespace: "a".into(),
            dns_names: vec![],
            usages: vec![Usage::Client],
            ttl: Duration::hours(1),
            not_after_cap: None,
            extensions: vec![],
        };
        issue_leaf(ca, &req, key, now).unwrap()
    }

    fn expect<'a>(ca: &'a CertificateAuthority, now: OffsetDateTime) -> Expectations<'a> {
        Expectations {
            ca_public_key_der: ca.public_key_der(),
            retiring_ca_public_key_der: None,
            spiffe_id: Some("spiffe://cluster.local/ns/a/mi/b"),
            inputs_hash: "h1",
            renewal_fraction: 2.0 / 3.0,
            identity_key: "a/b",
            not_after_cap: None,
            needs_kubeconfig: false,
            now,
        }
    }

    fn material<'a>(i: &'a IssuedCertificate, hash: &'a str) -> ExistingMaterial<'a> {
        ExistingMaterial {
            tls_crt: Some(i.chain_pem.as_bytes()),
            tls_key: Some(i.key_pem.as_bytes()),
            has_kubeconfig: false,
            kube_client_not_after: None,
            inputs_hash: Some(hash),
        }
    }

    #[test]
    fn a_fresh_certificate_is_current_with_renewal_ahead() {
        let ca = ca();
        let now = OffsetDateTime::now_utc();
        let i = issue(&ca, now);
        match assess(&material(&i, "h1"), &expect(&ca, now)) {
            Verdict::Current { info, renew_at } => {
                assert_eq!(info, i.info);
                assert!(renew_at > now + Duration::minutes(30));
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn an_ed25519_key_in_the_form_earlier_versions_wrote_is_rekeyed_at_once() {
        let ca = ca();
        let now = OffsetDateTime::now_utc();
        let v2 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let old = issue_with(&ca, now, &v2);
        assert_eq!(
            assess(&material(&old, "h1"), &expect(&ca, now)).reissue_reason(),
            Some(ReissueReason::KeyFormat)
        );
        let portable = issue_with(&ca, now, &generate_key(KeyAlgorithm::Ed25519).unwrap());
        assert_eq!(
            assess(&material(&portable, "h1"), &expect(&ca, now)).reissue_reason(),
            None
        );
    }

    #[test]
    fn every_reason_is_detected() {
        let ca = ca();
        let other = self::ca();
        let now = OffsetDateTime::now_utc();
        let i = issue(&ca, now);
        let j = issue(&ca, now);
        let e = expect(&ca, now);
        let r = |m: ExistingMaterial<'_>, e: &Expectations<'_>| assess(&m, e).reissue_reason();
        assert_eq!(
            r(ExistingMaterial::default(), &e),
            Some(ReissueReason::Missing)
        );
        let garbage = ExistingMaterial {
            tls_crt: Some(b"garbage"),
            ..material(&i, "h1")
        };
        assert_eq!(r(garbage, &e), Some(ReissueReason::Unparseable));
        let swapped = ExistingMaterial {
            tls_key: Some(j.key_pem.as_bytes()),
            ..material(&i, "h1")
        };
        assert_eq!(r(swapped, &e), Some(ReissueReason::KeyMismatch));
        let foreign = Expectations {
            ca_public_key_der: other.public_key_der(),
            ..e
        };
        assert_eq!(
            r(material(&i, "h1"), &foreign),
            Some(ReissueReason::WrongIssuer)
        );
        // Another identity's certificate and key, planted with this identity's hash annotation.
        let planted = Expectations {
            spiffe_id: Some("spiffe://cluster.local/ns/a/mi/other"),
            ..e
        };
        assert_eq!(
            r(material(&i, "h1"), &planted),
            Some(ReissueReason::OtherIdentity)
        );
        // A new trust domain is an input change, not another identity.
        let renamed_domain = Expectations {
            spiffe_id: Some("spiffe://example.org/ns/a/mi/b"),
            ..e
        };
        assert_eq!(r(material(&i, "h1"), &renamed_domain), None);
        assert_eq!(
            nhi_identity::certificate::leaf_spiffe_id(i.chain_pem.as_bytes()).as_deref(),
            Some("spiffe://cluster.local/ns/a/mi/b")
        );
        assert!(matches!(
            assess(&material(&i, "h1"), &foreign),
            Verdict::Reissue {
                still_valid: None,
                ..
            }
        ));
        // Signed by the CA retiring in a rotation: re-issued, and usable until then.
        let rotating = Expectations {
            ca_public_key_der: other.public_key_der(),
            retiring_ca_public_key_der: Some(ca.public_key_der()),
            ..e
        };
        assert!(matches!(
            assess(&material(&i, "h1"), &rotating),
            Verdict::Reissue {
                reason: ReissueReason::WrongIssuer,
                still_valid: Some(_),
            }
        ));
        let known = KnownCertificate::new(i.info.clone(), "h1", ca.public_key_der());
        assert!(matches!(
            assess_known(&known, &rotating),
            Verdict::Reissue {
                reason: ReissueReason::WrongIssuer,
                still_valid: Some(_),
            }
        ));
        assert!(matches!(
            assess_known(&known, &foreign),
            Verdict::Reissue {
                reason: ReissueReason::WrongIssuer,
                still_valid: None,
            }
        ));
        // Changed inputs under the retiring CA: that reason, at once.
        assert_eq!(
            r(material(&i, "h0"), &rotating),
            Some(ReissueReason::InputsChanged)
        );
        let late = Expectations {
            now: now + Duration::hours(2),
            ..e
        };
        assert_eq!(r(material(&i, "h1"), &late), Some(ReissueReason::Expired));
        assert_eq!(
            r(material(&i, "h0"), &e),
            Some(ReissueReason::InputsChanged)
        );
        let due = Expectations {
            now: now + Duration::minutes(50),
            ..e
        };
        // The same verdicts from what the operator remembers, without the Secret.
        let known = KnownCertificate::new(i.info.clone(), "h1", ca.public_key_der());
        assert!(matches!(assess_known(&known, &e), Verdict::Current { .. }));
        assert_eq!(
            assess_known(&known, &foreign).reissue_reason(),
            Some(ReissueReason::WrongIssuer)
        );
        assert_eq!(
            assess_known(&known, &late).reissue_reason(),
            Some(ReissueReason::Expired)
        );
        assert_eq!(
            assess_known(&known, &due).reissue_reason(),
            Some(ReissueReason::RenewalDue)
        );
        let changed = KnownCertificate {
            inputs_hash: "h0".into(),
            ..known.clone()
        };
        assert_eq!(
            assess_known(&changed, &e).reissue_reason(),
            Some(ReissueReason::InputsChanged)
        );
        assert_eq!(r(material(&i, "h1"), &due), Some(ReissueReason::RenewalDue));
        // Kubernetes access without a kubeconfig: a new credential, the certificate still usable.
        let needs = Expectations {
            needs_kubeconfig: true,
            ..e
        };
        match assess(&material(&i, "h1"), &needs) {
            Verdict::Reissue {
                reason: ReissueReason::Missing,
                still_valid: Some(_),
            } => {}
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_client_certificate_ending_first_brings_the_renewal_forward() {
        let ca = ca();
        let now = OffsetDateTime::now_utc();
        let i = issue(&ca, now);
        let planned = renewal_time(&i.info, &expect(&ca, now));
        // A client certificate outliving the planned renewal changes nothing.
        let late = nhi_identity::timestamp::rfc3339(i.info.not_after + Duration::hours(1));
        assert_eq!(
            renew_before_client_expiry(planned, &i.info, Some(&late)),
            planned
        );
        // One the signer cut to 30 minutes: renewed 20 minutes (a third of 1 h) before it ends.
        let early = now + Duration::minutes(30);
        let moved = renew_before_client_expiry(
            planned,
            &i.info,
            Some(&nhi_identity::timestamp::rfc3339(early)),
        );
        assert!(moved < planned);
        assert!(
            (moved - (early - Duration::seconds(1220))).abs() < Duration::seconds(2),
            "{moved}"
        );
    }

    #[test]
    fn a_certificate_capped_by_a_grant_lives_until_the_grant_ends() {
        let ca = ca();
        let now = OffsetDateTime::now_utc();
        let i = issue(&ca, now);
        let known = KnownCertificate::new(i.info.clone(), "h1", ca.public_key_der());
        // Capped at its own notAfter: no renewal at two thirds, but at the end.
        let capped = Expectations {
            not_after_cap: Some(i.info.not_after),
            now: now + Duration::minutes(50),
            ..expect(&ca, now)
        };
        match assess_known(&known, &capped) {
            Verdict::Current { renew_at, .. } => assert_eq!(renew_at, i.info.not_after),
            v => panic!("{v:?}"),
        }
        // A cap beyond notAfter does not bind: the usual renewal applies.
        let loose = Expectations {
            not_after_cap: Some(i.info.not_after + Duration::hours(5)),
            ..capped
        };
        assert_eq!(
            assess_known(&known, &loose).reissue_reason(),
            Some(ReissueReason::RenewalDue)
        );
    }
}
