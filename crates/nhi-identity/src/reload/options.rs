//! How an identity directory is watched, and whether a server asks clients for a certificate.

use std::time::Duration;

/// How an identity directory is watched.
#[derive(Clone, Debug)]
pub struct ReloadOptions {
    /// How often the directory is read and compared, whatever the events say. This is what
    /// catches `subPath` mounts and filesystems without inotify.
    pub poll_interval: Duration,
    /// Whether to watch the directory for filesystem events (inotify on Linux).
    pub watch_events: bool,
    /// How long a burst of events must settle before the directory is read.
    pub debounce: Duration,
}

impl Default for ReloadOptions {
    fn default() -> Self {
        ReloadOptions {
            poll_interval: Duration::from_secs(30),
            watch_events: true,
            debounce: Duration::from_millis(50),
        }
    }
}

/// Whether a server asks clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Clients must present a certificate chaining to the trust bundle (mutual TLS).
    Required,
    /// Clients may present one; if they do, it must chain to the trust bundle.
    Optional,
    /// Clients are not asked for a certificate.
    None,
}
