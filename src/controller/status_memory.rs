//! The operator's memory of the statuses it wrote moments ago: a reconcile that sees a cache not
//! yet showing its own write neither writes the same status again nor reports the same
//! transition twice.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::uid_key::{UidKey, uid_key};

/// How long our own status write may take to show in the watch cache.
pub const CACHE_LAG_WINDOW: Duration = Duration::from_secs(10);

/// Fingerprint and time of the last status written, per object uid.
#[derive(Default)]
pub struct RecentStatusWrites(Mutex<HashMap<UidKey, (u64, Instant)>>);

impl RecentStatusWrites {
    /// The fingerprint of the status written for `uid` within the last [`CACHE_LAG_WINDOW`], if
    /// any: past that, the cache is trusted again (someone else may have changed the status
    /// since, and it must be put right).
    pub fn recent(&self, uid: &str) -> Option<u64> {
        let w = self.0.lock().ok()?;
        w.get(&uid_key(uid))
            .filter(|(_, at)| at.elapsed() < CACHE_LAG_WINDOW)
            .map(|(f, _)| *f)
    }

    /// Records the status written for `uid`.
    pub fn remember(&self, uid: &str, status: &impl serde::Serialize) {
        let fp = fingerprint(status);
        if let Ok(mut w) = self.0.lock() {
            w.insert(uid_key(uid), (fp, Instant::now()));
        }
    }

    /// Forgets an object that is going away.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut w) = self.0.lock() {
            w.remove(&uid_key(uid));
        }
    }
}

/// The fingerprint [`RecentStatusWrites`] compares statuses by.
pub fn fingerprint(value: &impl serde::Serialize) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_vec(value).unwrap_or_default().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_exactly_what_was_written() {
        let w = RecentStatusWrites::default();
        let uid = "e1bf1523-c16a-45de-b47b-0eb795b56dfa";
        assert_eq!(w.recent(uid), None);
        w.remember(uid, &"a");
        assert_eq!(w.recent(uid), Some(fingerprint(&"a")));
        assert_ne!(w.recent(uid), Some(fingerprint(&"b")));
        assert_eq!(w.recent(uid), Some(fingerprint(&"a")));
        assert_ne!(fingerprint(&"a"), fingerprint(&"b"));
        w.forget(uid);
        assert_eq!(w.recent(uid), None);
    }
}
