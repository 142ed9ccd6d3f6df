//! `kubectl-nhi`: the kubectl plugin for nhi-operator: list, review, revoke and inspect identities,
//! and show what they delegated.

mod cluster;
mod dates;
mod delegations;
mod error;
mod inspect;
mod list;
mod output;
mod policy;
mod review;
mod revoke;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cluster::GlobalArgs;
use crate::error::PluginError;

#[derive(Parser)]
#[command(
    name = "kubectl-nhi",
    bin_name = "kubectl nhi",
    version,
    about = "Inventory, review, revoke and inspect nhi-operator MachineIdentities",
    long_about = None
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List identities: owner, workload, review date, expiry, grants and state.
    List(list::ListArgs),
    /// Re-attest an identity: move its review date and record who and when.
    Review(review::ReviewArgs),
    /// Revoke an identity's certificates now (a new one is issued unless it is suspended).
    Revoke(revoke::RevokeArgs),
    /// Decode an identity certificate from a Secret or a PEM file, and check its revocation.
    Inspect(inspect::InspectArgs),
    /// Show what an identity delegated: counts and its most recent task identities.
    Delegations(delegations::DelegationsArgs),
    /// Show the namespace's tenant policy, and what it refuses of an identity and of Entitlements.
    Policy(policy::PolicyArgs),
}

async fn run(cli: Cli) -> Result<String, PluginError> {
    match &cli.command {
        Command::List(args) => list::run(&cli.global, args).await,
        Command::Review(args) => review::run(&cli.global, args).await,
        Command::Revoke(args) => revoke::run(&cli.global, args).await,
        Command::Inspect(args) => inspect::run(&cli.global, args).await,
        Command::Policy(args) => policy::run(&cli.global, args).await,
        Command::Delegations(args) => delegations::run(&cli.global, args).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) is not an error worth reporting.
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
