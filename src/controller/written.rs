//! What this operator last wrote into each object's status, for a short while: a reconcile that
//! sees a cache not yet showing its own write neither writes the same status again nor reports
//! the same transition twice.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::context::{UidKey, uid_key};

/// How long our own status write may take to show in the watch cache.
pub const CACHE_LAG_WINDOW: Duration = Duration::from_secs(10);

/// Fingerprint and time of the last status written, per object uid.
#[derive(Default)]
pub struct WrittenStatuses(Mutex<HashMap<UidKey, (u64, Instant)>>);

impl WrittenStatuses {
    /// Whether `status` is exactly what was written for `uid` within the last
    /// [`CACHE_LAG_WINDOW`]: past that, the cache is trusted again (someone else may have changed
    /// the status since, and it must be put right).
    pub fn already_written(&self, uid: &str, status: &impl serde::Serialize) -> bool {
        let fp = fingerprint(status);
        self.0.lock().is_ok_and(|w| {
            w.get(&uid_key(uid))
                .is_some_and(|(f, at)| *f == fp && at.elapsed() < CACHE_LAG_WINDOW)
        })
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

fn fingerprint(value: &impl serde::Serialize) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_vec(value).unwrap_or_default().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_exactly_what_was_written() {
        let w = WrittenStatuses::default();
        let uid = "e1bf1523-c16a-45de-b47b-0eb795b56dfa";
        assert!(!w.already_written(uid, &"a"));
        w.remember(uid, &"a");
        assert!(w.already_written(uid, &"a"));
        assert!(!w.already_written(uid, &"b"));
        w.forget(uid);
        assert!(!w.already_written(uid, &"a"));
    }
}
