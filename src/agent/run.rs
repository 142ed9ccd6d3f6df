//! The agent's loop: watch one Secret and the namespace's trust ConfigMap, project the identity
//! files with the CRL beside them, run a hook after each change.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::projection::{Modes, project};

/// Settings of the `agent` command.
#[derive(Clone, Debug, Args)]
pub struct AgentSettings {
    /// Namespace of the identity Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// The identity Secret (the MachineIdentity's `spec.secretName`).
    #[arg(long, env = "NHI_AGENT_SECRET")]
    pub secret: String,
    /// The directory to keep current (a shared emptyDir, for instance).
    #[arg(long, env = "NHI_AGENT_DIR")]
    pub dir: PathBuf,
    /// The trust ConfigMap whose `crl.pem` is written beside the identity files, for programs
    /// (the reload library's default) that check peers against it; empty for none.
    #[arg(long, env = "NHI_AGENT_TRUST_CONFIGMAP", default_value = "nhi-trust")]
    pub trust_configmap: String,
    /// A command run (with `sh -c`) after each change, e.g. to tell a process to reload.
    #[arg(long, env = "NHI_AGENT_EXEC")]
    pub exec: Option<String>,
    /// A process to signal after each change (with `--signal`); needs a shared process namespace.
    #[arg(long, env = "NHI_AGENT_SIGNAL_PID")]
    pub signal_pid: Option<u32>,
    /// The signal sent to `--signal-pid`.
    #[arg(long, env = "NHI_AGENT_SIGNAL", default_value = "HUP")]
    pub signal: String,
    /// Write the current identity once and exit (an init container).
    #[arg(long)]
    pub once: bool,
    /// Mode of the files holding private keys (octal). The default lets the pod's `fsGroup` read
    /// them when the program runs as another user.
    #[arg(long, env = "NHI_AGENT_KEY_MODE", default_value = "0640", value_parser = parse_mode)]
    pub key_mode: u32,
    /// How long the `--exec` hook may run before it is killed.
    #[arg(long, env = "NHI_AGENT_EXEC_TIMEOUT", default_value = "30s")]
    pub exec_timeout: crate::settings::GoDuration,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode like 0640"))
}

