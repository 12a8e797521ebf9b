use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kube::runtime::events::{Recorder, Reporter};
use prewarm_api::gates::FeatureGates;
use prewarm_controller::admin::{self, Metrics};
use prewarm_controller::api_writes::CountWrites;
use prewarm_controller::crews::{self, Crews, Workers};
use prewarm_controller::leader::{Elector, LeaseConfig};
use prewarm_controller::plan::excluded::ExcludedNodes;
use prewarm_controller::plan::secrets::DEFAULT_AGENT_NAMESPACE;
use prewarm_controller::plan::tag_policy::MAX_DEFAULT_TTL_FOR_ALWAYS;
use prewarm_controller::reconcile::{Context, Settings, first_to_stop};
use prewarm_controller::world::{self, World};
use prewarm_process::live_gates::{self, ConfigMapRef, LiveGates};
use prewarm_process::logs::LogFormat;

/// prewarm's controller: keeps one NodeImage per Node and turns ImagePullJobs
/// into NodeImage entries for the node agents. Kubeconfig or in-cluster config.
#[derive(Debug, Parser)]
// The last of a flag given twice wins, as in Kubernetes components (the chart's extraArgs).
#[command(name = "prewarm-controller", version, args_override_self = true)]
struct Cli {
    /// Feature gates, as in Kubernetes: ImagePullJobGate=true,KruiseDaemon=true.
    /// Job reconcile needs ImagePullJobGate; NodeImage lifecycle needs KruiseDaemon.
    /// With --feature-gates-config-map, the value while that ConfigMap is absent.
    #[arg(long, default_value = "", value_parser = FeatureGates::parse, env = "PREWARM_FEATURE_GATES")]
    feature_gates: FeatureGates,
    /// A ConfigMap (NAMESPACE/NAME) whose key `featureGates` sets the gates
    /// live: reconcile starts or idles as they change, without a restart; a
    /// value that does not parse keeps the last good gates.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = ConfigMapRef::parse, env = "PREWARM_FEATURE_GATES_CONFIG_MAP")]
    feature_gates_config_map: Option<ConfigMapRef>,
    /// The namespace node agents read pull secrets from; job pull secrets are copied there.
    #[arg(long, default_value = DEFAULT_AGENT_NAMESPACE, env = "KRUISE_DAEMON_CONFIG_NS")]
    agent_namespace: String,
    /// How long a Node must have been Ready before it gets a NodeImage (Go duration).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    nodeimage_creation_delay: Duration,
    /// A tag the node has not answered for this long is failed ("node has not
    /// responded"), and a node NotReady this long counts as failed for the jobs
    /// whose tag is unfinished there (Go duration; OpenKruise's 10m).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    node_no_response_timeout: Duration,
    /// Nodes no job targets, whatever its selector says: a label selector
    /// (`key`, `!key`, `key=value`, `key!=value`, comma-separated). By default
    /// control-plane nodes, whose disk etcd shares; empty excludes nothing.
    #[arg(long, default_value = "node-role.kubernetes.io/control-plane", value_parser = ExcludedNodes::parse)]
    excluded_nodes: ExcludedNodes,
    /// Seconds added to the TTL of tags written by Always jobs (0 to 2678400).
    #[arg(long = "default-ttlseconds-for-always-nodeimage", default_value_t = 300,
          value_parser = clap::value_parser!(i64).range(0..=MAX_DEFAULT_TTL_FOR_ALWAYS))]
    default_ttl_for_always: i64,
    /// Concurrent ImagePullJob reconciles.
    #[arg(long, default_value_t = 3)]
    imagepulljob_workers: usize,
    /// Concurrent ImageListPullJob reconciles.
    #[arg(long, default_value_t = 3)]
    imagelistpulljob_workers: usize,
    /// Concurrent AdvancedCronJob reconciles (OpenKruise's flag).
    #[arg(long, default_value_t = 3)]
    advancedcronjob_workers: usize,
    /// Concurrent NodeImage reconciles.
    #[arg(long, default_value_t = 3)]
    nodeimage_workers: usize,
    /// Job events that arrive within this window are handled in one pass (Go duration).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    job_batch_window: Duration,
    /// Run only while holding the Lease; standbys take over when the leader goes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader-election Lease. By default the Pod's own (the
    /// service account's namespace file); out of cluster, prewarm-system.
    #[arg(long, env = "POD_NAMESPACE")]
    leader_elect_namespace: Option<String>,
    /// Kubeconfig to use; by default in-cluster config or $KUBECONFIG.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "prewarm-controller")]
    leader_elect_name: String,
    /// How long the lease holds without renewal (Go duration).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: Duration,
    /// How often the leader renews and standbys retry (Go duration).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: Duration,
    /// This process's identity in the Lease; by default the host name and process id.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Plain-HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8082")]
    admin_listen: SocketAddr,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "PREWARM_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(flatten)]
    openkruise: prewarm_process::openkruise::OpenKruiseFlags,
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    prewarm_api::duration::parse(value)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    prewarm_process::logs::init(cli.log_format);
    match run(cli).await {
        Ok(code) => code,
        Err(message) => {
            eprintln!("prewarm-controller: {message}");
            ExitCode::from(2)
        }
    }
}

