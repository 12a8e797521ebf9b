//! `kubectl prewarm progress NAME` (a kubectl plugin: put this binary on PATH):
//! an ImagePullJob's progress node by node, or an ImageListPullJob's image by
//! image; `-w` refreshes until the job completes, `-o json|yaml` for scripts.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use kube::api::ListParams;
use kube::{Api, Client};
use prewarm_api::v1beta1::{ImageListPullJob, ImagePullJob, NodeImage};
use prewarm_controller::progress;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "kubectl-prewarm", version, about = "prewarm's kubectl plugin")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A job's progress: an ImagePullJob node by node (phase, progress,
    /// duration, message), or an ImageListPullJob image by image.
    Progress(ProgressArgs),
}

#[derive(Debug, clap::Args)]
struct ProgressArgs {
    /// The ImagePullJob or ImageListPullJob.
    name: String,
    /// Its namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    namespace: Option<String>,
    /// Print again every --interval until the job completes.
    #[arg(short, long)]
    watch: bool,
    /// How often --watch refreshes (Go duration).
    #[arg(long, default_value = "2s", value_parser = prewarm_api::duration::parse)]
    interval: Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

/// What went wrong, said as kubectl says it (`Error from server (NotFound): …`).
#[derive(Debug)]
struct Failure(String);

impl Failure {
    fn api(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => Self(format!("Error from server ({}): {}", status.reason, status.message)),
            other => Self(format!("error: {other}")),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let Command::Progress(args) = Cli::parse().command;
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// One look at the job: what to print, and whether it is done.
struct Snapshot {
    text: String,
    done: bool,
}

async fn run(args: &ProgressArgs) -> Result<(), Failure> {
    let client = Client::try_default()
        .await
        .map_err(|e| Failure(format!("error: no usable Kubernetes configuration: {e}")))?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let mut last = String::new();
    loop {
        let snapshot = look(&client, &namespace, &args.name, args.output).await?;
        if snapshot.text != last {
            if !last.is_empty() && args.output == Output::Table {
                println!();
            }
            print!("{}", snapshot.text);
            last = snapshot.text;
        }
        if !args.watch || snapshot.done {
            return Ok(());
        }
        tokio::time::sleep(args.interval).await;
    }
}

async fn look(client: &Client, namespace: &str, name: &str, output: Output) -> Result<Snapshot, Failure> {
    let jobs: Api<ImagePullJob> = Api::namespaced(client.clone(), namespace);
    if let Some(job) = jobs.get_opt(name).await.map_err(Failure::api)? {
        return job_snapshot(client, &job, output).await;
    }
    let lists: Api<ImageListPullJob> = Api::namespaced(client.clone(), namespace);
    if let Some(list) = lists.get_opt(name).await.map_err(Failure::api)? {
        let children = jobs.list(&ListParams::default()).await.map_err(Failure::api)?.items;
        return list_snapshot(&list, &children, output);
    }
    Err(Failure(format!(
        "Error from server (NotFound): imagepulljobs.apps.kruise.io \"{name}\" not found (nor an imagelistpulljob of that name in namespace {namespace})"
    )))
}

async fn job_snapshot(client: &Client, job: &ImagePullJob, output: Output) -> Result<Snapshot, Failure> {
    let node_images = Api::<NodeImage>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Failure::api)?
        .items;
    let rows = progress::rows(job, &node_images, k8s_openapi::jiff::Timestamp::now()).map_err(Failure)?;
    let status = job.status.clone().unwrap_or_default();
    let name = job.metadata.name.as_deref().unwrap_or_default();
    let text = match output {
        Output::Table => format!(
            "{name}: {} nodes, {} succeeded, {} failed, {} active{}\n{}",
            status.desired,
            status.succeeded.unwrap_or(0),
            status.failed.unwrap_or(0),
            status.active.unwrap_or(0),
            status.message.as_ref().map(|m| format!(" ({m})")).unwrap_or_default(),
            progress::render(&rows)
        ),
        structured => encode(
            &json!({"kind": "ImagePullJob", "name": name, "namespace": job.metadata.namespace,
                "status": status, "nodes": rows}),
            structured,
        )?,
    };
    Ok(Snapshot {
        text,
        done: status.completion_time.is_some(),
    })
}

fn list_snapshot(list: &ImageListPullJob, children: &[ImagePullJob], output: Output) -> Result<Snapshot, Failure> {
    let rows = progress::child_rows(list, children);
    let status = list.status.clone().unwrap_or_default();
    let name = list.metadata.name.as_deref().unwrap_or_default();
    let text = match output {
        Output::Table => format!(
            "{name}: {} images, {} completed, {} succeeded, {} active\n{}",
            status.desired,
            status.completed.unwrap_or(0),
            status.succeeded.unwrap_or(0),
            status.active.unwrap_or(0),
            progress::render_children(&rows)
        ),
        structured => encode(
            &json!({"kind": "ImageListPullJob", "name": name, "namespace": list.metadata.namespace,
                "status": status, "images": rows}),
            structured,
        )?,
    };
    Ok(Snapshot {
        text,
        done: status.completion_time.is_some(),
    })
}

fn encode(value: &serde_json::Value, output: Output) -> Result<String, Failure> {
    let text = match output {
        Output::Yaml => serde_saphyr::to_string(value).map_err(|e| Failure(format!("error: {e}")))?,
        _ => serde_json::to_string_pretty(value).map_err(|e| Failure(format!("error: {e}")))? + "\n",
    };
    Ok(text)
}
