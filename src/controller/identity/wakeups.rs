//! When each identity is to be looked at again (its renewal, mostly), as plain data: one small
//! entry per identity, ordered by time. The controller's own scheduler kept about 650 bytes per
//! identity for the same (an object reference with four strings, twice, and a delay queue slot).

use std::collections::{BTreeSet, HashMap};
use tokio::time::Instant;

use crate::controller::uid_key::UidKey;

/// The wake-ups to come, at most one per identity (the earliest asked for).
#[derive(Default)]
pub struct Wakeups {
    by_time: BTreeSet<(Instant, UidKey)>,
    /// When, and the identity's `namespace/name`.
    by_uid: HashMap<UidKey, (Instant, Box<str>)>,
}

impl Wakeups {
    /// Asks for identity `uid` (`namespace/name`) to be looked at by `at`: an earlier wake-up
    /// already asked for stands. Returns whether `at` is now the first wake-up of all.
    pub fn wake_at(&mut self, uid: UidKey, namespace: &str, name: &str, at: Instant) -> bool {
        match self.by_uid.get(&uid) {
            Some((earlier, _)) if *earlier <= at => return false,
            Some((later, _)) => {
                self.by_time.remove(&(*later, uid));
            }
            None => {}
        }
        let key = format!("{namespace}/{name}").into_boxed_str();
        self.by_uid.insert(uid, (at, key));
        self.by_time.insert((at, uid));
        self.next() == Some(at)
    }

    /// Drops the wake-up of identity `uid` (it is gone).
    pub fn forget(&mut self, uid: UidKey) {
        if let Some((at, _)) = self.by_uid.remove(&uid) {
            self.by_time.remove(&(at, uid));
        }
    }

    /// The first wake-up to come.
    pub fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Takes up to `max` of the wake-ups due at `now`, earliest first, as `(namespace, name)`.
    pub fn take_due(&mut self, now: Instant, max: usize) -> Vec<(String, String)> {
        let mut due = vec![];
        while let Some(&(at, uid)) = self.by_time.first() {
            if at > now || due.len() >= max {
                break;
            }
            self.by_time.pop_first();
            if let Some((_, key)) = self.by_uid.remove(&uid) {
                let (namespace, name) = key.split_once('/').unwrap_or(("", &key));
                due.push((namespace.to_string(), name.to_string()));
            }
        }
        due
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
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
        assert!(w.wake_at(1, "ns", "a", t0 + s(30)));
        assert!(w.wake_at(2, "ns", "b", t0 + s(10)));
        assert!(!w.wake_at(3, "other", "c", t0 + s(20)));
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
        w.wake_at(1, "ns", "a", t0 + s(10));
        // A later one does not move it; an earlier one does.
        assert!(!w.wake_at(1, "ns", "a", t0 + s(50)));
        assert_eq!(w.next(), Some(t0 + s(10)));
        assert!(w.wake_at(1, "ns", "a", t0 + s(5)));
        assert_eq!(w.len(), 1);
        assert_eq!(names(w.take_due(t0 + s(5), 10)), ["ns/a"]);
        assert!(w.take_due(t0 + s(100), 10).is_empty());
    }

    #[test]
    fn due_wake_ups_are_taken_a_batch_at_a_time() {
        let t0 = Instant::now();
        let mut w = Wakeups::default();
        for uid in 0..5 {
            w.wake_at(uid, "ns", &format!("i{uid}"), t0);
        }
        assert_eq!(names(w.take_due(t0, 2)), ["ns/i0", "ns/i1"]);
        assert_eq!(names(w.take_due(t0, 2)), ["ns/i2", "ns/i3"]);
        assert_eq!(names(w.take_due(t0, 2)), ["ns/i4"]);
    }

    #[test]
    fn a_forgotten_identity_is_not_woken() {
        let t0 = Instant::now();
        let mut w = Wakeups::default();
        w.wake_at(1, "ns", "a", t0);
        w.wake_at(2, "ns", "b", t0);
        w.forget(1);
        w.forget(7);
        assert_eq!(names(w.take_due(t0, 10)), ["ns/b"]);
    }
}
