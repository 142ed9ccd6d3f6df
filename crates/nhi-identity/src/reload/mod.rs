//! Reloading identity for programs that use an nhi-operator identity directory: rustls configs
//! whose certificate, trust roots and CRLs swap in place when the mounted files change.
//!
//! Load the directory (`tls.crt`, `tls.key`, `ca.crt`, or `identity.pem` and `ca.crt`), build
//! configs once, and start the watch. Live listeners and connection pools keep their configs;
//! every new handshake uses the identity swapped in last. An update that fails validation (a key
//! that does not match the leaf, a leaf that does not chain to the bundle or is outside its
//! validity) is refused: the previous identity stays, a warning is logged, and
//! [`ReloadingIdentity::refused_reloads`] counts it (and the `identity_reloads_refused_total`
//! metric, with the `metrics` feature: `ReloadingIdentity::register_metrics`).
//!
//! **Revocation fails closed.** Peers (clients seen by a server config, servers seen by a client
//! config) are checked against the CRLs of `crl.pem`, the key of the namespace's `nhi-trust`
//! ConfigMap (one PEM CRL per issuing CA). By default it is read from the identity directory (a
//! projected volume holding the identity Secret and `nhi-trust`'s `crl.pem`);
//! [`RevocationCheck::CrlInDir`] names another directory (a volume of `nhi-trust`), watched the
//! same way. A listed peer is refused, and every peer is refused while there is no usable CRL:
//! `crl.pem` missing, unreadable, unparsable, not issued by a CA of `ca.crt`, or past its
//! nextUpdate. A bad new `crl.pem` is refused like a bad identity: the last good CRLs stay until
//! their nextUpdate, [`ReloadingIdentity::refused_crl_reloads`] counts it
//! (`identity_crl_reloads_refused_total`), and [`ReloadingIdentity::revocation`] says what is
//! checked now. Not checking is spelled out: `revocation: RevocationCheck::Disabled`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use nhi_identity::reload::{ReloadOptions, ReloadingIdentity, RevocationCheck};
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! // `nhi-trust` (with `crl.pem`) mounted apart from the identity Secret.
//! let options = ReloadOptions {
//!     revocation: RevocationCheck::CrlInDir("/var/run/nhi-trust".into()),
//!     ..ReloadOptions::default()
//! };
//! let identity = ReloadingIdentity::load("/var/run/secrets/nhi", options)?;
//! identity.on_change(|info| println!("now serving {} until {}", info.serial_hex, info.not_after));
//! let _watch = identity.spawn_watch(); // both directories; stops when dropped
//!
//! // Mutual TLS: clients must present an unrevoked certificate chaining to `ca.crt`.
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
pub mod crl;
mod identity;
mod options;
pub mod resolver;
mod revocation;
pub mod snapshot;
pub mod validate;
pub mod watch;

#[cfg(test)]
mod test_layout;
#[cfg(test)]
mod test_tls;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_revocation;

pub use crl::{InvalidCrl, ValidatedCrls};
pub use identity::{ReloadError, ReloadOutcome, ReloadingIdentity};
pub use options::{ClientAuth, ReloadOptions, RevocationCheck};
pub use revocation::{PeerRevocation, RevocationStatus};
pub use snapshot::SnapshotError;
pub use validate::{IdentityInfo, InvalidIdentity};
pub use watch::WatchHandle;
