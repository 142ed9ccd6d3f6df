//! The identity controller's own timer: reconciles that ask to be run again later (renewals,
//! review dates, grace periods) wait here, one small entry per identity, instead of in the
//! controller's scheduler, and come back as reconcile requests when due. Every other request
//! for an identity comes through here too, due at once: a relist's (every identity, when the
//! operator starts), a relisted Secret's owner, and those of the other controllers (a CA
//! rotation or a policy change asks for every identity). They are handed to the controller a
//! few hundred ahead of the reconciles that finish, not 100,000 at a time into its scheduler
//! (about 650 bytes each there).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::wakeups::Wakeups;
use nhi_api::MachineIdentity;

/// How many requests handed to the controller may be unfinished at once.
const OUTSTANDING: usize = 256;

/// How many due wake-ups are taken at a time.
const BATCH: usize = 64;

/// How long the timer waits for a finished reconcile before it stops counting on the ones it
/// handed over (a request merged with another one finishes once). The count is loose: every
/// finished reconcile is counted, whoever asked for it, so it errs towards handing over more.
const SETTLE_PATIENCE: Duration = Duration::from_secs(1);

/// The longest a relist holds the wake-ups back: a list that keeps failing must not stop
/// renewals (they then run against the cache as it was, as they would without the hold).
const HOLD_LIMIT: Duration = Duration::from_secs(60);

/// The wake-ups, and what paces their handing over.
pub struct WakeupTimer {
    wakeups: Mutex<Wakeups>,
    /// Something changed for the waiting loop: an earlier wake-up, or the hold.
    changed: Notify,
    /// Requests handed to the controller whose reconcile has not finished.
    outstanding: AtomicUsize,
    limit: usize,
    settled: Notify,
    /// Since when the identity cache relists, if it does: nothing is handed over until it has
    /// the whole list (the controller finds the objects of its requests there).
    held_since: Mutex<Option<Instant>>,
}

impl Default for WakeupTimer {
    fn default() -> Self {
        WakeupTimer::with_limit(OUTSTANDING)
    }
}

impl WakeupTimer {
    /// A timer that hands the controller at most `limit` requests ahead of finished reconciles.
    pub fn with_limit(limit: usize) -> Self {
        WakeupTimer {
            wakeups: Mutex::default(),
            changed: Notify::new(),
            outstanding: AtomicUsize::new(0),
            limit: limit.max(1),
            settled: Notify::new(),
            held_since: Mutex::new(None),
        }
    }

    /// Identity `namespace/name` is to be reconciled again `after` from now (or sooner, if that
    /// was asked for already).
    pub fn wake_after(&self, namespace: &str, name: &str, after: Duration) {
        let at = Instant::now() + after;
        let first = match self.wakeups.lock() {
            Ok(mut w) => w.wake_at(namespace, name, at),
            Err(_) => return,
        };
        if first {
            self.changed.notify_one();
        }
    }

