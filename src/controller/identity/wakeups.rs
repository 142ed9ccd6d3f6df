//! When each identity is to be looked at again (its renewal, mostly), as plain data: one small
//! entry per identity, ordered by time. The controller's own scheduler kept about 650 bytes per
//! identity for the same (an object reference with four strings, twice, and a delay queue slot).
//!
//! Entries are keyed by `namespace/name`, what the controller looks an identity up by: a
//! wake-up asked for through anything else (a Secret's owner reference, say) can only ever wake
//! the object it names, never take over another identity's.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::time::Instant;

/// The wake-ups to come, at most one per identity (the earliest asked for).
#[derive(Default)]
pub struct Wakeups {
    by_time: BTreeSet<(Instant, Arc<str>)>,
    by_key: HashMap<Arc<str>, Instant>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Wakeups {
    /// Asks for identity `namespace/name` to be looked at by `at`: an earlier wake-up already
    /// asked for stands. Returns whether `at` is now the first wake-up of all.
    pub fn wake_at(&mut self, namespace: &str, name: &str, at: Instant) -> bool {
        let key = key(namespace, name);
        let key: Arc<str> = match self.by_key.get_key_value(key.as_str()) {
            Some((_, earlier)) if *earlier <= at => return false,
            Some((k, later)) => {
                let k = k.clone();
                self.by_time.remove(&(*later, k.clone()));
                k
            }
            None => key.into(),
        };
        self.by_key.insert(key.clone(), at);
        self.by_time.insert((at, key));
        self.next() == Some(at)
    }

    /// Drops the wake-up of identity `namespace/name` (it is gone).
    pub fn forget(&mut self, namespace: &str, name: &str) {
        if let Some((k, at)) = self.by_key.remove_entry(key(namespace, name).as_str()) {
            self.by_time.remove(&(at, k));
        }
    }

    /// The first wake-up to come.
    pub fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Takes up to `max` of the wake-ups due at `now`, earliest first, as `(namespace, name)`.
    pub fn take_due(&mut self, now: Instant, max: usize) -> Vec<(String, String)> {
        let mut due = vec![];
        while let Some((at, _)) = self.by_time.first() {
            if *at > now || due.len() >= max {
                break;
            }
            let Some((_, key)) = self.by_time.pop_first() else {
                break;
            };
            self.by_key.remove(&key);
            let (namespace, name) = key.split_once('/').unwrap_or(("", &key));
            due.push((namespace.to_string(), name.to_string()));
        }
        due
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn names(due: Vec<(String, String)>) -> Vec<String> {
        due.into_iter().map(|(ns, n)| format!("{ns}/{n}")).collect()
    }

    #[test]
    fn wake_ups_come_due_in_time_order_once() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Wakeups::default();
        assert!(w.wake_at("ns", "a", t0 + s(30)));
        assert!(w.wake_at("ns", "b", t0 + s(10)));
        assert!(!w.wake_at("other", "c", t0 + s(20)));
        assert_eq!(w.next(), Some(t0 + s(10)));
        assert!(names(w.take_due(t0 + s(5), 10)).is_empty());
        assert_eq!(names(w.take_due(t0 + s(20), 10)), ["ns/b", "other/c"]);
        assert_eq!(w.len(), 1);
        assert_eq!(names(w.take_due(t0 + s(60), 10)), ["ns/a"]);
        assert!(w.is_empty() && w.next().is_none());
    }

    #[test]
    fn the_earliest_wake_up_asked_for_stands() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Wakeups::default();
        w.wake_at("ns", "a", t0 + s(10));
        // A later one does not move it; an earlier one does.
        assert!(!w.wake_at("ns", "a", t0 + s(50)));
        assert_eq!(w.next(), Some(t0 + s(10)));
        assert!(w.wake_at("ns", "a", t0 + s(5)));
        assert_eq!(w.len(), 1);
        assert_eq!(names(w.take_due(t0 + s(5), 10)), ["ns/a"]);
        assert!(w.take_due(t0 + s(100), 10).is_empty());
    }

    #[test]
    fn the_same_name_in_another_namespace_is_another_identity() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Wakeups::default();
        w.wake_at("tenant-b", "api", t0 + s(600));
        // Another namespace's wake-up for its own "api" leaves tenant-b's renewal alone.
        w.wake_at("tenant-a", "api", t0);
        assert_eq!(names(w.take_due(t0, 10)), ["tenant-a/api"]);
        assert_eq!(names(w.take_due(t0 + s(600), 10)), ["tenant-b/api"]);
    }

    #[test]
    fn due_wake_ups_are_taken_a_batch_at_a_time() {
        let t0 = Instant::now();
        let mut w = Wakeups::default();
        for i in 0..5 {
            w.wake_at("ns", &format!("i{i}"), t0);
        }
        assert_eq!(names(w.take_due(t0, 2)), ["ns/i0", "ns/i1"]);
        assert_eq!(names(w.take_due(t0, 2)), ["ns/i2", "ns/i3"]);
        assert_eq!(names(w.take_due(t0, 2)), ["ns/i4"]);
    }

    #[test]
    fn a_forgotten_identity_is_not_woken() {
        let t0 = Instant::now();
        let mut w = Wakeups::default();
        w.wake_at("ns", "a", t0);
        w.wake_at("ns", "b", t0);
        w.forget("ns", "a");
        w.forget("ns", "z");
        assert_eq!(names(w.take_due(t0, 10)), ["ns/b"]);
        assert!(w.is_empty());
    }
}
