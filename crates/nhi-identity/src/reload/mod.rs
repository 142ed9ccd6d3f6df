//! Reloading identity for programs that use an nhi-operator identity directory: rustls configs
//! whose certificate and trust roots swap in place when the mounted Secret changes.
//!
//! Load the directory (`tls.crt`, `tls.key`, `ca.crt`, or `identity.pem` and `ca.crt`), build
//! configs once, and start the watch. Live listeners and connection pools keep their configs;
//! every new handshake uses the identity swapped in last. An update that fails validation (a key
//! that does not match the leaf, a leaf that does not chain to the bundle or is outside its
//! validity) is refused: the previous identity stays, a warning is logged, and
//! [`ReloadingIdentity::refused_reloads`] counts it (and the `identity_reloads_refused_total`
//! metric, with the `metrics` feature: `ReloadingIdentity::register_metrics`).
//!
//! ```no_run
//! use std::sync::Arc;
//! use nhi_identity::reload::{ReloadOptions, ReloadingIdentity};
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! let identity = ReloadingIdentity::load("/var/run/secrets/nhi", ReloadOptions::default())?;
//! identity.on_change(|info| println!("now serving {} until {}", info.serial_hex, info.not_after));
//! let _watch = identity.spawn_watch(); // stops when dropped
//!
//! // Mutual TLS: clients must present a certificate chaining to `ca.crt`.
//! let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(identity.server_config()?));
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8443").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     let acceptor = acceptor.clone();
//!     tokio::spawn(async move {
//!         if let Ok(tls) = acceptor.accept(tcp).await {
//!             // ... serve the connection
//! #           drop(tls);
//!         }
//!     });
//! }
//! # }
//! ```

mod counters;
mod identity;
mod options;
pub mod resolver;
pub mod snapshot;
pub mod validate;
pub mod watch;

#[cfg(test)]
mod test_layout;
#[cfg(test)]
mod tests;

pub use identity::{ReloadError, ReloadOutcome, ReloadingIdentity};
pub use options::{ClientAuth, ReloadOptions};
pub use snapshot::SnapshotError;
pub use validate::{IdentityInfo, InvalidIdentity};
pub use watch::WatchHandle;
