//! The reloading identity: an identity directory loaded, validated and served to rustls through
//! configs whose certificate and trust roots swap in place.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
#[cfg(feature = "metrics")]
use prometheus_client::registry::Registry;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ServerConfig};
use time::OffsetDateTime;

use super::counters::{Counter, Gauge};
use super::options::{ClientAuth, ReloadOptions};
use super::resolver::{
    CurrentIdentity, IdentityResolver, ReloadingClientVerifier, ReloadingServerVerifier,
    ServingIdentity,
};
use super::snapshot::{self, SnapshotError};
use super::validate::{self, IdentityInfo, InvalidIdentity};
use super::watch::{self, WatchHandle};

/// Why loading or reloading failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Read(#[from] SnapshotError),
    #[error(transparent)]
    Invalid(#[from] InvalidIdentity),
    #[error("building the TLS configuration failed: {0}")]
    Tls(String),
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files are the ones already loaded.
    Unchanged,
    /// A new identity is now served.
    Swapped(IdentityInfo),
}

type ChangeCallback = dyn Fn(&IdentityInfo) + Send + Sync;

/// An identity loaded from a directory, kept current by [`ReloadingIdentity::reload_now`] or
/// [`ReloadingIdentity::spawn_watch`]. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct ReloadingIdentity {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    options: ReloadOptions,
    provider: Arc<CryptoProvider>,
    current: CurrentIdentity,
    /// Held while reloading: one reload at a time.
    state: Mutex<ReloadState>,
    reloads: Counter,
    refused: Counter,
    /// notAfter of the identity being served (Unix seconds).
    expiry: Gauge,
    callbacks: Mutex<Vec<Arc<ChangeCallback>>>,
}

struct ReloadState {
    /// Digest of the snapshot being served.
    digest: [u8; 32],
    /// What was refused last, so a bad update is counted once, not at every poll.
    last_refused: Option<String>,
}

impl fmt::Debug for ReloadingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingIdentity")
            .field("dir", &self.shared.dir)
            .field("current", &self.current())
            .finish_non_exhaustive()
    }
}

