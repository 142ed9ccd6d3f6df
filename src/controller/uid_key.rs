//! Object uids as compact map keys (a leaf: it imports nothing of the crate).

use std::hash::{DefaultHasher, Hash, Hasher};

/// An object uid as a map key: the 128 bits of the UUID the apiserver assigns, not its 36-byte
/// text (the operator's memories hold one entry per identity).
pub type UidKey = u128;

/// The key of `uid`; a uid that is not a UUID (never seen from an apiserver) is hashed.
pub fn uid_key(uid: &str) -> UidKey {
    let mut digits = uid.chars().filter(|c| *c != '-');
    let parsed = digits.clone().count() == 32;
    let key = digits.try_fold(0u128, |k, c| {
        c.to_digit(16).map(|d| (k << 4) | u128::from(d))
    });
    match key {
        Some(k) if parsed => k,
        _ => {
            let mut h = DefaultHasher::new();
            uid.hash(&mut h);
            u128::from(h.finish())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::uid_key;

    #[test]
    fn uids_key_by_their_128_bits_and_stay_distinct() {
        let a = uid_key("e1bf1523-c16a-45de-b47b-0eb795b56dfa");
        assert_eq!(a, 0xe1bf1523_c16a_45de_b47b_0eb795b56dfa);
        assert_ne!(a, uid_key("e1bf1523-c16a-45de-b47b-0eb795b56dfb"));
        // Upper-case hex is the same UUID.
        assert_eq!(uid_key("E1BF1523-C16A-45DE-B47B-0EB795B56DFA"), a);
        // Not a UUID (too short, or not hex): hashed into 64 bits, distinct from one another.
        for not_a_uuid in ["uid-1", "e1bf1523-c16a-45de-b47b-0eb795b56dfz"] {
            assert!(uid_key(not_a_uuid) <= u128::from(u64::MAX), "{not_a_uuid}");
        }
        assert_ne!(uid_key("uid-1"), uid_key("uid-2"));
    }
}
