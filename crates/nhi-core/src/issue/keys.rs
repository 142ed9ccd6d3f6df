//! Key pair generation for each supported algorithm (blocking work: call it off the runtime).

use rcgen::{
    KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256,
    RsaKeySize,
};

use nhi_api::KeyAlgorithm;

/// Generates a fresh key pair. RSA generation takes tens to hundreds of milliseconds: run it in
/// `tokio::task::spawn_blocking`.
pub fn generate_key(alg: KeyAlgorithm) -> Result<KeyPair, rcgen::Error> {
    match alg {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::EcdsaP384 => KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384),
        KeyAlgorithm::Ed25519 => KeyPair::generate_for(&PKCS_ED25519),
        KeyAlgorithm::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
        KeyAlgorithm::Rsa3072 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_generates_a_distinct_pkcs8_key() {
        for alg in [
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::Ed25519,
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::Rsa3072,
        ] {
            let a = generate_key(alg).unwrap();
            let b = generate_key(alg).unwrap();
            assert!(
                a.serialize_pem().starts_with("-----BEGIN PRIVATE KEY-----"),
                "{alg:?}"
            );
            assert_ne!(a.public_key_raw(), b.public_key_raw(), "{alg:?}");
        }
    }
}
