//! The identity controller's own timer: reconciles that ask to be run again later (renewals,
//! review dates, grace periods) wait here, one small entry per identity, instead of in the
//! controller's scheduler, and come back as reconcile requests when due.

use std::sync::{Arc, Mutex};

use futures::Stream;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::wakeups::Wakeups;
use crate::controller::uid_key::uid_key;
use nhi_api::MachineIdentity;

/// The wake-ups and the signal that an earlier one was asked for.
#[derive(Default)]
pub struct RenewalTimer {
    wakeups: Mutex<Wakeups>,
    earlier: Notify,
}

impl RenewalTimer {
    /// Identity `uid` (`namespace/name`) is to be reconciled again `after` from now (or
    /// sooner, if that was asked for already).
    pub fn wake_after(&self, uid: &str, namespace: &str, name: &str, after: std::time::Duration) {
        let at = Instant::now() + after;
        let first = match self.wakeups.lock() {
            Ok(mut w) => w.wake_at(uid_key(uid), namespace, name, at),
            Err(_) => return,
        };
        if first {
            self.earlier.notify_one();
        }
    }

    /// Identity `uid` is gone: nothing to wake.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut w) = self.wakeups.lock() {
            w.forget(uid_key(uid));
        }
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
                        let obj = ObjectRef::new(&name).within(&namespace);
                        return Some((obj, (timer, ready)));
                    }
                    ready = timer.next_due().await;
                    ready.reverse();
                }
            },
        )
    }

    /// Waits for the first wake-up (or an earlier one asked for meanwhile) and takes what is
    /// due then.
    async fn next_due(&self) -> Vec<(String, String)> {
        loop {
            let next = self.wakeups.lock().ok().and_then(|w| w.next());
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = self.earlier.notified() => continue,
                    }
                }
                None => {
                    self.earlier.notified().await;
                    continue;
                }
            }
            let due = match self.wakeups.lock() {
                Ok(mut w) => w.take_due(Instant::now()),
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

    const UID_A: &str = "00000000-0000-0000-0000-00000000000a";
    const UID_B: &str = "00000000-0000-0000-0000-00000000000b";
    const UID_C: &str = "00000000-0000-0000-0000-00000000000c";

    #[tokio::test(start_paused = true)]
    async fn identities_come_back_when_due_and_not_before() {
        let timer = Arc::new(RenewalTimer::default());
        let start = Instant::now();
        timer.wake_after(UID_A, "ns", "a", Duration::from_secs(300));
        timer.wake_after(UID_B, "ns", "b", Duration::from_secs(60));
        timer.wake_after(UID_C, "ns", "c", Duration::from_secs(120));
        timer.forget(UID_C);
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
    async fn an_earlier_wake_up_asked_for_while_waiting_comes_first() {
        let timer = Arc::new(RenewalTimer::default());
        let start = Instant::now();
        timer.wake_after(UID_A, "ns", "a", Duration::from_secs(3600));
        let mut due = Box::pin(timer.clone().due());
        let waiting = tokio::spawn(async move { due.next().await.map(|o| o.name) });
        tokio::time::sleep(Duration::from_secs(10)).await;
        timer.wake_after(UID_B, "other", "b", Duration::from_secs(5));
        assert_eq!(waiting.await.unwrap().as_deref(), Some("b"));
        assert_eq!(start.elapsed(), Duration::from_secs(15));
        assert_eq!(timer.waiting(), 1);
    }
}