/// Where the Lease lives when `--leader-elect-namespace` is not given: the
/// namespace of the Pod's service account, or the install's out of cluster.
const SERVICE_ACCOUNT_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
const INSTALL_NAMESPACE: &str = "prewarm-system";

fn lease_namespace(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| {
            let file = std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE_FILE).ok()?;
            Some(file.trim().to_owned()).filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| INSTALL_NAMESPACE.to_owned())
}

/// The API client, with every write counted in `metrics` (`api_writes`).
async fn client(kubeconfig: Option<&std::path::Path>, metrics: &Arc<Metrics>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no usable Kubernetes configuration: {e}"))?,
        Some(path) => {
            let unusable = |e: &dyn std::fmt::Display| format!("--kubeconfig {}: {e}", path.display());
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| unusable(&e))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| unusable(&e))?
        }
    };
    let builder = kube::client::ClientBuilder::try_from(config).map_err(|e| format!("building the API client: {e}"))?;
    let counted = CountWrites {
        metrics: metrics.clone(),
    };
    Ok(builder.with_layer(&counted).build())
}

async fn run(cli: Cli) -> Result<ExitCode, String> {
    let metrics = Arc::new(Metrics::default());
    let client = client(cli.kubeconfig.as_deref(), &metrics).await?;
    prewarm_process::openkruise::check_at_start(&client, &cli.openkruise).await?;
    let identity = cli.identity.clone().unwrap_or_else(default_identity);
    let (world, writers) = World::new(cli.job_batch_window);
    let listener = tokio::net::TcpListener::bind(cli.admin_listen)
        .await
        .map_err(|e| format!("binding {}: {e}", cli.admin_listen))?;
    let admin = tokio::spawn(prewarm_process::admin_server::serve(
        listener,
        admin::router(metrics.clone(), world.clone()),
        prewarm_process::admin_server::MAX_CONNECTIONS,
        std::future::pending(),
    ));
    let watches = world::watch(&client, &world, writers);
    let (mut gates, gates_watch) = match &cli.feature_gates_config_map {
        Some(config_map) => {
            let (gates, task) = live_gates::watch(client.clone(), config_map.clone(), cli.feature_gates).await;
            (gates, Some(task))
        }
        None => (
            tokio::sync::watch::channel(LiveGates::from_flag(cli.feature_gates)).1,
            None,
        ),
    };
    let mut in_force = gates.borrow_and_update().clone();
    // Every replica shows the gates in force, leading or not.
    let shown = {
        let (mut gates, metrics) = (gates.clone(), metrics.clone());
        metrics.gates.observe(&in_force);
        tokio::spawn(async move {
            while gates.changed().await.is_ok() {
                let live = gates.borrow_and_update().clone();
                metrics.gates.observe(&live);
            }
        })
    };
    tracing::info!(%identity, feature_gates = %in_force.gates, "waiting for the caches");
    let terminated = prewarm_process::terminated();
    tokio::pin!(terminated);
    tokio::select! {
        () = world.synced() => {}
        () = &mut terminated => return Ok(ExitCode::SUCCESS),
    }
    metrics.set_ready();
    let mut elector = cli.leader_elect.then(|| {
        Elector::new(
            client.clone(),
            LeaseConfig {
                namespace: lease_namespace(cli.leader_elect_namespace.as_deref()),
                name: cli.leader_elect_name.clone(),
                identity: identity.clone(),
                duration: cli.leader_elect_lease_duration,
                retry_period: cli.leader_elect_retry_period,
            },
        )
    });
    if let Some(elector) = &mut elector {
        tracing::info!(lease = %cli.leader_elect_name, "waiting to become leader");
        tokio::select! {
            acquired = elector.acquire() => acquired.map_err(|e| e.to_string())?,
            () = &mut terminated => return Ok(ExitCode::SUCCESS),
        }
    }
    metrics.set_leader(true);
    tracing::info!("leading: reconciling");
    let ctx = Context {
        client: client.clone(),
        world: world.clone(),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "prewarm-controller".into(),
                instance: Some(identity),
            },
        ),
        metrics: metrics.clone(),
        settings: Settings {
            agent_namespace: cli.agent_namespace.clone(),
            default_ttl_for_always: cli.default_ttl_for_always,
            creation_delay_seconds: i64::try_from(cli.nodeimage_creation_delay.as_secs()).unwrap_or(i64::MAX),
            no_response_seconds: i64::try_from(cli.node_no_response_timeout.as_secs()).unwrap_or(i64::MAX),
            excluded_nodes: cli.excluded_nodes.clone(),
        },
    };
    world.enqueue_all();
    let mut crews = Crews::new(Workers {
        node_images: cli.nodeimage_workers,
        image_pull_jobs: cli.imagepulljob_workers,
        image_list_pull_jobs: cli.imagelistpulljob_workers,
        advanced_cron_jobs: cli.advancedcronjob_workers,
    });
    // The gates may have changed while this replica waited for the lease.
    in_force = gates.borrow_and_update().clone();
    crews.apply(&ctx, in_force.gates);
    let mut watches: Vec<_> = watches.into_iter().chain(gates_watch).collect();
    let lost = async {
        match &mut elector {
            Some(elector) => elector.hold().await,
            None => std::future::pending().await,
        }
    };
    let mut lost = Box::pin(lost);
    let code = loop {
        tokio::select! {
            () = &mut lost => {
                tracing::error!("lost the lease: stopping");
                break ExitCode::FAILURE;
            }
            stopped = crews.first_to_stop() => {
                tracing::error!(cause = %stopped, "a reconcile worker stopped: exiting, so that the Pod restarts and a standby takes the lease");
                break ExitCode::FAILURE;
            }
            stopped = first_to_stop(&mut watches) => {
                tracing::error!(cause = %stopped, "a watch stopped: exiting, so that the Pod restarts and a standby takes the lease");
                break ExitCode::FAILURE;
            }
            Ok(()) = gates.changed() => {
                let next = gates.borrow_and_update().clone();
                crews.apply(&ctx, next.gates);
                if let Some(config_map) = &cli.feature_gates_config_map {
                    crews::announce(&ctx, config_map, &in_force, &next).await;
                }
                in_force = next;
            }
            () = &mut terminated => break ExitCode::SUCCESS,
        }
    };
    drop(lost);
    crews.abort();
    for task in watches.iter().chain([&shown]) {
        task.abort();
    }
    admin.abort();
    metrics.set_leader(false);
    if code == ExitCode::SUCCESS
        && let Some(elector) = &elector
    {
        elector.release().await;
    }
    Ok(code)
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "prewarm-controller".to_owned());
    format!("{host}_{}", std::process::id())
}
