//! Key pair generation for each supported algorithm (blocking work: call it off the runtime), in
//! the PKCS#8 form every consumer reads.
//!
//! Ed25519 keys are written as PKCS#8 version 1 (RFC 8410's `PrivateKeyInfo`, without the
//! public key): the version 2 form (RFC 5958, with the `[1]` public key) that the crypto provider
//! makes by default is refused by OpenSSL 3.0's `pkey`, Python's `ssl`, pyca/cryptography and so
//! by nginx, PostgreSQL, curl and most TLS servers. ECDSA and RSA keys are version 1 already.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use rcgen::{
    KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256,
    RsaKeySize,
};
use rustls_pki_types::PrivatePkcs8KeyDer;

use nhi_api::KeyAlgorithm;

/// Generates a fresh key pair. RSA generation takes tens to hundreds of milliseconds: run it in
/// `tokio::task::spawn_blocking`.
pub fn generate_key(alg: KeyAlgorithm) -> Result<KeyPair, rcgen::Error> {
    match alg {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::EcdsaP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        KeyAlgorithm::Ed25519 => {
            let v1 = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new())
                .map_err(|_| rcgen::Error::RingUnspecified)?;
            KeyPair::from_pkcs8_der_and_sign_algo(
                &PrivatePkcs8KeyDer::from(v1.as_ref()),
                &PKCS_ED25519,
            )
        }
        KeyAlgorithm::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
        KeyAlgorithm::Rsa3072 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072),
    }
}

/// Whether `key` is serialised in the form every consumer reads: false for an Ed25519 key in the
/// PKCS#8 version 2 form (one written by an earlier version): its identity is re-keyed.
pub fn is_portable(key: &KeyPair) -> bool {
    if key.algorithm() != &PKCS_ED25519 {
        return true;
    }
    Ed25519KeyPair::from_pkcs8_maybe_unchecked(key.serialized_der())
        .ok()
        .and_then(|k| k.to_pkcs8v1().ok())
        .is_some_and(|v1| v1.as_ref() == key.serialized_der())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;

    const ALL: [KeyAlgorithm; 5] = [
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
    ];

    #[test]
    fn every_algorithm_generates_a_distinct_portable_pkcs8_key() {
        for alg in ALL {
            let a = generate_key(alg).unwrap();
            let b = generate_key(alg).unwrap();
            assert!(
                a.serialize_pem().starts_with("-----BEGIN PRIVATE KEY-----"),
                "{alg:?}"
            );
            assert!(is_portable(&a), "{alg:?}");
            assert_ne!(a.public_key_raw(), b.public_key_raw(), "{alg:?}");
            // Read back as a Secret's tls.key is: the same key.
            let again = KeyPair::from_pem(&a.serialize_pem()).unwrap();
            assert_eq!(again.public_key_raw(), a.public_key_raw(), "{alg:?}");
        }
    }

    #[test]
    fn an_ed25519_key_in_the_version_2_form_is_not_portable() {
        // What the crypto provider writes by default (and earlier versions wrote).
        let v2 = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        assert!(!is_portable(&v2));
    }

    /// OpenSSL 3.0 (Debian 12's, the oldest this project supports) loads every key we write:
    /// `openssl pkey` reads it and prints the same public key.
    #[test]
    fn openssl_reads_every_key_we_write() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        for alg in ALL {
            let key = generate_key(alg).unwrap();
            let mut child = Command::new("openssl")
                .args(["pkey", "-pubout", "-outform", "DER"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("openssl (Debian package openssl) is needed by the tests");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(key.serialize_pem().as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{alg:?}: openssl pkey refused the key: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.stdout, key.subject_public_key_info(), "{alg:?}");
        }
    }
}