    /// Identity `namespace/name` is gone: nothing to wake.
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut w) = self.wakeups.lock() {
            w.forget(namespace, name);
        }
    }

    /// Holds the wake-ups while the identity cache relists (`true`), or lets them go.
    pub fn hold(&self, held: bool) {
        if let Ok(mut since) = self.held_since.lock() {
            *since = match (held, *since) {
                (true, Some(t)) => Some(t),
                (true, None) => Some(Instant::now()),
                (false, _) => None,
            };
        }
        self.changed.notify_one();
    }

    /// How much longer the hold lasts, if there is one.
    fn held_for(&self) -> Option<Duration> {
        let since = (*self.held_since.lock().ok()?)?;
        HOLD_LIMIT
            .checked_sub(since.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// Waits out the hold, if any.
    async fn unheld(&self) {
        while let Some(left) = self.held_for() {
            let _ = tokio::time::timeout(left, self.changed.notified()).await;
        }
    }

    /// A reconcile finished (whatever asked for it).
    pub fn settled(&self) {
        let _ = (self.outstanding).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(1))
        });
        self.settled.notify_one();
    }

    /// Waits until fewer than the limit of requests are outstanding, then counts one more. A
    /// second without a finished reconcile clears the count: requests the controller merged
    /// never finish on their own, and must not hold the rest back.
    async fn room(&self) {
        while self.outstanding.load(Ordering::Relaxed) >= self.limit {
            let patience = tokio::time::timeout(SETTLE_PATIENCE, self.settled.notified());
            if patience.await.is_err() {
                self.outstanding.store(0, Ordering::Relaxed);
            }
        }
        self.outstanding.fetch_add(1, Ordering::Relaxed);
    }

    /// How many identities wait for a wake-up.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.wakeups.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// The identities to reconcile, each when its wake-up is due (it never ends).
    pub fn due(self: Arc<Self>) -> impl Stream<Item = ObjectRef<MachineIdentity>> + Send {
        futures::stream::unfold(
            (self, Vec::<(String, String)>::new()),
            |(timer, mut ready)| async move {
                loop {
                    if let Some((namespace, name)) = ready.pop() {
                        timer.unheld().await;
                        timer.room().await;
                        let obj = ObjectRef::new(&name).within(&namespace);
                        return Some((obj, (timer, ready)));
                    }
                    ready = timer.next_due().await;
                    ready.reverse();
                }
            },
        )
    }

    /// Waits for the first wake-up (or an earlier one asked for meanwhile) and for the end of
    /// any hold, and takes what is due then.
    async fn next_due(&self) -> Vec<(String, String)> {
        loop {
            self.unheld().await;
            let next = self.wakeups.lock().ok().and_then(|w| w.next());
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.changed.notified() => continue,
                    }
                }
                None => {
                    self.changed.notified().await;
                    continue;
                }
            }
            if self.held_for().is_some() {
                continue;
            }
            let due = match self.wakeups.lock() {
                Ok(mut w) => w.take_due(Instant::now(), BATCH),
                Err(_) => vec![],
            };
            if !due.is_empty() {
                return due;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn identities_come_back_when_due_and_not_before() {
        let timer = Arc::new(WakeupTimer::default());
        let start = Instant::now();
        timer.wake_after("ns", "a", Duration::from_secs(300));
        timer.wake_after("ns", "b", Duration::from_secs(60));
        timer.wake_after("ns", "c", Duration::from_secs(120));
        timer.forget("ns", "c");
        let mut due = Box::pin(timer.clone().due());
        let first = due.next().await.unwrap();
        assert_eq!(
            (first.name.as_str(), start.elapsed()),
            ("b", Duration::from_secs(60))
        );
        let second = due.next().await.unwrap();
        assert_eq!(
            (second.name.as_str(), start.elapsed()),
            ("a", Duration::from_secs(300))
        );
        assert_eq!(timer.waiting(), 0);
        // Nothing more comes.
        let nothing = tokio::time::timeout(Duration::from_secs(3600), due.next()).await;
        assert!(nothing.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_are_handed_over_as_reconciles_finish() {
        let timer = Arc::new(WakeupTimer::with_limit(2));
        for name in ["a", "b", "c"] {
            timer.wake_after("ns", name, Duration::ZERO);
        }
        let mut due = Box::pin(timer.clone().due());
        let start = Instant::now();
        assert_eq!(due.next().await.unwrap().name, "a");
        assert_eq!(due.next().await.unwrap().name, "b");
        // Two outstanding: the third waits for a reconcile to finish.
        let third = tokio::time::timeout(Duration::from_millis(500), due.next()).await;
        assert!(third.is_err());
        timer.settled();
        assert_eq!(due.next().await.unwrap().name, "c");
        assert!(start.elapsed() < SETTLE_PATIENCE);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_that_never_finish_hold_the_rest_back_a_second_at_most() {
        let timer = Arc::new(WakeupTimer::with_limit(1));
        timer.wake_after("ns", "a", Duration::ZERO);
        timer.wake_after("ns", "b", Duration::ZERO);
        let mut due = Box::pin(timer.clone().due());
        let start = Instant::now();
        assert_eq!(due.next().await.unwrap().name, "a");
        // "a" is never reported finished (merged with another request, say).
        assert_eq!(due.next().await.unwrap().name, "b");
        assert_eq!(start.elapsed(), SETTLE_PATIENCE);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_handed_over_while_the_cache_relists() {
        let timer = Arc::new(WakeupTimer::default());
        timer.hold(true);
        timer.wake_after("ns", "a", Duration::ZERO);
        let mut due = Box::pin(timer.clone().due());
        let held = tokio::time::timeout(HOLD_LIMIT / 2, due.next()).await;
        assert!(held.is_err());
        timer.hold(false);
        assert_eq!(due.next().await.unwrap().name, "a");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_taken_while_wake_ups_are_due_holds_them() {
        let timer = Arc::new(WakeupTimer::default());
        let start = Instant::now();
        timer.wake_after("ns", "renewal", Duration::from_secs(10));
        let mut due = Box::pin(timer.clone().due());
        let waiting = tokio::spawn(async move {
            let first = due.next().await.map(|o| o.name);
            (first, due.next().await.map(|o| o.name))
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        // A relist starts, and its identities are due at once: none goes before it ends.
        timer.hold(true);
        timer.wake_after("ns", "relisted", Duration::ZERO);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!waiting.is_finished());
        timer.hold(false);
        let (first, second) = waiting.await.unwrap();
        assert_eq!(
            (first.as_deref(), second.as_deref()),
            (Some("relisted"), Some("renewal"))
        );
        assert_eq!(start.elapsed(), Duration::from_secs(25));
    }

    #[tokio::test(start_paused = true)]
    async fn a_relist_that_never_ends_holds_the_wake_ups_a_minute_at_most() {
        let timer = Arc::new(WakeupTimer::default());
        let start = Instant::now();
        timer.hold(true);
        timer.wake_after("ns", "renewal", Duration::from_secs(1));
        let mut due = Box::pin(timer.clone().due());
        assert_eq!(due.next().await.unwrap().name, "renewal");
        assert_eq!(start.elapsed(), HOLD_LIMIT);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_wake_up_asked_for_while_waiting_comes_first() {
        let timer = Arc::new(WakeupTimer::default());
        let start = Instant::now();
        timer.wake_after("ns", "a", Duration::from_secs(3600));
        let mut due = Box::pin(timer.clone().due());
        let waiting = tokio::spawn(async move { due.next().await.map(|o| o.name) });
        tokio::time::sleep(Duration::from_secs(10)).await;
        timer.wake_after("other", "b", Duration::from_secs(5));
        assert_eq!(waiting.await.unwrap().as_deref(), Some("b"));
        assert_eq!(start.elapsed(), Duration::from_secs(15));
        assert_eq!(timer.waiting(), 1);
    }
}
