//! Change detection for an identity directory (and the directory of its `crl.pem`): an inotify
//! watch on each directory itself (which sees kubelet's `..data` swap and survives it), debounced,
//! plus a polling fallback that catches what events miss (`subPath` mounts, network filesystems).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::options::ReloadOptions;

/// What the watch calls, off the runtime, when the directory may have changed.
pub(super) type Reload = Arc<dyn Fn() + Send + Sync>;

/// The shortest polling interval accepted.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A running watch. Dropping it (or calling [`WatchHandle::stop`]) stops watching; the identity
/// and every config built from it keep serving the last identity loaded.
#[derive(Debug)]
pub struct WatchHandle {
    task: JoinHandle<()>,
    watching_events: bool,
}

impl WatchHandle {
    /// Whether filesystem events are watched in every directory (otherwise the poller alone
    /// sees changes in some or all of them).
    pub fn watching_events(&self) -> bool {
        self.watching_events
    }

    /// Stops watching.
    pub fn stop(self) {}
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `dirs` on the current tokio runtime, calling `reload` after a change in any.
pub(super) fn spawn(dirs: &[PathBuf], options: &ReloadOptions, reload: Reload) -> WatchHandle {
    let options = options.clone();
    let (tx, rx) = unbounded_channel();
    let (watcher, watching_events) = if options.watch_events {
        directories_watcher(dirs, tx)
    } else {
        (None, false)
    };
    let task = tokio::spawn(run(options, reload, rx, watcher));
    WatchHandle {
        task,
        watching_events,
    }
}

/// A watcher of the directories of `dirs` that can be watched (the poller covers the others),
/// and whether that is all of them.
fn directories_watcher(
    dirs: &[PathBuf],
    tx: UnboundedSender<()>,
) -> (Option<RecommendedWatcher>, bool) {
    let mut watcher = match event_watcher(tx) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch for filesystem events, polling only");
            return (None, false);
        }
    };
    let mut watched = 0;
    for dir in dirs {
        match watch_directory(&mut watcher, dir) {
            Ok(()) => watched += 1,
            Err(error) => tracing::warn!(dir = %dir.display(), %error,
                "cannot watch the directory, polling it only"),
        }
    }
    match watched {
        0 => (None, false),
        n => (Some(watcher), n == dirs.len()),
    }
}

fn event_watcher(tx: UnboundedSender<()>) -> notify::Result<RecommendedWatcher> {
    notify::recommended_watcher(move |event: notify::Result<Event>| {
        let relevant = match event {
            Ok(event) => is_change(&event.kind),
            // An error (for example a queue overflow) may hide a change: look.
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    })
}

/// Watches `dir` itself, not its files: a watch on a file kubelet replaces would be lost at the
/// first swap.
fn watch_directory(watcher: &mut RecommendedWatcher, dir: &Path) -> notify::Result<()> {
    watcher.watch(dir, RecursiveMode::NonRecursive)
}

/// Whether an event can mean new content. Opening and reading (our own reads included) cannot.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

async fn run(
    options: ReloadOptions,
    reload: Reload,
    mut events: UnboundedReceiver<()>,
    watcher: Option<RecommendedWatcher>,
) {
    let mut events_open = watcher.is_some();
    let mut poll = tokio::time::interval(options.poll_interval.max(MIN_POLL_INTERVAL));
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate; the identity has just been loaded.
    poll.tick().await;
    loop {
        tokio::select! {
            _ = poll.tick() => {}
            received = events.recv(), if events_open => {
                if received.is_none() {
                    events_open = false;
                    continue;
                }
                // Let a burst of events (a whole kubelet update) settle, then read once.
                tokio::time::sleep(options.debounce).await;
                while events.try_recv().is_ok() {}
            }
        }
        let reload = reload.clone();
        let _ = tokio::task::spawn_blocking(move || reload()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    #[test]
    fn reads_are_not_changes_but_writes_renames_and_creations_are() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::Any)));
    }
}
