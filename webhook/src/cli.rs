//! Command-line configuration.

use clap::{Parser, Subcommand};
pub use prewarm_process::logs::LogFormat;

use prewarm_api::caps::{self, Caps};

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

/// Caps an admin may put on what a job asks of every node; unset, any value
/// passes (as in OpenKruise). The same flags on `serve` and `validate`.
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct CapsConfig {
    /// The most a job's pullPolicy.timeoutSeconds may be (600, the default, or more).
    #[arg(long, value_name = "SECONDS", value_parser = caps::parse_max_timeout_seconds, env = "PREWARM_MAX_TIMEOUT_SECONDS")]
    pub max_timeout_seconds: Option<i32>,
    /// The most a job's pullPolicy.backoffLimit may be (3, the default, or more).
    #[arg(long, value_name = "RETRIES", value_parser = caps::parse_max_backoff_limit, env = "PREWARM_MAX_BACKOFF_LIMIT")]
    pub max_backoff_limit: Option<i32>,
}

impl CapsConfig {
    pub fn caps(&self) -> Caps {
        Caps {
            max_timeout_seconds: self.max_timeout_seconds,
            max_backoff_limit: self.max_backoff_limit,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhooks over TLS.
    // A flag given twice keeps the last value, as Kubernetes components do,
    // so that the chart's extraArgs override its own flags.
    #[command(args_override_self = true)]
    Serve(Box<ServeConfig>),
    /// Check manifests offline with the webhook's rules and defaults (exit 0 valid,
    /// 1 invalid, 2 unreadable input).
    Validate(crate::validate::ValidateArgs),
}
