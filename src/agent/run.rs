//! The agent's loop: watch one Secret, project its identity files, run a hook after each change.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use time::OffsetDateTime;
use tracing::{info, warn};

use super::projection::project;

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

/// Runs the agent until the watch ends (SIGTERM ends the process).
pub async fn run(settings: AgentSettings) -> Result<(), AgentError> {
    let config = kube::Config::infer().await?;
    let client = Client::try_from(config)?;
    let api: Api<Secret> = Api::namespaced(client, &settings.namespace);
    let name = format!("{}/{}", settings.namespace, settings.secret);
    if settings.once {
        let secret = api.get(&settings.secret).await?;
        let files = identity_files(&secret).ok_or_else(|| AgentError::NotIssued(name.clone()))?;
        write(&settings, &files)?;
        return Ok(());
    }
    // Only this Secret: the agent's RBAC can be get/list/watch on that one name.
    let cfg = watcher::Config::default().fields(&format!("metadata.name={}", settings.secret));
    let mut events = watcher(api, cfg)
        .default_backoff()
        .applied_objects()
        .boxed();
    info!(secret = %name, dir = %settings.dir.display(), "keeping the identity directory current");
    while let Some(ev) = events.next().await {
        match ev {
            Ok(secret) => match identity_files(&secret) {
                Some(files) => {
                    if let Err(e) = write(&settings, &files) {
                        warn!(error = %e, "cannot update the identity directory; keeping the current one");
                    }
                }
                None => {
                    warn!(secret = %name, "the Secret holds no certificate and key; keeping the current files")
                }
            },
            Err(e) => warn!(error = %e, "watching the identity Secret failed; retrying"),
        }
    }
    Ok(())
}

/// Projects the files and, if they changed, runs the hook.
fn write(settings: &AgentSettings, files: &BTreeMap<String, Vec<u8>>) -> Result<(), AgentError> {
    let changed = project(&settings.dir, files, OffsetDateTime::now_utc()).map_err(|source| {
        AgentError::Write {
            dir: settings.dir.display().to_string(),
            source,
        }
    })?;
    if !changed {
        return Ok(());
    }
    info!(dir = %settings.dir.display(), "identity directory updated");
    if let Some(cmd) = &settings.exec {
        match std::process::Command::new("sh").args(["-c", cmd]).status() {
            Ok(s) if s.success() => {}
            Ok(s) => warn!(command = %cmd, status = %s, "the hook command failed"),
            Err(e) => warn!(command = %cmd, error = %e, "cannot run the hook command"),
        }
    }
    if let Some(pid) = settings.signal_pid {
        let sent = std::process::Command::new("kill")
            .args(["-s", &settings.signal, &pid.to_string()])
            .status();
        if !sent.is_ok_and(|s| s.success()) {
            warn!(pid, signal = %settings.signal, "cannot signal the process");
        }
    }
    Ok(())
}
