//! Command-line configuration.

use clap::{Parser, Subcommand, ValueEnum};

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
    Serve(Box<ServeConfig>),
    /// Check manifests offline with the webhook's rules and defaults (exit 0 valid,
    /// 1 invalid, 2 unreadable input).
    Validate(crate::validate::ValidateArgs),
}
