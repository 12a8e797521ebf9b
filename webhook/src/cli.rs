//! Command-line configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use prewarm_api::gates::FeatureGates;

use crate::duration;
use crate::server::ServeConfig;

#[derive(Debug, Parser)]
#[command(
    name = "prewarm-webhook",
    version,
    about = "Admission webhook for ImagePullJob, ImageListPullJob and NodeImage"
)]
pub struct Cli {
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "PREWARM_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhooks over TLS.
    Serve(ServeArgs),
    /// Check manifests offline with the webhook's rules and defaults (exit 0 valid,
    /// 1 invalid, 2 unreadable input).
    Validate(crate::validate::ValidateArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
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
    #[arg(long, default_value = "", value_parser = parse_gates, env = "PREWARM_FEATURE_GATES")]
    pub feature_gates: FeatureGates,
    /// After the shutdown signal: how long to keep serving while endpoints drop this replica.
    #[arg(long, default_value = "5s", value_parser = duration::parse)]
    pub shutdown_delay: Duration,
    /// After the drain window: how long open requests get to finish.
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    pub shutdown_grace: Duration,
    /// How often the certificate directory is checked besides change notifications.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    pub cert_poll_interval: Duration,
}

fn parse_gates(value: &str) -> Result<FeatureGates, String> {
    FeatureGates::parse(value).map_err(|e| e.to_string())
}

impl ServeArgs {
    pub fn into_config(self) -> ServeConfig {
        let Self {
            listen,
            health_listen,
            cert_dir,
            dns_names,
            feature_gates,
            shutdown_delay,
            shutdown_grace,
            cert_poll_interval,
        } = self;
        ServeConfig {
            listen,
            health_listen,
            cert_dir,
            dns_names,
            feature_gates,
            shutdown_delay,
            shutdown_grace,
            cert_poll_interval,
        }
    }
}
