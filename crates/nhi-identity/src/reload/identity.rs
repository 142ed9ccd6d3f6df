//! The reloading identity: an identity directory (and `crl.pem`) loaded, validated and served to
//! rustls through configs whose certificate, trust roots and CRLs swap in place.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
#[cfg(feature = "metrics")]
use prometheus_client::registry::Registry;
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ServerConfig};
use time::OffsetDateTime;

use super::counters::Counters;
use super::crl::InvalidCrl;
use super::options::{ClientAuth, ReloadOptions};
use super::resolver::{
    CurrentIdentity, IdentityResolver, ReloadingClientVerifier, ReloadingServerVerifier,
    ServingIdentity,
};
use super::revocation::{CrlState, RevocationStatus};
use super::snapshot::{self, SnapshotError};
use super::validate::{self, IdentityInfo, InvalidIdentity, ValidatedIdentity};
use super::watch::{self, WatchHandle};

/// Why loading or reloading failed.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Read(#[from] SnapshotError),
    #[error(transparent)]
    Invalid(#[from] InvalidIdentity),
    #[error("crl.pem refused: {0}")]
    Crl(#[from] InvalidCrl),
    #[error("building the TLS configuration failed: {0}")]
    Tls(String),
}

/// What a reload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files are the ones already loaded.
    Unchanged,
    /// A new identity is now served (and the CRLs, if they changed too).
    Swapped(IdentityInfo),
    /// The identity is the same; peers are now checked against the CRLs of a new `crl.pem`.
    CrlSwapped(RevocationStatus),
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
    counters: Counters,
    callbacks: Mutex<Vec<Arc<ChangeCallback>>>,
}

struct ReloadState {
    /// Digest of the snapshot being served.
    digest: [u8; 32],
    /// The trust bundle of the identity being served: CRLs are checked against it.
    bundle_pem: Vec<u8>,
    /// What was refused last, so a bad update is counted once, not at every poll.
    last_refused: Option<String>,
    crl: CrlState,
}

impl fmt::Debug for ReloadingIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingIdentity")
            .field("dir", &self.shared.dir)
            .field("current", &self.current())
            .field("revocation", &self.revocation())
            .finish_non_exhaustive()
    }
}

impl ReloadingIdentity {
    /// Loads and validates the identity in `dir`. Fails when there is no valid identity to serve.
    ///
    /// Revocation is checked as `options.revocation` says. A `crl.pem` that is missing or
    /// unusable does not fail the load: the identity is served, every peer is refused until a
    /// usable `crl.pem` arrives (the watch picks it up), and the refusal is logged and counted
    /// ([`ReloadingIdentity::refused_crl_reloads`]).
    pub fn load(dir: impl AsRef<Path>, options: ReloadOptions) -> Result<Self, ReloadError> {
        let dir = dir.as_ref().to_owned();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let snapshot = snapshot::read_snapshot(&dir)?;
        let now = OffsetDateTime::now_utc();
        let validated = validate_snapshot(&snapshot, now, &provider)?;
        let mut crl = CrlState::new(&options.revocation, &dir);
        let refresh = crl.refresh(&snapshot.bundle_pem, true, now);
        let serving = ServingIdentity::build(validated, crl.revocation(), &provider)
            .map_err(|e| ReloadError::Tls(e.to_string()))?;
        tracing::info!(dir = %dir.display(), serial = %serving.info.serial_hex,
            not_after = %crate::timestamp::rfc3339(serving.info.not_after),
            revocation = ?serving.revocation, "identity loaded");
        let counters = Counters::default();
        counters.expiry.set(serving.info.not_after.unix_timestamp());
        set_crl_gauge(&counters, &serving.revocation);
        let identity = ReloadingIdentity {
            shared: Arc::new(Shared {
                dir,
                options,
                provider,
                current: Arc::new(ArcSwap::from_pointee(serving)),
                state: Mutex::new(ReloadState {
                    digest: snapshot.digest,
                    bundle_pem: snapshot.bundle_pem,
                    last_refused: None,
                    crl,
                }),
                counters,
                callbacks: Mutex::new(Vec::new()),
            }),
        };
        if let Some((error, _)) = refresh.refused {
            identity.refused_crl(&error);
        }
        Ok(identity)
    }

    /// A server config presenting the current identity and requiring client certificates that
    /// chain to the current trust bundle and pass the revocation check (mutual TLS).
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
        // handshake, verified against the identity, bundle and CRLs current then.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    /// A client config presenting the current identity and verifying servers against the
    /// current trust bundle and revocation check, with the usual host name check against the
    /// server's DNS names.
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

