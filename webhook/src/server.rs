//! The TLS admission server and its health listener, with graceful shutdown:
//! on the shutdown signal readiness turns false, serving continues for the
//! drain window with `Connection: close` on every response, then the listener
//! closes, open connections finish their requests and close, and `run` returns.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prewarm_api::gates::FeatureGates;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::admit::{self, AdmitState};
use crate::bootstrap::{self, BootstrapError, Certificates};
use crate::health::{self, HealthState};
use crate::idle::IdleTimeout;
use crate::metrics::{Metrics, ReloadLabels};
use crate::tls::{self, CertStore, Reload, TlsError};

/// How long a client has to finish the TLS handshake, and to send request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// `prewarm-webhook serve` flags.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeConfig {
    /// Address of the TLS admission listener.
    #[arg(long, default_value = "0.0.0.0:9443", env = "PREWARM_LISTEN")]
    pub listen: SocketAddr,
    /// Address of the plain-HTTP listener for /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8081", env = "PREWARM_HEALTH_LISTEN")]
    pub health_listen: SocketAddr,
    /// Directory with tls.crt and tls.key, reloaded when they change. When it holds
    /// neither, a self-signed CA (ca.crt) and a serving certificate are generated there.
    #[arg(long, default_value = "/tmp/prewarm-webhook-certs", env = "PREWARM_CERT_DIR")]
    pub cert_dir: PathBuf,
    /// Extra DNS name for a generated serving certificate (repeatable), such as
    /// prewarm-webhook.prewarm-system.svc.
    #[arg(long = "dns-name")]
    pub dns_names: Vec<String>,
    /// Feature gates, as in Kubernetes: ImagePullJobGate=true,KruiseDaemon=true.
    #[arg(long, default_value = "", value_parser = FeatureGates::parse, env = "PREWARM_FEATURE_GATES")]
    pub feature_gates: FeatureGates,
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
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("preparing certificates: {0}")]
    Bootstrap(#[from] BootstrapError),
    #[error("loading the serving certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A server with its listeners bound, ready to run.
pub struct Server {
    config: ServeConfig,
    listener: TcpListener,
    health_listener: TcpListener,
    acceptor: TlsAcceptor,
    certs: Arc<CertStore>,
    metrics: Arc<Metrics>,
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
        if bootstrap::ensure(&config.cert_dir, &config.dns_names)? == Certificates::Generated {
            tracing::info!(
                cert_dir = %config.cert_dir.display(),
                ca = %config.cert_dir.join(prewarm_certs::CA_CERT_FILE).display(),
                "no certificate found: generated a self-signed CA and a serving certificate for localhost, 127.0.0.1 and ::1; trust the CA to call the webhook"
            );
        }
        let loaded = tls::load(&config.cert_dir)?;
        let metrics = Arc::new(Metrics::default());
        metrics.certificate_expiry.set(loaded.not_after);
        let certs = Arc::new(CertStore::new(loaded));
        let acceptor = TlsAcceptor::from(tls::server_config(certs.clone())?);
        let listener = bind(config.listen).await?;
        let health_listener = bind(config.health_listen).await?;
        Ok(Self {
            config,
            listener,
            health_listener,
            acceptor,
            certs,
            metrics,
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
            listener,
            health_listener,
            acceptor,
            certs,
            metrics,
        } = self;
        let admit_state = Arc::new(AdmitState {
            gates: config.feature_gates,
            metrics: metrics.clone(),
            draining: AtomicBool::new(false),
        });
        let health_state = Arc::new(HealthState {
            metrics: metrics.clone(),
            certs: certs.clone(),
            serving: AtomicBool::new(true),
        });
        let health_addr = health_listener.local_addr().unwrap_or(config.health_listen);
        let (health_stop_tx, health_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let health = tokio::spawn({
            let router = health::router(health_state.clone());
            async move {
                let stopped = async move {
                    let _ = health_stop_rx.await;
                };
                if let Err(e) = axum::serve(health_listener, router)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!(error = %e, "health listener failed");
                }
            }
        });
        let watcher = tokio::spawn(tls::watch(
            config.cert_dir.clone(),
            certs,
            config.cert_poll_interval,
            move |reload| record_reload(&metrics, reload),
        ));
        tracing::info!(
            listen = %listener.local_addr().unwrap_or(config.listen),
            health_listen = %health_addr,
            feature_gates = %config.feature_gates,
            "serving admission webhooks"
        );

        let service = TowerToHyperService::new(admit::router(admit_state.clone()));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        let idle_timeout = config.idle_timeout;

        let serve_connection = |tcp: TcpStream| {
            let (acceptor, service, builder, watcher) =
                (acceptor.clone(), service.clone(), builder.clone(), graceful.watcher());
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
                    return;
                };
                let io = TokioIo::new(IdleTimeout::new(tls, idle_timeout));
                let connection = builder.serve_connection_with_upgrades(io, service);
                if let Err(e) = watcher.watch(connection.into_owned()).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        };

        accept_until(&listener, shutdown, &serve_connection).await;
        health_state.serving.store(false, Ordering::Relaxed);
        admit_state.draining.store(true, Ordering::Relaxed);
        tracing::info!(delay = ?config.shutdown_delay, "shutting down: not ready, serving through the drain window");
        accept_until(&listener, tokio::time::sleep(config.shutdown_delay), &serve_connection).await;
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
        let _ = health_stop_tx.send(());
        let _ = health.await;
        tracing::info!("stopped");
    }
}

/// Accepts connections until `stop` completes.
async fn accept_until(listener: &TcpListener, stop: impl Future<Output = ()>, serve: &impl Fn(TcpStream)) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => serve(tcp),
                Err(e) => tracing::warn!(error = %e, "accepting a connection"),
            },
            () = &mut stop => return,
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
