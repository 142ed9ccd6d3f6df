//! The operator's memory of the statuses it wrote moments ago: a reconcile that sees a cache not
//! yet showing its own write neither writes the same status again nor reports the same
//! transition twice.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::uid_key::{UidKey, uid_key};

/// How long our own status write may take to show in the watch cache.
pub const CACHE_LAG_WINDOW: Duration = Duration::from_secs(10);

/// Fingerprint and time of the last status written, per object uid; entries older than
/// [`CACHE_LAG_WINDOW`] are dropped as the map grows (they are never consulted again), so it
/// holds about the writes of the last moments rather than one entry per object ever written.
#[derive(Default)]
pub struct RecentStatusWrites(Mutex<Writes>);

#[derive(Default)]
struct Writes {
    by_uid: HashMap<UidKey, (u64, Instant)>,
    /// The size at which stale entries are dropped next.
    prune_at: usize,
}

/// The fewest entries worth a pass over the map.
const PRUNE_FLOOR: usize = 1024;

impl RecentStatusWrites {
    /// The fingerprint of the status written for `uid` within the last [`CACHE_LAG_WINDOW`], if
    /// any: past that, the cache is trusted again (someone else may have changed the status
    /// since, and it must be put right).
    pub fn recent(&self, uid: &str) -> Option<u64> {
        let w = self.0.lock().ok()?;
        w.by_uid
            .get(&uid_key(uid))
            .filter(|(_, at)| at.elapsed() < CACHE_LAG_WINDOW)
            .map(|(f, _)| *f)
    }

    /// Records the status written for `uid`.
    pub fn remember(&self, uid: &str, status: &impl serde::Serialize) {
        let fp = fingerprint(status);
        if let Ok(mut w) = self.0.lock() {
            w.by_uid.insert(uid_key(uid), (fp, Instant::now()));
            if w.by_uid.len() >= w.prune_at.max(PRUNE_FLOOR) {
                w.by_uid
                    .retain(|_, (_, at)| at.elapsed() < CACHE_LAG_WINDOW);
                w.by_uid.shrink_to_fit();
                w.prune_at = 2 * w.by_uid.len();
            }
        }
    }

    /// Forgets an object that is going away.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut w) = self.0.lock() {
            w.by_uid.remove(&uid_key(uid));
        }
    }

    /// How many writes are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map(|w| w.by_uid.len()).unwrap_or(0)
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

    #[tokio::test(start_paused = true)]
    async fn writes_past_the_window_are_dropped_as_the_map_grows() {
        let w = RecentStatusWrites::default();
        for i in 0..PRUNE_FLOOR - 1 {
            w.remember(&format!("old-{i}"), &i);
        }
        tokio::time::advance(CACHE_LAG_WINDOW).await;
        assert_eq!(w.recent("old-0"), None);
        assert_eq!(w.len(), PRUNE_FLOOR - 1);
        // The write that reaches the floor drops every stale entry, and keeps itself.
        w.remember("new", &"s");
        assert_eq!(w.len(), 1);
        assert_eq!(w.recent("new"), Some(fingerprint(&"s")));
        // Recent writes are kept however many there are.
        for i in 0..3 * PRUNE_FLOOR {
            w.remember(&format!("recent-{i}"), &i);
        }
        assert_eq!(w.len(), 3 * PRUNE_FLOOR + 1);
        assert_eq!(w.recent("recent-0"), Some(fingerprint(&0)));
    }
}
