//! Certificate serial numbers: random, positive, always 16 bytes long.

use rand::RngCore;
use rcgen::SerialNumber;

/// A random positive 128-bit-wide serial number (126 random bits).
pub fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    // Positive (top bit clear) and always 16 bytes long (second bit set).
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}
