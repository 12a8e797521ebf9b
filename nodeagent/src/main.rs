use std::process::ExitCode;

use clap::{Parser, Subcommand};
use prewarm_nodeagent::pull_command::{self, PullArgs};

/// prewarm's node agent: pulls images through the node's container runtime (CRI).
#[derive(Debug, Parser)]
#[command(name = "prewarm-nodeagent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Pull the images of ImagePullJob / ImageListPullJob manifests on this machine, without a cluster.
    Pull(PullArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Pull(args) => pull_command::run(args).await,
    }
}
