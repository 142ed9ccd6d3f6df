//! How many bytes each revoked certificate adds to a PEM CRL (an upper bound), and the budget a
//! CRL has: every CRL the operator signs goes into the `nhi-trust` ConfigMaps, which hold at
//! most 1 MiB in all.

/// What a ConfigMap may hold (the apiserver refuses more): 1 MiB of data.
pub const CONFIGMAP_LIMIT: usize = 1024 * 1024;

/// The part of an `nhi-trust` ConfigMap the CRLs may take: the rest is for the CA bundle (up to
/// three roots during a rotation, a few kB) and each CRL's header and signature.
pub const CRL_BUDGET: usize = CONFIGMAP_LIMIT - 32 * 1024;

/// Bytes of DER a revoked certificate takes in a CRL: the entry's SEQUENCE holding the serial
/// INTEGER (with a leading zero byte when the serial's top bit is set) and the revocation time
/// (UTCTime), plus the reason code extension when the entry carries one.
fn entry_der_bytes(serial_bytes: usize, sign_byte: bool, reason_code: bool) -> usize {
    let integer = 2 + serial_bytes + usize::from(sign_byte);
    let time = 2 + 13;
    // SEQUENCE OF Extension { OID 2.5.29.21, OCTET STRING { ENUMERATED } }.
    let extensions = if reason_code { 2 + 2 + 5 + 2 + 3 } else { 0 };
    let content = integer + time + extensions;
    2 + content
}

/// Bytes of PEM a revoked certificate adds to a CRL, at most: base64 (4 characters for every 3
/// bytes, rounded up) and a line break every 64 characters. `reason_code`: whether the entry
/// carries one.
pub fn entry_pem_bytes(serial_hex: &str, reason_code: bool) -> usize {
    let serial_bytes = serial_hex.len().div_ceil(2);
    let sign_byte = serial_hex
        .chars()
        .next()
        .and_then(|c| c.to_digit(16))
        .is_none_or(|d| d >= 8);
    let der = entry_der_bytes(serial_bytes, sign_byte, reason_code);
    let base64 = (der * 4).div_ceil(3);
    base64 + base64.div_ceil(64)
}
