//! `kubectl prewarm progress JOB` (a kubectl plugin: put this binary on PATH):
//! an ImagePullJob's progress node by node.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::Api;
use kube::api::ListParams;
use prewarm_api::v1beta1::{ImagePullJob, NodeImage};
use prewarm_controller::progress;

#[derive(Debug, Parser)]
#[command(name = "kubectl-prewarm", version, about = "prewarm's kubectl plugin")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// An ImagePullJob's progress on each node it has written to: phase,
    /// progress, duration and message.
    Progress {
        /// The ImagePullJob.
        name: String,
        /// Its namespace (default: the kubeconfig context's).
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let Command::Progress { name, namespace } = Cli::parse().command;
    match run(&name, namespace.as_deref()).await {
        Ok(table) => {
            print!("{table}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("kubectl prewarm progress: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(name: &str, namespace: Option<&str>) -> Result<String, String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("no usable Kubernetes configuration: {e}"))?;
    let jobs: Api<ImagePullJob> = match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::default_namespaced(client.clone()),
    };
    let job = jobs
        .get(name)
        .await
        .map_err(|e| format!("reading ImagePullJob {name}: {e}"))?;
    let node_images = Api::<NodeImage>::all(client)
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing NodeImages: {e}"))?
        .items;
    let rows = progress::rows(&job, &node_images, k8s_openapi::jiff::Timestamp::now())?;
    let status = job.status.unwrap_or_default();
    let summary = format!(
        "{name}: {} nodes, {} succeeded, {} failed, {} active{}\n",
        status.desired,
        status.succeeded.unwrap_or(0),
        status.failed.unwrap_or(0),
        status.active.unwrap_or(0),
        status.message.map(|m| format!(" ({m})")).unwrap_or_default()
    );
    Ok(summary + &progress::render(&rows))
}