    /// How peers' revocation is checked now. Health checks can report a service that refuses
    /// every peer ([`RevocationStatus::refuses_every_peer_at`]).
    pub fn revocation(&self) -> RevocationStatus {
        self.shared.current.load().revocation.clone()
    }

    /// How many times a new identity was swapped in.
    pub fn reloads(&self) -> u64 {
        self.shared.counters.reloads.get()
    }

    /// How many distinct updates were refused (unreadable or invalid) while the previous
    /// identity was kept. Refused `crl.pem` files are counted apart:
    /// [`ReloadingIdentity::refused_crl_reloads`].
    pub fn refused_reloads(&self) -> u64 {
        self.shared.counters.refused.get()
    }

    /// How many times a new `crl.pem` was accepted after the load.
    pub fn crl_reloads(&self) -> u64 {
        self.shared.counters.crl_reloads.get()
    }

    /// How many distinct `crl.pem` contents were refused (missing, unreadable, unparsable, not
    /// issued by a CA of the bundle, stale), the one found at load included.
    pub fn refused_crl_reloads(&self) -> u64 {
        self.shared.counters.crl_refused.get()
    }

    #[cfg(feature = "metrics")]
    /// Registers this identity's metrics in a Prometheus registry (prometheus-client), under
    /// the registry's prefix: `identity_reloads_total`, `identity_reloads_refused_total`,
    /// `identity_expiry_timestamp_seconds`, `identity_crl_reloads_total`,
    /// `identity_crl_reloads_refused_total` and `identity_crl_next_update_timestamp_seconds`
    /// (alert when it is near, or 0 while revocation is checked).
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.shared.counters.register(registry);
    }

    /// The directory being served from.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The watch options.
    pub fn options(&self) -> &ReloadOptions {
        &self.shared.options
    }

    /// Starts watching the identity directory, and the directory of `crl.pem` when it is
    /// another one, on the current tokio runtime (events and polling); a change in either
    /// reloads both. The watch stops when the handle is dropped. Panics outside a tokio runtime.
    pub fn spawn_watch(&self) -> WatchHandle {
        let mut dirs = vec![self.shared.dir.clone()];
        if let Some(crl_dir) = self.options().revocation.crl_dir(self.dir())
            && crl_dir != self.dir()
        {
            dirs.push(crl_dir.to_owned());
        }
        let identity = self.clone();
        // Outcomes and refusals are logged and counted by `reload_now`.
        let reload = move || {
            let _ = identity.reload_now();
        };
        watch::spawn(&dirs, self.options(), Arc::new(reload))
    }

    /// Reads the directory (and `crl.pem`) now, and swaps to what changed and is valid.
    /// Blocking (file reads): call it from `spawn_blocking` in async code.
    ///
    /// Identity and CRLs are taken or refused apart: a valid new identity is swapped in even if
    /// `crl.pem` is refused, and the other way round. The result is an error when anything was
    /// refused (the identity's refusal first).
    pub fn reload_now(&self) -> Result<ReloadOutcome, ReloadError> {
        let mut guard = lock(&self.shared.state);
        let state = &mut *guard;
        let now = OffsetDateTime::now_utc();
        let (validated, mut error) = match self.new_identity(state, now) {
            Ok(found) => (found, None),
            Err(error) => (None, Some(error)),
        };
        let bundle_pem = validated
            .as_ref()
            .map_or(&state.bundle_pem, |(_, snapshot)| &snapshot.bundle_pem);
        let crl = state.crl.refresh(bundle_pem, validated.is_some(), now);
        if let Some((crl_error, new)) = crl.refused {
            if new {
                self.refused_crl(&crl_error);
            }
            error.get_or_insert(crl_error.into());
        }
        let Some((serving, snapshot)) =
            self.next_serving(state, validated, crl.changed, &mut error)
        else {
            return error.map_or(Ok(ReloadOutcome::Unchanged), Err);
        };
        let info = serving.info.clone();
        let revocation = serving.revocation.clone();
        self.shared.current.store(Arc::new(serving));
        set_crl_gauge(&self.shared.counters, &revocation);
        if crl.accepted {
            self.shared.counters.crl_reloads.inc();
            tracing::info!(dir = ?state.crl.dir(), ?revocation, "crl.pem reloaded");
        }
        let Some(snapshot) = snapshot else {
            drop(guard);
            return match error {
                Some(error) => Err(error),
                None => Ok(ReloadOutcome::CrlSwapped(revocation)),
            };
        };
        state.digest = snapshot.digest;
        state.bundle_pem = snapshot.bundle_pem;
        state.last_refused = None;
        drop(guard);
        self.shared.counters.reloads.inc();
        self.shared
            .counters
            .expiry
            .set(info.not_after.unix_timestamp());
        tracing::info!(dir = %self.shared.dir.display(), serial = %info.serial_hex,
            not_after = %crate::timestamp::rfc3339(info.not_after), "identity reloaded");
        let callbacks = lock(&self.shared.callbacks).clone();
        for callback in callbacks {
            callback(&info);
        }
        match error {
            Some(error) => Err(error),
            None => Ok(ReloadOutcome::Swapped(info)),
        }
    }

    /// What to serve next: the new identity (with its snapshot), else the current one with
    /// verifiers rebuilt when the CRLs changed; `None` when nothing is to change. A failure is
    /// put in `error` (an identity's refusal before anything else).
    fn next_serving(
        &self,
        state: &mut ReloadState,
        validated: Option<(ValidatedIdentity, snapshot::Snapshot)>,
        crl_changed: bool,
        error: &mut Option<ReloadError>,
    ) -> Option<(ServingIdentity, Option<snapshot::Snapshot>)> {
        let provider = &self.shared.provider;
        if let Some((validated, snapshot)) = validated {
            match ServingIdentity::build(validated, state.crl.revocation(), provider) {
                Ok(serving) => return Some((serving, Some(snapshot))),
                Err(e) => {
                    let key = hex::encode(snapshot.digest);
                    *error = Some(self.refuse(state, key, ReloadError::Tls(e.to_string())));
                }
            }
        }
        if !crl_changed {
            return None;
        }
        let current = self.shared.current.load();
        match current.with_revocation(state.crl.revocation(), provider) {
            Ok(serving) => Some((serving, None)),
            Err(e) => {
                error.get_or_insert(ReloadError::Tls(e.to_string()));
                None
            }
        }
    }

    /// Reads the identity directory: `Some` when it holds a new valid identity, `None` when it
    /// is the one served. Refusals are logged and counted.
    fn new_identity(
        &self,
        state: &mut ReloadState,
        now: OffsetDateTime,
    ) -> Result<Option<(ValidatedIdentity, snapshot::Snapshot)>, ReloadError> {
        let snapshot = match snapshot::read_snapshot(&self.shared.dir) {
            Ok(snapshot) => snapshot,
            Err(error) => {
                let key = error.to_string();
                return Err(self.refuse(state, key, error.into()));
            }
        };
        if snapshot.digest == state.digest {
            state.last_refused = None;
            return Ok(None);
        }
        match validate_snapshot(&snapshot, now, &self.shared.provider) {
            Ok(validated) => Ok(Some((validated, snapshot))),
            Err(error) => {
                let key = hex::encode(snapshot.digest);
                Err(self.refuse(state, key, error))
            }
        }
    }

    /// Keeps the current identity, and logs and counts the refusal unless it is the same one as
    /// last time.
    fn refuse(&self, state: &mut ReloadState, key: String, error: ReloadError) -> ReloadError {
        if state.last_refused.as_ref() != Some(&key) {
            self.shared.counters.refused.inc();
            tracing::warn!(dir = %self.shared.dir.display(), %error,
                serial = %self.shared.current.load().info.serial_hex,
                "identity update refused, keeping the current identity");
            state.last_refused = Some(key);
        }
        error
    }

    /// Logs and counts a refused `crl.pem` (once per distinct refusal).
    fn refused_crl(&self, error: &InvalidCrl) {
        self.shared.counters.crl_refused.inc();
        let revocation = self.revocation();
        match revocation {
            RevocationStatus::Checking { next_update, .. } => {
                tracing::warn!(dir = %self.shared.dir.display(), %error,
                    next_update = %crate::timestamp::rfc3339(next_update),
                    "crl.pem refused, keeping the current CRLs until their nextUpdate");
            }
            _ => {
                tracing::warn!(dir = %self.shared.dir.display(), %error,
                    "crl.pem refused: no usable CRL, every peer certificate is refused");
            }
        }
    }
}

/// Validates a snapshot at `now`.
fn validate_snapshot(
    snapshot: &snapshot::Snapshot,
    now: OffsetDateTime,
    provider: &Arc<CryptoProvider>,
) -> Result<ValidatedIdentity, ReloadError> {
    Ok(validate::validate_identity(
        &snapshot.cert_pem,
        &snapshot.key_pem,
        &snapshot.bundle_pem,
        now,
        provider,
    )?)
}

/// Sets the CRL gauge to the nextUpdate of the CRLs in use, 0 when none is.
fn set_crl_gauge(counters: &Counters, revocation: &RevocationStatus) {
    let next_update = match revocation {
        RevocationStatus::Checking { next_update, .. } => next_update.unix_timestamp(),
        _ => 0,
    };
    counters.crl_next_update.set(next_update);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