/// The signal named `name` (`HUP`, `SIGUSR1`, ...).
pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.trim_start_matches("SIG");
    Some(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "TERM" => libc::SIGTERM,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "QUIT" => libc::SIGQUIT,
        _ => return None,
    })
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("cannot read the Kubernetes configuration: {0}")]
    Config(#[from] kube::config::InferConfigError),
    #[error("Secret {0} has no certificate and key (not issued yet, or suspended)")]
    NotIssued(String),
    #[error("unknown signal {0:?} (HUP, INT, TERM, USR1, USR2 or QUIT)")]
    Signal(String),
    #[error("--signal-pid {0} does not name one process (a positive process id)")]
    SignalPid(String),
    #[error("cannot write {dir}: {source}")]
    Write {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// The files to project from a Secret: every key, when it holds a certificate and a key.
pub fn identity_files(secret: &Secret) -> Option<BTreeMap<String, Vec<u8>>> {
    let data = secret.data.as_ref()?;
    let holds = |k: &str| data.get(k).is_some_and(|v| !v.0.is_empty());
    if !(holds("tls.crt") && holds("tls.key")) {
        return None;
    }
    Some(data.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
}

/// How long the first projection waits for the trust ConfigMap.
const TRUST_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The CRL file written beside the identity files.
pub const CRL_FILE: &str = "crl.pem";

/// The identity files with the CRL beside them, when there is one.
pub fn with_crl(
    mut files: BTreeMap<String, Vec<u8>>,
    crl: Option<&Vec<u8>>,
) -> BTreeMap<String, Vec<u8>> {
    if let Some(crl) = crl {
        files.insert(CRL_FILE.to_string(), crl.clone());
    }
    files
}

/// The CRL a trust ConfigMap holds.
fn crl_of(cm: &ConfigMap) -> Option<Vec<u8>> {
    let crl = cm.data.as_ref()?.get(CRL_FILE)?;
    (!crl.trim().is_empty()).then(|| crl.clone().into_bytes())
}

/// A change the agent reacts to.
enum Change {
    Secret(Result<Secret, watcher::Error>),
    Trust(Result<ConfigMap, watcher::Error>),
}

/// Runs the agent until the watch ends (SIGTERM ends the process).
pub async fn run(settings: AgentSettings) -> Result<(), AgentError> {
    let config = kube::Config::infer().await?;
    let client = Client::try_from(config)?;
    let api: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let trust: Api<ConfigMap> = Api::namespaced(client, &settings.namespace);
    let trust_name = settings.trust_configmap.clone();
    let name = format!("{}/{}", settings.namespace, settings.secret);
    if let Some(pid) = settings.signal_pid {
        if signal_number(&settings.signal).is_none() {
            return Err(AgentError::Signal(settings.signal.clone()));
        }
        // Checked here, not at the first change: a pid that cannot name one process would
        // otherwise never be signalled, silently.
        if libc::pid_t::try_from(pid).map_or(true, |p| p <= 0) {
            return Err(AgentError::SignalPid(pid.to_string()));
        }
    }
    if settings.once {
        let secret = api.get(&settings.secret).await?;
        let files = identity_files(&secret).ok_or_else(|| AgentError::NotIssued(name.clone()))?;
        let crl = match trust_name.is_empty() {
            true => None,
            false => match trust.get_opt(&trust_name).await {
                Ok(cm) => cm.as_ref().and_then(crl_of),
                Err(e) => {
                    warn!(error = %e, configmap = %trust_name, "cannot read the trust ConfigMap; writing no crl.pem");
                    None
                }
            },
        };
        write(&settings, &with_crl(files, crl.as_ref()), true).await?;
        return Ok(());
    }
    // Only this Secret and this ConfigMap: the agent's RBAC can be get/list/watch on those names.
    let by_name = |n: &str| watcher::Config::default().fields(&format!("metadata.name={n}"));
    let secrets = watcher(api, by_name(&settings.secret))
        .backoff(crate::kube_api::watch_backoff())
        .applied_objects()
        .map(Change::Secret)
        .boxed();
    let trust_changes = match trust_name.is_empty() {
        true => futures::stream::pending().boxed(),
        false => watcher(trust, by_name(&trust_name))
            .backoff(crate::kube_api::watch_backoff())
            .applied_objects()
            .map(Change::Trust)
            .boxed(),
    };
    let mut events = futures::stream::select(secrets, trust_changes);
    info!(secret = %name, dir = %settings.dir.display(), "keeping the identity directory current");
    // The hook runs after the first projection too: a restart may follow a write whose hook
    // never ran.
    let mut first = true;
    let mut identity: Option<BTreeMap<String, Vec<u8>>> = None;
    let mut crl: Option<Vec<u8>> = None;
    // The first projection waits a moment for the trust ConfigMap, so that a program never
    // starts on an identity without its CRL (the reload library would refuse every peer).
    let mut trust_seen = trust_name.is_empty();
    let trust_deadline = tokio::time::Instant::now() + TRUST_WAIT;
    loop {
        let waiting = !trust_seen && identity.is_some();
        let change = tokio::select! {
            change = events.next() => match change {
                Some(change) => Some(change),
                None => break,
            },
            _ = tokio::time::sleep_until(trust_deadline), if waiting => {
                warn!(configmap = %trust_name, "no trust ConfigMap seen yet; writing the identity without crl.pem");
                trust_seen = true;
                None
            }
        };
        match change {
            None => {}
            Some(Change::Secret(Ok(secret))) => match identity_files(&secret) {
                Some(files) => identity = Some(files),
                None => {
                    warn!(secret = %name, "the Secret holds no certificate and key; keeping the current files");
                    continue;
                }
            },
            Some(Change::Secret(Err(e))) => {
                warn!(error = %e, "watching the identity Secret failed; retrying");
                continue;
            }
            Some(Change::Trust(Ok(cm))) => {
                trust_seen = true;
                crl = crl_of(&cm);
            }
            Some(Change::Trust(Err(e))) => {
                warn!(error = %e, configmap = %trust_name, "watching the trust ConfigMap failed (may the agent get, list and watch it?); retrying");
                continue;
            }
        }
        let Some(files) = identity.clone() else {
            continue;
        };
        if !trust_seen {
            continue;
        }
        let always = std::mem::take(&mut first);
        if let Err(e) = write(&settings, &with_crl(files, crl.as_ref()), always).await {
            warn!(error = %e, "cannot update the identity directory; keeping the current one");
        }
    }
    Ok(())
}

/// Projects the files and, if they changed (or `always`), runs the hook.
async fn write(
    settings: &AgentSettings,
    files: &BTreeMap<String, Vec<u8>>,
    always: bool,
) -> Result<(), AgentError> {
    let modes = Modes {
        key: settings.key_mode,
        ..Modes::default()
    };
    let changed =
        project(&settings.dir, files, OffsetDateTime::now_utc(), modes).map_err(|source| {
            AgentError::Write {
                dir: settings.dir.display().to_string(),
                source,
            }
        })?;
    if !changed && !always {
        return Ok(());
    }
    if changed {
        info!(dir = %settings.dir.display(), "identity directory updated");
    }
    if let Some(cmd) = &settings.exec {
        let timeout = settings.exec_timeout.0.unsigned_abs();
        let child = tokio::process::Command::new("sh")
            .args(["-c", cmd])
            .kill_on_drop(true)
            .spawn();
        match child {
            Ok(mut child) => match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(s)) if s.success() => {}
                Ok(Ok(s)) => warn!(command = %cmd, status = %s, "the hook command failed"),
                Ok(Err(e)) => warn!(command = %cmd, error = %e, "the hook command failed"),
                Err(_) => {
                    let _ = child.kill().await;
                    warn!(command = %cmd, timeout_seconds = timeout.as_secs(), "the hook command timed out and was killed");
                }
            },
            Err(e) => {
                warn!(command = %cmd, error = %e, "cannot run the hook command (does the image have sh?)")
            }
        }
    }
    let pid = settings
        .signal_pid
        .and_then(|p| libc::pid_t::try_from(p).ok())
        .filter(|p| *p > 0);
    if let (Some(pid), Some(signal)) = (pid, signal_number(&settings.signal)) {
        // SAFETY: kill(2) takes two integers and touches no memory of ours; the pid is positive,
        // so it names one process, never a process group.
        let sent = unsafe { libc::kill(pid, signal) };
        if sent != 0 {
            warn!(pid, signal = %settings.signal, error = %std::io::Error::last_os_error(), "cannot signal the process");
        }
    }
    Ok(())
}
