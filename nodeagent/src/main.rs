use std::process::ExitCode;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use prewarm_process::logs::LogFormat;
use std::sync::Arc;

/// The ConfigMap key of the CredentialProviderConfig, as OpenKruise's chart names it.
const CREDENTIAL_PROVIDER_KEY: &str = "CredentialProviderPlugin.yaml";

use k8s_openapi::api::core::v1::ConfigMap;
use prewarm_nodeagent::agent::{self, AgentConfig};
use prewarm_nodeagent::credential_plugins::Plugins;
use prewarm_nodeagent::cri;
use prewarm_nodeagent::health::{self, AgentMetrics};
use prewarm_nodeagent::image_fs::UsageLimit;
use prewarm_nodeagent::pull_command::{self, PullArgs};
use prewarm_nodeagent::puller::Backoff;

/// prewarm's node agent: pulls images through the node's container runtime (CRI).
#[derive(Debug, Parser)]
#[command(name = "prewarm-nodeagent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch this node's NodeImage and pull what it asks (in cluster; kubeconfig or in-cluster config).
    // The last of a flag given twice wins, as in Kubernetes components (the chart's extraArgs).
    #[command(args_override_self = true)]
    Run(RunArgs),
    /// Pull the images of ImagePullJob / ImageListPullJob manifests on this machine, without a cluster.
    Pull(PullArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// This node's name (the NodeImage's name); from the downward API in a DaemonSet.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// The CRI socket; by default the usual containerd, CRI-O and cri-dockerd paths are tried.
    #[arg(long)]
    cri_socket: Option<PathBuf>,
    /// Most images pulled at the same time on this node.
    #[arg(long, default_value_t = 2)]
    max_concurrent_pulls: usize,
    /// Least time between two NodeImage status writes, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    status_interval_ms: u64,
    /// A kubelet CredentialProviderConfig: exec plugins that supply registry credentials.
    #[arg(
        long,
        requires = "credential_provider_bin_dir",
        conflicts_with = "credential_provider_config_map"
    )]
    credential_provider_config: Option<PathBuf>,
    /// The same config as the key `CredentialProviderPlugin.yaml` of a ConfigMap
    /// (NAMESPACE/NAME), read once at start through the API: the agent runs in
    /// a namespace of its own, so it cannot mount one from the install namespace.
    #[arg(long, value_name = "NAMESPACE/NAME", requires = "credential_provider_bin_dir")]
    credential_provider_config_map: Option<String>,
    /// Where the credential provider plugins' executables are.
    #[arg(long)]
    credential_provider_bin_dir: Option<PathBuf>,
    /// Plain-HTTP listener for /healthz and /metrics.
    #[arg(long, default_value = "0.0.0.0:10221")]
    health_listen: std::net::SocketAddr,
    /// The only namespace pull secrets are read from (prewarm's controller copies
    /// job secrets there); references to other namespaces are refused with an event.
    #[arg(long, default_value = "kruise-daemon-config", env = "PREWARM_SECRET_NAMESPACE")]
    secret_namespace: String,
    /// No pull starts while the runtime's image filesystem is fuller than this
    /// percentage (below kubelet's 85 % image garbage collection threshold);
    /// 100 turns the check off. The filesystem must be visible to the agent at
    /// the path the runtime reports (the chart mounts it).
    #[arg(long, default_value = "80", value_parser = UsageLimit::parse)]
    max_image_fs_usage: UsageLimit,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "PREWARM_LOG_FORMAT")]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Pull(args) => pull_command::run(args).await,
        Command::Run(args) => run(args).await,
    }
}

async fn run(args: RunArgs) -> ExitCode {
    prewarm_process::logs::init(args.log_format);
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("prewarm-nodeagent run: no usable Kubernetes configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let (cri, version) = match cri::discover(args.cri_socket.as_deref()).await {
        Ok(found) => found,
        Err(message) => {
            eprintln!("prewarm-nodeagent run: {message}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(runtime = %version.runtime_name, version = %version.runtime_version, node = %args.node_name, "pulling for this node");
    let plugins = match credential_plugins(&client, &args).await {
        Ok(plugins) => plugins.map(Arc::new),
        Err(message) => {
            eprintln!("prewarm-nodeagent run: {message}");
            return ExitCode::from(2);
        }
    };
    let metrics = Arc::new(AgentMetrics::default());
    metrics
        .image_fs_limit
        .set(f64::from(args.max_image_fs_usage.percent()) / 100.0);
    let listener = match tokio::net::TcpListener::bind(args.health_listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("prewarm-nodeagent run: binding {}: {e}", args.health_listen);
            return ExitCode::from(2);
        }
    };
    let health = tokio::spawn(prewarm_process::admin_server::serve(
        listener,
        health::router(metrics.clone()),
        prewarm_process::admin_server::MAX_CONNECTIONS,
        std::future::pending(),
    ));
    let config = AgentConfig {
        node_name: args.node_name,
        metrics,
        plugins,
        max_concurrent_pulls: args.max_concurrent_pulls,
        backoff: Backoff::default(),
        status_interval: Duration::from_millis(args.status_interval_ms),
        secret_namespace: args.secret_namespace,
        max_image_fs_usage: args.max_image_fs_usage,
    };
    agent::run(client, cri, config, prewarm_process::terminated()).await;
    health.abort();
    ExitCode::SUCCESS
}

/// The credential-provider plugins `run` is configured with, from a file or a ConfigMap.
async fn credential_plugins(client: &kube::Client, args: &RunArgs) -> Result<Option<Plugins>, String> {
    let Some(bin_dir) = &args.credential_provider_bin_dir else {
        return Ok(None);
    };
    let timeout = Duration::from_secs(60);
    if let Some(config) = &args.credential_provider_config {
        return Plugins::load(config, bin_dir, timeout)
            .map(Some)
            .map_err(|e| e.to_string());
    }
    let Some(reference) = &args.credential_provider_config_map else {
        return Ok(None);
    };
    let (namespace, name) = reference.split_once('/').ok_or_else(|| {
        format!("--credential-provider-config-map {reference:?}: expected NAMESPACE/NAME of a ConfigMap")
    })?;
    let config_maps: kube::Api<ConfigMap> = kube::Api::namespaced(client.clone(), namespace);
    let config_map = config_maps
        .get(name)
        .await
        .map_err(|e| format!("reading ConfigMap {reference} (--credential-provider-config-map): {e}"))?;
    let text = config_map
        .data
        .as_ref()
        .and_then(|data| data.get(CREDENTIAL_PROVIDER_KEY))
        .ok_or_else(|| {
            format!("ConfigMap {reference} has no key {CREDENTIAL_PROVIDER_KEY} (the CredentialProviderConfig)")
        })?;
    let source = format!("ConfigMap {reference} key {CREDENTIAL_PROVIDER_KEY}");
    Plugins::parse(&source, text, bin_dir, timeout)
        .map(Some)
        .map_err(|e| e.to_string())
}
