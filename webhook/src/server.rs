//! The TLS admission server and its health listener, with graceful shutdown:
//! on the shutdown signal readiness turns false, serving continues for the
//! drain window with `Connection: close` on every response, then the listener
//! closes, open connections finish their requests and close, and `run` returns.
//!
//! Each connection speaks the protocol its TLS handshake negotiated (ALPN `h2`
//! or HTTP/1.1), must complete the handshake and send its first request's
//! headers within an absolute deadline, and counts against `--max-connections`.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prewarm_api::admission::Policy;
use prewarm_api::gates::FeatureGates;
use prewarm_process::live_gates::{self, ConfigMapRef, LiveGates};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admit::{Admission, AdmitState};
use crate::bootstrap::{self, BootstrapError, Certificates};
use crate::cluster_certs::{self, ClusterCertError, Pass, SecretSource, SecretSourceConfig};
use crate::health::{self, HealthState};
use crate::limits::{self, FIRST_REQUEST_DEADLINE, LimitsConfig};
use crate::metrics::{CaChangeLabels, Metrics, ReloadLabels};
use crate::tls::{self, CertStore, Reload, TlsError};
use prewarm_process::accept::accept_until;
use prewarm_process::idle::IdleTimeout;

/// How long a client has to send a request's headers once it starts (HTTP/1.1).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/1.1 read buffer: headers and body chunks pass through it.
const HTTP1_BUFFER: usize = 64 * 1024;
/// HTTP/2 flow-control windows: what one stream, and one connection, may send
/// before the handler has taken it; the global body budget bounds the rest.
const HTTP2_STREAM_WINDOW: u32 = 64 * 1024;
const HTTP2_CONNECTION_WINDOW: u32 = 128 * 1024;
const HTTP2_MAX_HEADER_LIST: u32 = 64 * 1024;
/// HTTP/2 keep-alive: a peer that does not answer a ping in time is dropped.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(30);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// `prewarm-webhook serve` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeConfig {
    /// Address of the TLS admission listener.
    #[arg(long, default_value = "0.0.0.0:9443", env = "PREWARM_LISTEN")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8081", env = "PREWARM_HEALTH_LISTEN")]
    pub health_listen: SocketAddr,
    /// Where the serving certificate comes from: `dir`, the files in --cert-dir
    /// (cert-manager, a mounted Secret, or generated when absent); or `secret`, a CA
    /// shared by all replicas in a Secret, with caBundles kept current.
    #[arg(long, value_enum, default_value_t = CertSource::Dir, env = "PREWARM_CERT_SOURCE")]
    pub cert_source: CertSource,
    #[command(flatten)]
    pub secret_source: SecretSourceConfig,
    /// Directory with tls.crt and tls.key, reloaded when they change. With
    /// --cert-source dir and neither file there, a self-signed CA (ca.crt) and a
    /// serving certificate are generated; with secret, the issued certificate is written there.
    #[arg(long, default_value = "/tmp/prewarm-webhook-certs", env = "PREWARM_CERT_DIR")]
    pub cert_dir: PathBuf,
    /// Extra DNS name for a generated serving certificate (repeatable), besides
    /// localhost and prewarm-webhook.prewarm-system.svc(.cluster.local).
    #[arg(long = "dns-name")]
    pub dns_names: Vec<String>,
    /// Feature gates, as in Kubernetes: ImagePullJobGate=true,KruiseDaemon=true.
    /// With --feature-gates-config-map, the value while that ConfigMap is absent.
    #[arg(long, default_value = "", value_parser = FeatureGates::parse, env = "PREWARM_FEATURE_GATES")]
    pub feature_gates: FeatureGates,
    /// A ConfigMap (NAMESPACE/NAME) whose key `featureGates` sets the gates
    /// live: watched, applied to new requests within moments of a change; a
    /// value that does not parse keeps the last good gates.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = ConfigMapRef::parse, env = "PREWARM_FEATURE_GATES_CONFIG_MAP")]
    pub feature_gates_config_map: Option<ConfigMapRef>,
    #[command(flatten)]
    pub caps: crate::cli::CapsConfig,
    /// The node agents' ServiceAccount (NAMESPACE/NAME): its NodeImage status
    /// writes are allowed only on its own node's NodeImage (the node its
    /// token is bound to) and only for the tags the spec asks for. Unset: not checked.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = parse_service_account, env = "PREWARM_NODE_AGENT_SERVICE_ACCOUNT")]
    pub node_agent_service_account: Option<String>,
    /// After the shutdown signal: how long to keep serving while endpoints drop this replica.
    #[arg(long, default_value = "5s", value_parser = prewarm_api::duration::parse)]
    pub shutdown_delay: Duration,
    /// After the drain window: how long open requests get to finish.
    #[arg(long, default_value = "30s", value_parser = prewarm_api::duration::parse)]
    pub shutdown_grace: Duration,
    /// Connections silent this long are closed (the API server keeps idle
    /// keep-alive connections for 90 s).
    #[arg(long, default_value = "120s", value_parser = prewarm_api::duration::parse)]
    pub idle_timeout: Duration,
    /// How often the certificate directory is checked besides change notifications.
    #[arg(long, default_value = "10s", value_parser = prewarm_api::duration::parse)]
    pub cert_poll_interval: Duration,
    #[command(flatten)]
    pub limits: LimitsConfig,
    /// Checked at start when the webhook talks to the API (--cert-source
    /// secret or --feature-gates-config-map).
    #[command(flatten)]
    pub openkruise: prewarm_process::openkruise::OpenKruiseFlags,
}