impl ReloadingIdentity {
    /// Loads and validates the identity in `dir`. Fails when there is no valid identity to serve.
    pub fn load(dir: impl AsRef<Path>, options: ReloadOptions) -> Result<Self, ReloadError> {
        let dir = dir.as_ref().to_owned();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let snapshot = snapshot::read_snapshot(&dir)?;
        let serving = serving_identity(&snapshot, &provider)?;
        tracing::info!(dir = %dir.display(), serial = %serving.info.serial_hex,
            not_after = %crate::timestamp::rfc3339(serving.info.not_after), "identity loaded");
        let expiry = Gauge::default();
        expiry.set(serving.info.not_after.unix_timestamp());
        Ok(ReloadingIdentity {
            shared: Arc::new(Shared {
                dir,
                options,
                provider,
                current: Arc::new(ArcSwap::from_pointee(serving)),
                state: Mutex::new(ReloadState {
                    digest: snapshot.digest,
                    last_refused: None,
                }),
                reloads: Counter::default(),
                refused: Counter::default(),
                expiry,
                callbacks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// A server config presenting the current identity and requiring client certificates that
    /// chain to the current trust bundle (mutual TLS).
    pub fn server_config(&self) -> Result<ServerConfig, ReloadError> {
        self.server_config_with(ClientAuth::Required)
    }

    /// A server config presenting the current identity, asking clients for a certificate as
    /// `client_auth` says. Set ALPN and other fields on the result as needed.
    pub fn server_config_with(&self, client_auth: ClientAuth) -> Result<ServerConfig, ReloadError> {
        let builder = ServerConfig::builder_with_provider(self.shared.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ReloadError::Tls(e.to_string()))?;
        let current = self.shared.current.clone();
        let builder = match client_auth {
            ClientAuth::None => builder.with_no_client_auth(),
            ClientAuth::Required | ClientAuth::Optional => {
                builder.with_client_cert_verifier(Arc::new(ReloadingClientVerifier {
                    current: current.clone(),
                    algorithms: self.shared.provider.signature_verification_algorithms,
                    mandatory: client_auth == ClientAuth::Required,
                }))
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(IdentityResolver { current }));
        // No session resumption: a resumed session carries the client identity of its first
        // handshake past that identity's rotation (or revocation). Every connection is a full
        // handshake, verified against the identity and bundle current then.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    /// A client config presenting the current identity and verifying servers against the
    /// current trust bundle, with the usual host name check against the server's DNS names.
    /// Session resumption is off, as in [`ReloadingIdentity::server_config_with`]: every
    /// connection verifies the server's current certificate.
    pub fn client_config(&self) -> Result<ClientConfig, ReloadError> {
        let current = self.shared.current.clone();
        let mut config = ClientConfig::builder_with_provider(self.shared.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ReloadError::Tls(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ReloadingServerVerifier {
                current: current.clone(),
                algorithms: self.shared.provider.signature_verification_algorithms,
            }))
            .with_client_cert_resolver(Arc::new(IdentityResolver { current }));
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }

    /// Facts about the identity being served.
    pub fn current(&self) -> IdentityInfo {
        self.shared.current.load().info.clone()
    }

    /// When the identity being served expires.
    pub fn not_after(&self) -> OffsetDateTime {
        self.shared.current.load().info.not_after
    }

    /// Calls `callback` after each swap to a new identity (from the thread doing the reload).
    pub fn on_change(&self, callback: impl Fn(&IdentityInfo) + Send + Sync + 'static) {
        lock(&self.shared.callbacks).push(Arc::new(callback));
    }

    /// How many times a new identity was swapped in.
    pub fn reloads(&self) -> u64 {
        self.shared.reloads.get()
    }

    /// How many distinct updates were refused (unreadable or invalid) while the previous
    /// identity was kept.
    pub fn refused_reloads(&self) -> u64 {
        self.shared.refused.get()
    }

    #[cfg(feature = "metrics")]
    /// Registers this identity's metrics in a Prometheus registry (prometheus-client):
    /// `identity_reloads_total`, `identity_reloads_refused_total` and
    /// `identity_expiry_timestamp_seconds`, under the registry's prefix.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register(
            "identity_reloads",
            "New identities swapped in from the identity directory",
            self.shared.reloads.clone(),
        );
        registry.register(
            "identity_reloads_refused",
            "Identity updates refused (unreadable, key not matching, not chaining, expired); the previous identity was kept",
            self.shared.refused.clone(),
        );
        registry.register(
            "identity_expiry_timestamp_seconds",
            "notAfter of the identity being served",
            self.shared.expiry.clone(),
        );
    }

    /// The directory being served from.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The watch options.
    pub fn options(&self) -> &ReloadOptions {
        &self.shared.options
    }

    /// Starts watching the directory on the current tokio runtime (events and polling). The
    /// watch stops when the handle is dropped. Panics outside a tokio runtime.
    pub fn spawn_watch(&self) -> WatchHandle {
        let identity = self.clone();
        // Outcomes and refusals are logged and counted by `reload_now`.
        let reload = move || {
            let _ = identity.reload_now();
        };
        watch::spawn(self.dir(), self.options(), Arc::new(reload))
    }

    /// Reads the directory now and swaps to its identity if it changed and is valid. Blocking
    /// (file reads): call it from `spawn_blocking` in async code.
    pub fn reload_now(&self) -> Result<ReloadOutcome, ReloadError> {
        let mut state = lock(&self.shared.state);
        let snapshot = match snapshot::read_snapshot(&self.shared.dir) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                let key = error.to_string();
                return Err(self.refuse(&mut state, key, error.into()));
            }
        };
        if snapshot.digest == state.digest {
            state.last_refused = None;
            return Ok(ReloadOutcome::Unchanged);
        }
        let serving = match serving_identity(&snapshot, &self.shared.provider) {
            Ok(serving) => serving,
            Err(error) => {
                let key = hex::encode(snapshot.digest);
                return Err(self.refuse(&mut state, key, error));
            }
        };
        let info = serving.info.clone();
        self.shared.current.store(Arc::new(serving));
        state.digest = snapshot.digest;
        state.last_refused = None;
        drop(state);
        self.shared.reloads.inc();
        self.shared.expiry.set(info.not_after.unix_timestamp());
        tracing::info!(dir = %self.shared.dir.display(), serial = %info.serial_hex,
            not_after = %crate::timestamp::rfc3339(info.not_after), "identity reloaded");
        let callbacks = lock(&self.shared.callbacks).clone();
        for callback in callbacks {
            callback(&info);
        }
        Ok(ReloadOutcome::Swapped(info))
    }

    /// Keeps the current identity, and logs and counts the refusal unless it is the same one as
    /// last time.
    fn refuse(&self, state: &mut ReloadState, key: String, error: ReloadError) -> ReloadError {
        if state.last_refused.as_ref() != Some(&key) {
            self.shared.refused.inc();
            tracing::warn!(dir = %self.shared.dir.display(), %error,
                serial = %self.shared.current.load().info.serial_hex,
                "identity update refused, keeping the current identity");
            state.last_refused = Some(key);
        }
        error
    }
}

/// Validates a snapshot now and builds what handshakes need from it.
fn serving_identity(
    snapshot: &snapshot::Snapshot,
    provider: &Arc<CryptoProvider>,
) -> Result<ServingIdentity, ReloadError> {
    let validated = validate::validate_identity(
        &snapshot.cert_pem,
        &snapshot.key_pem,
        &snapshot.bundle_pem,
        OffsetDateTime::now_utc(),
        provider,
    )?;
    ServingIdentity::build(validated, provider).map_err(|e| ReloadError::Tls(e.to_string()))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
