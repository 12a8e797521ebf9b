//! `prewarm-local-cluster`: the whole system on this machine (see
//! `prewarm_testapi::local_cluster`), until SIGTERM or Ctrl-C. Needs root (it
//! runs containerd) and what scripts/install-test-deps.sh installs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use prewarm_testapi::local_cluster::LocalCluster;

#[derive(Debug, Parser)]
#[command(name = "prewarm-local-cluster", version)]
struct Args {
    /// Where everything lives: kubeconfigs, logs, containerd roots, registries.
    #[arg(long, default_value = "/tmp/prewarm-local-cluster")]
    dir: PathBuf,
    /// Nodes, each with its own containerd and node agent.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Where the prewarm binaries are (this binary's directory by default).
    #[arg(long)]
    binaries: Option<PathBuf>,
    /// Start with ImagePullJobGate off (new ImagePullJobs are refused).
    #[arg(long)]
    gate_off: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let binaries = match args.binaries.clone().or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(PathBuf::from))
    }) {
        Some(binaries) => binaries,
        None => {
            eprintln!("prewarm-local-cluster: cannot tell where the prewarm binaries are: pass --binaries");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&args.dir) {
        eprintln!("prewarm-local-cluster: creating {}: {e}", args.dir.display());
        return ExitCode::from(2);
    }
    let cluster = LocalCluster::start(&args.dir, &binaries, args.nodes, !args.gate_off).await;
    let summary = cluster.summary();
    print!("{summary}");
    if let Err(e) = std::fs::write(args.dir.join("ready"), &summary) {
        eprintln!(
            "prewarm-local-cluster: writing {}: {e}",
            args.dir.join("ready").display()
        );
    }
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(e) => {
            eprintln!("prewarm-local-cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    let _ = std::fs::remove_file(args.dir.join("ready"));
    drop(cluster);
    ExitCode::SUCCESS
}