impl ServeConfig {
    /// `serve`'s defaults with both listeners on loopback ports the system picks
    /// and certificates in `cert_dir`: for embedding the server, as tests do.
    pub fn loopback(cert_dir: &std::path::Path) -> Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            serve: ServeConfig,
        }
        let cert_dir = cert_dir.display().to_string();
        let args = [
            "serve",
            "--listen=127.0.0.1:0",
            "--health-listen=127.0.0.1:0",
            "--cert-dir",
            &cert_dir,
        ];
        <Flags as clap::Parser>::try_parse_from(args).map(|flags| flags.serve)
    }
}

/// `NAMESPACE/NAME` → the ServiceAccount's username, as admission sees it.
fn parse_service_account(text: &str) -> Result<String, String> {
    let (namespace, name) = text.split_once('/').ok_or_else(|| {
        format!("{text:?} is not NAMESPACE/NAME of a ServiceAccount (e.g. prewarm-system/prewarm-nodeagent)")
    })?;
    for (part, value) in [("namespace", namespace), ("name", name)] {
        prewarm_api::names::dns_subdomain(value).map_err(|e| format!("{part} {value:?} in {text:?}: {e}"))?;
    }
    Ok(format!("system:serviceaccount:{namespace}:{name}"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CertSource {
    Dir,
    Secret,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("certificates from the cluster: {0}")]
    Cluster(#[from] ClusterCertError),
    #[error("--feature-gates-config-map: {0}")]
    LiveGates(#[source] ClusterCertError),
    #[error("preparing certificates: {0}")]
    Bootstrap(#[from] BootstrapError),
    #[error("loading the serving certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("certificate directory {dir}: {source}")]
    CertDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the Kubernetes API client: {0}")]
    ApiClient(#[source] ClusterCertError),
    #[error("{0}")]
    OpenKruise(String),
}

/// A server with its listeners bound, ready to run.
pub struct Server {
    config: ServeConfig,
    /// Where the serving pair is read from: `--cert-dir`, or this process's own directory in it.
    serving_dir: PathBuf,
    listener: TcpListener,
    health_listener: TcpListener,
    acceptor: TlsAcceptor,
    certs: Arc<CertStore>,
    metrics: Arc<Metrics>,
    cluster: Option<SecretSource>,
    /// The live gates and the task that follows their ConfigMap.
    live_gates: Option<(watch::Receiver<LiveGates>, JoinHandle<()>)>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

impl Server {
    /// Prepares certificates (generating them if the directory has none) and binds both listeners.
    pub async fn bind(config: ServeConfig) -> Result<Self, ServeError> {
        let metrics = Arc::new(Metrics::default());
        if config.cert_source == CertSource::Secret || config.feature_gates_config_map.is_some() {
            let client = cluster_certs::client(config.secret_source.kubeconfig.as_deref())
                .await
                .map_err(ServeError::ApiClient)?;
            prewarm_process::openkruise::check_at_start(&client, &config.openkruise)
                .await
                .map_err(ServeError::OpenKruise)?;
        }
        let (serving_dir, cluster) = match config.cert_source {
            CertSource::Dir => {
                let (found, serving_dir) = bootstrap::ensure(&config.cert_dir, &config.dns_names)?;
                if found == Certificates::Generated {
                    tracing::info!(
                        cert_dir = %serving_dir.display(),
                        ca = %serving_dir.join(prewarm_certs::CA_CERT_FILE).display(),
                        "no certificate found: generated a self-signed CA and a serving certificate; trust the CA to call the webhook"
                    );
                }
                (serving_dir, None)
            }
            CertSource::Secret => {
                let serving_dir =
                    prewarm_certs::private_dir(&config.cert_dir).map_err(|source| ServeError::CertDir {
                        dir: config.cert_dir.display().to_string(),
                        source,
                    })?;
                let source = first_sync(&config, serving_dir.clone(), &metrics).await?;
                (serving_dir, Some(source))
            }
        };
        let loaded = tls::load(&serving_dir)?;
        tracing::info!(
            cert = %serving_dir.join(prewarm_certs::TLS_CERT_FILE).display(),
            valid_for = %loaded.names.join(", "),
            "serving certificate"
        );
        metrics.certificate_expiry.set(loaded.not_after);
        let certs = Arc::new(CertStore::new(loaded));
        let acceptor = TlsAcceptor::from(tls::server_config(certs.clone())?);
        let live_gates = match &config.feature_gates_config_map {
            Some(config_map) => {
                let client = cluster_certs::client(config.secret_source.kubeconfig.as_deref())
                    .await
                    .map_err(ServeError::LiveGates)?;
                Some(live_gates::watch(client, config_map.clone(), config.feature_gates).await)
            }
            None => None,
        };
        let listener = bind(config.listen).await?;
        let health_listener = bind(config.health_listen).await?;
        Ok(Self {
            config,
            serving_dir,
            listener,
            health_listener,
            acceptor,
            certs,
            metrics,
            cluster,
            live_gates,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn health_addr(&self) -> std::io::Result<SocketAddr> {
        self.health_listener.local_addr()
    }

    /// Serves until `shutdown` completes, then drains and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self {
            config,
            serving_dir,
            listener,
            health_listener,
            acceptor,
            certs,
            metrics,
            cluster,
            live_gates,
        } = self;
        let admit_state = Arc::new(AdmitState::new(
            Policy {
                gates: config.feature_gates,
                caps: config.caps.caps(),
                node_agent: config.node_agent_service_account.clone(),
            },
            metrics.clone(),
            &config.limits,
        ));
        let health_state = Arc::new(HealthState {
            metrics: metrics.clone(),
            certs: certs.clone(),
            serving: AtomicBool::new(true),
        });
        let health_addr = health_listener.local_addr().unwrap_or(config.health_listen);
        let (health_stop_tx, health_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let health = tokio::spawn(prewarm_process::admin_server::serve(
            health_listener,
            health::router(health_state.clone()),
            config.limits.max_health_connections,
            async move {
                let _ = health_stop_rx.await;
            },
        ));
        let live_gates = follow_gates(live_gates, config.feature_gates, &admit_state, &metrics);
        let cluster = cluster.map(|source| {
            let metrics = metrics.clone();
            tokio::spawn(cluster_certs::keep_current(source, move |pass| {
                record_pass(&metrics, pass)
            }))
        });
        let watcher = tokio::spawn(tls::watch(
            serving_dir,
            certs,
            config.cert_poll_interval,
            move |reload| record_reload(&metrics, reload),
        ));
        tracing::info!(
            listen = %listener.local_addr().unwrap_or(config.listen),
            health_listen = %health_addr,
            feature_gates = %admit_state.policy().gates,
            "serving admission webhooks"
        );

        let service = Admission::new(admit_state.clone());
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(HTTP1_BUFFER);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.limits.max_http2_streams)
            .initial_stream_window_size(HTTP2_STREAM_WINDOW)
            .initial_connection_window_size(HTTP2_CONNECTION_WINDOW)
            .max_header_list_size(HTTP2_MAX_HEADER_LIST)
            .max_send_buf_size(HTTP2_STREAM_WINDOW as usize)
            .keep_alive_interval(HTTP2_PING_INTERVAL)
            .keep_alive_timeout(HTTP2_PING_TIMEOUT);
        let (http1, http2) = (Arc::new(http1), Arc::new(http2));
        let graceful = GracefulShutdown::new();
        let idle_timeout = config.idle_timeout;
        let max_connections = limits::connection_cap(config.limits.max_connections);
        if max_connections < config.limits.max_connections {
            tracing::warn!(
                max_connections,
                "--max-connections lowered to stay below the open-file limit"
            );
        }
        let slots = Arc::new(Semaphore::new(max_connections));

        let serve_connection = |tcp: TcpStream, slot: OwnedSemaphorePermit| {
            let (acceptor, http1, http2, watcher) =
                (acceptor.clone(), http1.clone(), http2.clone(), graceful.watcher());
            let first_request = Arc::new(AtomicBool::new(false));
            let service = MarkFirstRequest {
                inner: service.clone(),
                seen: first_request.clone(),
            };
            tokio::spawn(async move {
                let _slot = slot;
                let deadline = tokio::time::Instant::now() + FIRST_REQUEST_DEADLINE;
                let Ok(Ok(tls)) = tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await else {
                    return;
                };
                let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
                let io = TokioIo::new(IdleTimeout::new(tls, idle_timeout));
                let result = if negotiated_h2 {
                    let connection = watcher.watch(http2.serve_connection(io, service));
                    first_request_by(deadline, &first_request, connection).await
                } else {
                    let connection = watcher.watch(http1.serve_connection(io, service));
                    first_request_by(deadline, &first_request, connection).await
                };
                if let Some(Err(e)) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        };

        accept_until(&listener, shutdown, &slots, &serve_connection).await;
        health_state.serving.store(false, Ordering::Relaxed);
        admit_state.draining.store(true, Ordering::Relaxed);
        tracing::info!(delay = ?config.shutdown_delay, "shutting down: not ready, serving through the drain window");
        accept_until(
            &listener,
            tokio::time::sleep(config.shutdown_delay),
            &slots,
            &serve_connection,
        )
        .await;
        drop(listener);
        tracing::info!(
            connections = graceful.count(),
            "closing connections after their requests"
        );
        if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?config.shutdown_grace, "connections still open after the grace period; closing");
        }
        watcher.abort();
        for task in live_gates {
            task.abort();
        }
        if let Some(cluster) = cluster {
            cluster.abort();
        }
        let _ = health_stop_tx.send(());
        let _ = health.await;
        tracing::info!("stopped");
    }
}

/// Runs `connection` to its end, unless no request has begun by `deadline`:
/// then it is dropped (closed), however many bytes trickled in meanwhile.
async fn first_request_by<F: Future>(
    deadline: tokio::time::Instant,
    seen: &AtomicBool,
    connection: F,
) -> Option<F::Output> {
    tokio::pin!(connection);
    tokio::select! {
        output = &mut connection => return Some(output),
        () = tokio::time::sleep_until(deadline) => {}
    }
    if seen.load(Ordering::Relaxed) {
        Some(connection.await)
    } else {
        None
    }
}

/// Notes that a connection's first request has begun.
#[derive(Clone, Debug)]
struct MarkFirstRequest<S> {
    inner: S,
    seen: Arc<AtomicBool>,
}

impl<S, B> hyper::service::Service<hyper::Request<B>> for MarkFirstRequest<S>
where
    S: hyper::service::Service<hyper::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn call(&self, request: hyper::Request<B>) -> Self::Future {
        self.seen.store(true, Ordering::Relaxed);
        self.inner.call(request)
    }
}

/// Applies the live gates to admission and metrics now and on every change;
/// without a ConfigMap, the flag's gates are shown once.
fn follow_gates(
    live_gates: Option<(watch::Receiver<LiveGates>, JoinHandle<()>)>,
    flag: FeatureGates,
    admit_state: &Arc<AdmitState>,
    metrics: &Arc<Metrics>,
) -> Vec<JoinHandle<()>> {
    let Some((mut receiver, watcher)) = live_gates else {
        metrics.gates.observe(&LiveGates::from_flag(flag));
        return Vec::new();
    };
    let apply = |live: &LiveGates, admit_state: &AdmitState, metrics: &Metrics| {
        admit_state.set_gates(live.gates);
        metrics.gates.observe(live);
    };
    apply(&receiver.borrow_and_update(), admit_state, metrics);
    let (admit_state, metrics) = (admit_state.clone(), metrics.clone());
    let follower = tokio::spawn(async move {
        while receiver.changed().await.is_ok() {
            let live = receiver.borrow_and_update().clone();
            apply(&live, &admit_state, &metrics);
        }
    });
    vec![watcher, follower]
}

/// Attempts at the first pass over the CA Secret before startup fails, with
/// doubling pauses from this one (about half a minute in all).
const FIRST_SYNC_ATTEMPTS: u32 = 5;
const FIRST_SYNC_PAUSE: Duration = Duration::from_secs(1);

/// Connects to the cluster and gets a serving certificate from the shared CA,
/// retrying while the API server is unreachable or busy.
async fn first_sync(config: &ServeConfig, serving_dir: PathBuf, metrics: &Metrics) -> Result<SecretSource, ServeError> {
    let mut source = SecretSource::connect(config.secret_source.clone(), serving_dir, config.dns_names.clone()).await?;
    let mut pause = FIRST_SYNC_PAUSE;
    let mut attempt = 1;
    loop {
        let result = source.sync().await;
        record_pass(metrics, result.as_ref());
        match result {
            Ok(_) => {
                tracing::info!(names = %source.dns_names().join(", "), "serving certificate issued from the shared CA");
                return Ok(source);
            }
            Err(e) if attempt < FIRST_SYNC_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, retry_in = ?pause, "cannot get a certificate from the cluster yet");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn record_pass(metrics: &Metrics, pass: Result<&Pass, &ClusterCertError>) {
    match pass {
        Ok(pass) => {
            if let Some(change) = pass.secret_change {
                metrics
                    .ca_changes
                    .get_or_create(&CaChangeLabels {
                        change: change.as_str(),
                    })
                    .inc();
            }
            if pass.issued || pass.bundles_patched > 0 {
                tracing::info!(
                    issued = pass.issued,
                    bundles_patched = pass.bundles_patched,
                    "certificates from the shared CA updated"
                );
            }
        }
        Err(e) => {
            metrics.ca_sync_failures.inc();
            tracing::warn!(error = %e, "checking the shared CA failed; the current certificate keeps serving");
        }
    }
}

fn record_reload(metrics: &Metrics, reload: Reload) {
    let result = match reload {
        Reload::Unchanged => return,
        Reload::Replaced { not_after } => {
            metrics.certificate_expiry.set(not_after);
            tracing::info!(not_after, "serving certificate reloaded");
            "replaced"
        }
        Reload::Failed(e) => {
            tracing::warn!(error = %e, "certificate reload failed; still serving the previous certificate");
            "failed"
        }
    };
    metrics
        .certificate_reloads
        .get_or_create(&ReloadLabels { result })
        .inc();
}
