//! `prewarm-local-cluster`: the whole system on this machine, until SIGTERM
//! or Ctrl-C: the chart, installed with the real Helm library from the image
//! scripts/build-images.sh built, as Pods on test kubelets over containerd
//! (see `prewarm_testapi::installed`). Needs root (it runs containerd) and
//! what scripts/install-test-deps.sh installs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use prewarm_testapi::installed::{Install, InstalledCluster, node_labels};

#[derive(Debug, Parser)]
#[command(name = "prewarm-local-cluster", version)]
struct Args {
    /// Where everything lives: kubeconfigs, containerd roots, Pod logs, registries.
    #[arg(long, default_value = "/tmp/prewarm-local-cluster")]
    dir: PathBuf,
    /// Nodes, each a kubelet with its own containerd.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Start with ImagePullJobGate off (new ImagePullJobs are refused).
    #[arg(long)]
    gate_off: bool,
    /// The image to install (built by scripts/build-images.sh into buildah's store).
    #[arg(long, default_value = concat!("localhost/prewarm:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// The Python of the Helm library's venv (scripts/install-test-deps.sh makes it).
    #[arg(long)]
    helm_python: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = std::fs::create_dir_all(&args.dir) {
        eprintln!("prewarm-local-cluster: creating {}: {e}", args.dir.display());
        return ExitCode::from(2);
    }
    let install = Install::seed(&args.image, &args.helm_python, !args.gate_off);
    let network = ("10.220.0.0/16", "prewarm-lc0");
    // Kept (and stopped on drop) until the process ends.
    let cluster = match InstalledCluster::start(&args.dir, args.nodes, network, node_labels, install).await {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("prewarm-local-cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
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
