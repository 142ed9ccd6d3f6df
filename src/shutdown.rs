//! The process's shutdown request: SIGTERM (what Kubernetes sends; the operator may run as PID
//! 1, which has no default handler) or SIGINT, listened for once from start-up, so that a signal
//! arriving while the controllers are still starting is not lost (a leaf: it imports nothing of
//! the crate).

use kube::runtime::reflector::Store;
use tokio::sync::watch;

/// Whether shutdown was requested; cheap to clone, and once requested it stays so.
#[derive(Clone)]
pub struct Shutdown {
    requested: watch::Receiver<bool>,
}

impl Shutdown {
    /// Starts listening for SIGTERM and SIGINT (inside a Tokio runtime).
    pub fn listen() -> Shutdown {
        let (tx, rx) = watch::channel(false);
        #[cfg(unix)]
        let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        tokio::spawn(async move {
            #[cfg(unix)]
            match term {
                Ok(mut term) => tokio::select! {
                    _ = term.recv() => {},
                    _ = tokio::signal::ctrl_c() => {},
                },
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutdown requested");
            let _ = tx.send(true);
        });
        Shutdown { requested: rx }
    }

    /// Completes once shutdown is requested (at once if it already was).
    pub async fn requested(mut self) {
        let _ = self.requested.wait_for(|requested| *requested).await;
    }

    /// Completes once shutdown is requested and `store` has completed its first list: a
    /// kube-runtime controller holds its reconcilers until its store is ready, and stopping the
    /// watch that fills it before then would hold them (and the shutdown) forever.
    pub async fn requested_once_ready<K>(self, store: Store<K>)
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        self.requested().await;
        let _ = store.wait_until_ready().await;
    }

    /// Completes `grace` after shutdown was requested: what is still running then is dropped.
    pub async fn overdue(self, grace: std::time::Duration) {
        self.requested().await;
        tokio::time::sleep(grace).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_made_before_anyone_waits_is_seen_by_every_later_waiter() {
        let (tx, rx) = watch::channel(false);
        let shutdown = Shutdown { requested: rx };
        tx.send(true).unwrap();
        // Both complete although they started waiting after the request.
        shutdown.clone().requested().await;
        shutdown.requested().await;
    }
}
