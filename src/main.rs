//! The `nhi-operator` command: `run` the controller, run the identity `agent`, ask for a task
//! identity (`delegate`), print the `crd` YAML.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use nhi_operator::agent::run::AgentSettings;
use nhi_operator::{api, operator, settings::Settings, telemetry};

#[derive(Parser)]
#[command(
    name = "nhi-operator",
    version,
    about = "Short-lived, cryptographically bound identities for non-human identities"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator.
    Run(Box<Settings>),
    /// Keep an identity directory current from the identity's Secret (a sidecar or an init
    /// container with --once), written the way kubelet writes a Secret volume.
    Agent(AgentSettings),
    /// Delegated task identities: a child's own key (`key`), and its certificate asked for with
    /// the parent's identity (`request`).
    #[command(subcommand)]
    Delegate(nhi_operator::delegate_cli::DelegateCommand),
    /// Print the CustomResourceDefinitions as YAML (or write one file per CRD into a directory).
    Crd {
        /// Write `<crd name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { out_dir } => print_crds(out_dir),
        Command::Delegate(command) => {
            let runtime = match current_thread_runtime("nhi-operator delegate") {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match runtime.block_on(nhi_operator::delegate_cli::run(command)) {
                Ok(()) => ExitCode::SUCCESS,
                Err((message, code)) => {
                    eprintln!("nhi-operator delegate: {message}");
                    ExitCode::from(code)
                }
            }
        }
        Command::Agent(settings) => {
            telemetry::init(nhi_operator::settings::LogFormat::Text);
            let runtime = match current_thread_runtime("nhi-operator agent") {
                Ok(rt) => rt,
                Err(code) => return code,
            };
            match runtime.block_on(nhi_operator::agent::run::run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("nhi-operator agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(settings) => {
            nhi_operator::allocator::tune();
            telemetry::init(settings.log_format);
            // Key generation runs on the blocking pool; a few threads keep every core busy, while
            // tokio's default of 512 threads (each with its own allocator arena) would only grow
            // memory.
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .max_blocking_threads(cores.max(2))
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("nhi-operator: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(operator::run(*settings));
            // Everything that matters is done (controllers stopped, Lease released): leftover
            // background work (a blocking task, a watch being torn down) must not delay the exit
            // Kubernetes waits for.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "nhi-operator stopped");
                    eprintln!("nhi-operator: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A single-threaded runtime for a command-line tool, or the exit code after saying why not.
fn current_thread_runtime(command: &str) -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("{command}: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn print_crds(out_dir: Option<std::path::PathBuf>) -> ExitCode {
    let docs = match api::crd_documents() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("nhi-operator: cannot render the CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    match out_dir {
        None => {
            let all: Vec<String> = docs.into_iter().map(|(_, yaml)| yaml).collect();
            print!("{}", all.join("---\n"));
        }
        Some(dir) => {
            for (file, yaml) in docs {
                if let Err(e) = std::fs::create_dir_all(&dir)
                    .and_then(|_| std::fs::write(dir.join(&file), yaml))
                {
                    eprintln!(
                        "nhi-operator: cannot write {}: {e}",
                        dir.join(&file).display()
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}
