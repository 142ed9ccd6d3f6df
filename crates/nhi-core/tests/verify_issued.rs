//! What the operator issues verifies with the workload library: chains, usages, grants and
//! attributes, revocation lists, and the failures a relying service must see.

mod common;

use common::*;
use nhi_api::Usage;
use nhi_core::issue::leaf::{IssuedCertificate, LeafRequest};
use nhi_identity::extension::{EXTENSION_OID, IdentityClaims, encode};
use nhi_identity::verify::*;
use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::Duration;
use time::OffsetDateTime;

fn request(extensions: Vec<(Vec<u64>, Vec<u8>)>, usages: Vec<Usage>) -> LeafRequest {
    LeafRequest {
        spiffe_id: "spiffe://cluster.local/ns/payments/mi/checkout".into(),
        common_name: None,
        namespace: "payments".into(),
        dns_names: vec![],
        usages,
        ttl: Duration::hours(1),
        not_after_cap: None,
        extensions,
    }
}

fn with_grants(grants: &[&str]) -> Vec<(Vec<u64>, Vec<u8>)> {
    let claims = IdentityClaims {
        grants: grants.iter().map(|s| s.to_string()).collect(),
        attributes: [("project".to_string(), "shop".to_string())].into(),
    };
    vec![(EXTENSION_OID.to_vec(), encode(&claims).unwrap())]
}

