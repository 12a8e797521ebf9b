use std::process::ExitCode;

use mimalloc::MiMalloc;

use clap::Parser;
use prewarm_webhook::cli::{Cli, Command};
use prewarm_webhook::server::{ServeConfig, Server};
use prewarm_webhook::validate;

/// Admission is allocation-bound (JSON in, JSON out): mimalloc is markedly
/// faster than the system allocator for it (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            let config = *config;
            prewarm_process::logs::init(cli.log_format);
            serve(config)
        }
        Command::Validate(args) => validate::run(args),
    }
}

#[tokio::main]
async fn serve(config: ServeConfig) -> ExitCode {
    let terminated = prewarm_process::terminated();
    match Server::bind(config).await {
        Ok(server) => {
            server.run(terminated).await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            ExitCode::FAILURE
        }
    }
}
