//! `prewarm-local-cluster`: the whole system on this machine, until SIGTERM
//! or Ctrl-C. By default the install runs as Pods: the chart, installed with
//! the real Helm library from the image scripts/build-images.sh built, on
//! test kubelets over containerd (see `prewarm_testapi::pod_cluster`);
//! `--processes` starts the binaries as host processes instead (see
//! `prewarm_testapi::local_cluster`). Needs root (it runs containerd) and what
//! scripts/install-test-deps.sh installs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use prewarm_testapi::local_cluster::{IMAGES, LocalCluster, node_labels};
use prewarm_testapi::pod_cluster::{PodCluster, chart_pods};

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
    /// Run the binaries as host processes instead of installing the chart as Pods.
    #[arg(long)]
    processes: bool,
    /// The image to install (built by scripts/build-images.sh into buildah's store).
    #[arg(long, default_value = concat!("localhost/prewarm:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// The Python of the Helm library's venv (scripts/install-test-deps.sh makes it).
    #[arg(long)]
    helm_python: Option<PathBuf>,
}

/// The chart installed as the seed installs it, on a cluster whose Pods run.
async fn pods(args: &Args) -> Result<(PodCluster, String), String> {
    let python = args
        .helm_python
        .clone()
        .ok_or("--helm-python is needed to install the chart (scripts/local-cluster.sh passes it)")?;
    let cluster = PodCluster::start(&args.dir, args.nodes, "10.220.0.0/16", "prewarm-lc0", node_labels).await;
    cluster.push_seed_images();
    cluster.push_from_buildah(&args.image)?;
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/prewarm");
    let gate = format!("featureGates=ImagePullJobGate={}", !args.gate_off);
    let chart = chart.to_str().ok_or("the chart's path is not UTF-8")?;
    cluster.helm(&python, &["install", "kruise", chart, "--set", &gate])?;
    let started = std::time::Instant::now();
    while !cluster.not_ready(&chart_pods(args.nodes)).is_empty() {
        if started.elapsed() > std::time::Duration::from_secs(180) {
            return Err(format!(
                "not Ready within 180 s: {:?}{}",
                cluster.not_ready(&chart_pods(args.nodes)),
                cluster.report()
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let nodes: Vec<&str> = cluster.nodes.iter().map(|n| n.name.as_str()).collect();
    let summary = format!(
        "kubeconfig: {}\nnodes: {}\nregistry: 127.0.0.1:{} (images: {}, as docker.io and localhost)\ninstall: chart charts/prewarm as release kruise ({}), Pods in kruise-system and prewarm-nodeagent\n",
        cluster.kubeconfig.display(),
        nodes.join(", "),
        cluster.registry_port,
        IMAGES.join(", "),
        args.image,
    );
    Ok((cluster, summary))
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
    // Either kind of cluster, kept (and stopped on drop) until the process ends.
    let (cluster, summary): (Box<dyn std::any::Any>, String) = if args.processes {
        let cluster = LocalCluster::start(&args.dir, &binaries, args.nodes, !args.gate_off).await;
        let summary = cluster.summary();
        (Box::new(cluster), summary)
    } else {
        match pods(&args).await {
            Ok((cluster, summary)) => (Box::new(cluster), summary),
            Err(e) => {
                eprintln!("prewarm-local-cluster: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
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