#[test]
fn returns_the_identity_with_its_grants_and_attributes() {
    let ca = ca();
    let issued = issue(
        &ca,
        &request(with_grants(&["payments.process"]), vec![Usage::Client]),
    );
    let v = verify_identity(
        &chain(&issued),
        &trust(&ca),
        Revocation::NotChecked,
        Purpose::Client,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!(v.identity.namespace, "payments");
    assert_eq!(v.identity.name, "checkout");
    assert!(v.has_grant("payments.process"));
    assert!(!v.has_grant("payments.refund"));
    assert!(v.has_grant_from("payments.process", "cluster.local", &["shop", "payments"]));
    assert!(!v.has_grant_from("payments.process", "cluster.local", &["sandbox"]));
    // The same namespace of another trust domain (another cluster's root in the bundle) is not
    // trusted.
    assert!(!v.has_grant_from("payments.process", "other.example", &["payments"]));
    assert_eq!(v.attributes["project"], "shop");
    assert_eq!(v.serial_hex, issued.info.serial_hex);
    // Without the extension: the identity, with no grants.
    let plain = issue(&ca, &request(vec![], vec![Usage::Client]));
    let v = verify_identity(
        &chain(&plain),
        &trust(&ca),
        Revocation::NotChecked,
        Purpose::Client,
        OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert!(v.grants.is_empty());
}

#[test]
fn refuses_untrusted_expired_not_yet_valid_and_wrong_usage() {
    let ca = ca();
    let other = self::ca();
    let issued = issue(&ca, &request(with_grants(&["a.b"]), vec![Usage::Client]));
    let now = OffsetDateTime::now_utc();
    let check = |t: &TrustBundle, at: OffsetDateTime, p: Purpose| {
        verify_identity(&chain(&issued), t, Revocation::NotChecked, p, at)
    };
    assert!(matches!(
        check(&trust(&other), now, Purpose::Client),
        Err(VerifyError::Untrusted(_))
    ));
    assert_eq!(
        check(&trust(&ca), now + Duration::hours(2), Purpose::Client),
        Err(VerifyError::Expired)
    );
    assert_eq!(
        check(&trust(&ca), now - Duration::hours(1), Purpose::Client),
        Err(VerifyError::NotYetValid)
    );
    assert_eq!(
        check(&trust(&ca), now, Purpose::Server),
        Err(VerifyError::WrongUsage(Purpose::Server))
    );
    assert_eq!(
        verify_identity(
            &[],
            &trust(&ca),
            Revocation::NotChecked,
            Purpose::Client,
            now
        ),
        Err(VerifyError::NoCertificate)
    );
    assert!(matches!(
        verify_identity(
            &[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])],
            &trust(&ca),
            Revocation::NotChecked,
            Purpose::Client,
            now
        ),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn refuses_a_malformed_extension_with_a_clear_error() {
    let ca = ca();
    let garbage = vec![(EXTENSION_OID.to_vec(), vec![0x30, 0x03, 0x02, 0x01, 0x09])];
    let issued = issue(&ca, &request(garbage, vec![Usage::Client]));
    let err = verify_identity(
        &chain(&issued),
        &trust(&ca),
        Revocation::NotChecked,
        Purpose::Client,
        OffsetDateTime::now_utc(),
    )
    .unwrap_err();
    assert!(matches!(err, VerifyError::Extension(_)), "{err}");
    assert!(err.to_string().contains("identity extension"), "{err}");
}

#[test]
fn during_a_ca_rotation_each_certificate_is_checked_against_its_issuers_crl() {
    // Two roots made alike (same common name, distinct generation), as a rotation makes them;
    // both trusted.
    let (old, new) = (ca(), ca());
    let both = TrustBundle::from_pem(&format!(
        "{}{}",
        old.trust_bundle_pem(),
        new.trust_bundle_pem()
    ))
    .unwrap();
    let old_revoked = issue(&old, &request(vec![], vec![Usage::Client]));
    let old_fine = issue(&old, &request(vec![], vec![Usage::Client]));
    let new_fine = issue(&new, &request(vec![], vec![Usage::Client]));
    let serials = [old_revoked.info.serial_hex.as_str()];
    // crl.pem as the operator publishes it during the overlap: the new CA's, then the old's.
    let list = RevocationList::from_pem(&format!(
        "{}{}",
        crl_pem(&new, &serials),
        crl_pem(&old, &serials)
    ))
    .unwrap();
    let now = OffsetDateTime::now_utc();
    let check = |i: &IssuedCertificate| {
        verify_identity(
            &chain(i),
            &both,
            Revocation::Check(&list),
            Purpose::Client,
            now,
        )
    };
    assert_eq!(check(&old_revoked), Err(VerifyError::Revoked));
    assert!(check(&old_fine).is_ok(), "{:?}", check(&old_fine));
    assert!(check(&new_fine).is_ok(), "{:?}", check(&new_fine));
}

#[test]
fn refuses_a_revoked_certificate_and_accepts_an_unrevoked_one() {
    let ca = ca();
    let revoked = issue(&ca, &request(with_grants(&["a.b"]), vec![Usage::Client]));
    let fine = issue(&ca, &request(with_grants(&["a.b"]), vec![Usage::Client]));
    let now = OffsetDateTime::now_utc();
    let serial = hex::decode(&revoked.info.serial_hex).unwrap();
    let crl = CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        next_update: now + Duration::hours(1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: now,
            reason_code: Some(RevocationReason::CessationOfOperation),
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(ca.issuer())
    .unwrap();
    let list = RevocationList::from_pem(&crl.pem().unwrap()).unwrap();
    assert_eq!(
        verify_identity(
            &chain(&revoked),
            &trust(&ca),
            Revocation::Check(&list),
            Purpose::Client,
            now
        ),
        Err(VerifyError::Revoked)
    );
    assert!(
        verify_identity(
            &chain(&fine),
            &trust(&ca),
            Revocation::Check(&list),
            Purpose::Client,
            now
        )
        .is_ok()
    );
    assert!(matches!(
        RevocationList::from_pem("not a crl"),
        Err(VerifyError::BadCrl(_))
    ));
}

#[test]
fn a_leaf_without_a_common_name_verifies_here_and_with_openssl() {
    // SPIFFE IDs longer than a CN may be leave the CN out: the URI SAN is the identity.
    let ca = ca();
    let mut req = request(with_grants(&["orders.read"]), vec![Usage::Client]);
    req.spiffe_id = format!(
        "spiffe://cluster.local/ns/{}/mi/{}",
        "n".repeat(40),
        "i".repeat(40)
    );
    req.common_name = None;
    let issued = issue(&ca, &req);
    let verified = verify_identity(
        &chain(&issued),
        &trust(&ca),
        Revocation::NotChecked,
        Purpose::Client,
        OffsetDateTime::now_utc(),
    )
    .expect("a leaf without CN verifies");
    assert!(verified.has_grant("orders.read"));
    let leaf_pem = pem::encode(&pem::Pem::new("CERTIFICATE", issued.leaf_der.clone()));
    if let Some(out) = openssl_verify(ca.trust_bundle_pem(), &leaf_pem) {
        assert!(
            out.status.success(),
            "openssl verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
