//! A test CA whose leaves have the operator's shape (a SPIFFE URI SAN, `localhost`, client and
//! server usages, one hour, notBefore backdated 60 s), and its CRLs, built on rcgen for this
//! crate's tests.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, RevocationReason, RevokedCertParams, SanType,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::certificate::{CertificateInfo, thumbprint};

/// A leaf as a workload gets it: the chain and key PEM, and its public facts.
#[derive(Clone)]
pub struct TestLeaf {
    pub chain_pem: String,
    pub key_pem: String,
    pub info: CertificateInfo,
}

/// A self-signed ECDSA P-384 root, valid from three hours ago for a day.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    name: DistinguishedName,
}

fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

impl TestCa {
    pub fn new() -> Self {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "reload test");
        dn.push(
            DnType::OrganizationalUnitName,
            format!("{:08x}", rand::random::<u32>()),
        );
        Self::named(dn)
    }

    /// Another root with the same name and a key of its own.
    pub fn impostor(&self) -> Self {
        Self::named(self.name.clone())
    }

    fn named(dn: DistinguishedName) -> Self {
        let now = OffsetDateTime::now_utc();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn.clone();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - Duration::hours(3);
        params.not_after = now + Duration::days(1);
        params.serial_number = Some(serial());
        let cert = params.self_signed(&key).unwrap();
        let cert_pem = cert.pem();
        let issuer = Issuer::new(params, key);
        TestCa {
            issuer,
            cert_pem,
            name: dn,
        }
    }

    /// A one-hour leaf for `localhost` issued at `at`.
    pub fn leaf(&self, at: OffsetDateTime) -> TestLeaf {
        let at = at.replace_nanosecond(0).unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "api");
        params.distinguished_name = dn;
        params.not_before = at - Duration::seconds(60);
        params.not_after = at + Duration::hours(1);
        let serial = serial();
        params.serial_number = Some(serial.clone());
        params.subject_alt_names = vec![
            SanType::URI("spiffe://cluster.local/ns/test/mi/api".try_into().unwrap()),
            SanType::DnsName("localhost".try_into().unwrap()),
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        self.sign(params, &key, &serial)
    }

    /// A client-only task certificate delegated by `parent` (task `t1`), issued at `at`.
    pub fn task_leaf(&self, at: OffsetDateTime, parent: &TestLeaf) -> TestLeaf {
        use crate::delegation::{Ancestor, DELEGATION_OID, Delegation, encode};
        let at = at.replace_nanosecond(0).unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.not_before = at - Duration::seconds(60);
        params.not_after = at + Duration::minutes(5);
        let serial = serial();
        params.serial_number = Some(serial.clone());
        let parent_id = "spiffe://cluster.local/ns/test/mi/api";
        params.subject_alt_names = vec![SanType::URI(
            format!("{parent_id}/task/t1").try_into().unwrap(),
        )];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let delegation = Delegation {
            ancestors: vec![Ancestor {
                serial_hex: parent.info.serial_hex.clone(),
                spiffe_id: parent_id.into(),
                attributes: Default::default(),
            }],
            task_id: "t1".into(),
            purpose: "a test task".into(),
            input_digest: None,
        };
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            DELEGATION_OID,
            encode(&delegation).unwrap(),
        )];
        self.sign(params, &key, &serial)
    }

    /// Signs `params` for `key` (its serial `serial`), with the authority key identifier.
    fn sign(
        &self,
        mut params: CertificateParams,
        key: &KeyPair,
        serial: &SerialNumber,
    ) -> TestLeaf {
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(key, &self.issuer).unwrap();
        TestLeaf {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            info: CertificateInfo {
                serial_hex: hex::encode(serial.to_bytes()),
                thumbprint_sha256: thumbprint(cert.der()),
                not_before: params.not_before,
                not_after: params.not_after,
            },
        }
    }

    /// A PEM CRL of this CA listing `revoked`, valid until `next_update` (in the past for a
    /// stale one).
    pub fn crl(&self, revoked: &[&TestLeaf], next_update: OffsetDateTime) -> String {
        let now = OffsetDateTime::now_utc();
        let this_update = (now - Duration::minutes(1)).min(next_update - Duration::minutes(1));
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: serial(),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|leaf| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(
                        &hex::decode(&leaf.info.serial_hex).unwrap(),
                    ),
                    revocation_time: this_update,
                    reason_code: Some(RevocationReason::CessationOfOperation),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }

    /// The trust bundle: the root alone.
    pub fn bundle(&self) -> String {
        self.cert_pem.clone()
    }
}
