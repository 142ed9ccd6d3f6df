//! The `nhi-operator delegate` commands, for agents in any language: `delegate key` makes a
//! child's own key and certificate request where the child runs; `delegate request` asks the
//! delegation endpoint for the child's certificate with the parent's identity directory, and
//! writes the child's identity directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use nhi_identity::delegate::child_key::ChildKey;
use nhi_identity::delegate::client::{DelegateError, Delegator, Task};

/// The request file `delegate key` writes beside the key.
pub const CSR_FILE: &str = "request.csr";

#[derive(Clone, Debug, Subcommand)]
pub enum DelegateCommand {
    /// In the child: generate its key (`tls.key`, mode 0600) and certificate request
    /// (`request.csr`) in a directory. The key never leaves it.
    Key {
        /// The child's identity directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// In the parent: ask for the child's certificate and write `tls.crt` and `ca.crt` into the
    /// child's directory (and `tls.key`, when the key is made here: without `--csr`).
    Request(RequestArgs),
}

#[derive(Clone, Debug, Args)]
pub struct RequestArgs {
    /// The parent's identity directory (`tls.crt`, `tls.key`, `ca.crt`).
    #[arg(long, env = "NHI_IDENTITY_DIR")]
    pub identity_dir: PathBuf,
    /// The delegation endpoint, `https://host:port`.
    #[arg(long, env = "NHI_DELEGATION_ENDPOINT")]
    pub endpoint: String,
    /// The task ID (a SPIFFE ID segment: letters, digits, '.', '-', '_').
    #[arg(long)]
    pub task: String,
    /// A short purpose, recorded in the certificate and the audit log.
    #[arg(long, default_value = "")]
    pub purpose: String,
    /// A grant the child needs (repeat for several). None: a child with no grants.
    #[arg(long = "grant")]
    pub grants: Vec<String>,
    /// The lifetime asked for, in seconds (absent: the longest allowed).
    #[arg(long)]
    pub ttl_seconds: Option<u64>,
    /// A file holding the task's input: its SHA-256 is recorded.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// The child's certificate request (`delegate key` wrote it). Absent: a key is made here.
    #[arg(long)]
    pub csr: Option<PathBuf>,
    /// The child's identity directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Exit code of a refusal (the reason is on standard error).
pub const EXIT_REFUSED: u8 = 3;
/// Exit code when rate limited.
pub const EXIT_RATE_LIMITED: u8 = 4;

/// Runs a command; the error is what to print, and the exit code.
pub async fn run(command: DelegateCommand) -> Result<(), (String, u8)> {
    match command {
        DelegateCommand::Key { out } => key(&out).map_err(|e| (e, 1)),
        DelegateCommand::Request(args) => request(args).await,
    }
}

fn key(out: &Path) -> Result<(), String> {
    let key = ChildKey::generate().map_err(|e| e.to_string())?;
    key.write_private_key(out)
        .map_err(|e| format!("{}: {e}", out.join("tls.key").display()))?;
    std::fs::write(out.join(CSR_FILE), key.csr_pem())
        .map_err(|e| format!("{}: {e}", out.join(CSR_FILE).display()))?;
    println!("{}", out.join(CSR_FILE).display());
    Ok(())
}

async fn request(args: RequestArgs) -> Result<(), (String, u8)> {
    let fail = |e: String| (e, 1u8);
    let mut task = Task::new(&args.task, &args.purpose);
    task.grants = args.grants.clone();
    task.ttl = args.ttl_seconds.map(Duration::from_secs);
    if let Some(input) = &args.input {
        let bytes = std::fs::read(input).map_err(|e| fail(format!("{}: {e}", input.display())))?;
        task = task.input(&bytes);
    }
    let (csr_pem, key) = match &args.csr {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|e| fail(format!("{}: {e}", path.display())))?,
            None,
        ),
        None => {
            let key = ChildKey::generate().map_err(|e| fail(e.to_string()))?;
            (key.csr_pem().to_string(), Some(key))
        }
    };
    let mut delegator = Delegator::connect(&args.endpoint, &args.identity_dir)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let child = delegator.request(&task, &csr_pem).await.map_err(|e| {
        let code = match &e {
            DelegateError::Refused { .. } => EXIT_REFUSED,
            DelegateError::RateLimited { .. } => EXIT_RATE_LIMITED,
            _ => 1,
        };
        (e.to_string(), code)
    })?;
    child
        .write_dir(&args.out, key.as_ref())
        .map_err(|e| fail(e.to_string()))?;
    let summary = serde_json::json!({
        "spiffeID": child.spiffe_id,
        "serialNumber": child.serial_hex,
        "notAfter": child.not_after,
        "grants": child.grants,
        "dir": args.out,
    });
    println!("{summary}");
    Ok(())
}
