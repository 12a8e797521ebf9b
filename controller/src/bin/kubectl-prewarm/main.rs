//! `kubectl prewarm progress NAME` (a kubectl plugin: put this binary on PATH):
//! an ImagePullJob's progress node by node, or an ImageListPullJob's image by
//! image; `-w` refreshes until the job completes, `-o json|yaml` for scripts.
//! `kubectl prewarm openkruise check|release`: OpenKruise serving the same
//! kinds, and its webhooks for them removed (README, "Coming from OpenKruise").
//! `kubectl prewarm workload KIND/NAME`: pre-warm a workload's images on its
//! nodes before a rollout (README, "Before a rollout").

mod workload;

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
    /// OpenKruise serving ImagePullJob, ImageListPullJob and NodeImage:
    /// `check` says what would conflict with prewarm (exit 1 if anything);
    /// `release` removes OpenKruise's webhooks for these kinds.
    Openkruise(OpenKruiseArgs),
    /// Pre-warms a workload's images (containers and init containers) on the
    /// nodes its pods run on, or on every node they could be scheduled to.
    Workload(workload::WorkloadArgs),
}

#[derive(Debug, clap::Args)]
struct OpenKruiseArgs {
    #[arg(value_enum)]
    action: OpenKruiseAction,
    /// Where OpenKruise's kruise-daemon DaemonSet would be.
    #[arg(long, default_value = prewarm_process::openkruise::DEFAULT_NAMESPACE)]
    openkruise_namespace: String,
    /// `release`: say what would be removed, change nothing (`client`, as kubectl).
    #[arg(long, value_name = "client", num_args = 0..=1, default_missing_value = "client")]
    dry_run: Option<DryRun>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OpenKruiseAction {
    Check,
    Release,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum DryRun {
    Client,
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
pub(crate) enum Output {
    Table,
    Json,
    Yaml,
}

/// What went wrong, said as kubectl says it (`Error from server (NotFound): …`).
#[derive(Debug)]
pub(crate) struct Failure(String);

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
    let ran = match Cli::parse().command {
        Command::Progress(args) => run(&args).await,
        Command::Openkruise(args) => openkruise(&args).await,
        Command::Workload(args) => workload::run(&args).await,
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) async fn client() -> Result<Client, Failure> {
    Client::try_default()
        .await
        .map_err(|e| Failure(format!("error: no usable Kubernetes configuration: {e}")))
}

async fn openkruise(args: &OpenKruiseArgs) -> Result<(), Failure> {
    use prewarm_process::openkruise;
    let client = client().await?;
    match args.action {
        OpenKruiseAction::Check => {
            let installed = openkruise::Installed::read(&client, &args.openkruise_namespace)
                .await
                .map_err(Failure::api)?;
            let found = installed.found();
            if found.is_empty() {
                println!("no OpenKruise install serves ImagePullJob, ImageListPullJob or NodeImage");
                return Ok(());
            }
            Err(Failure(openkruise::conflict_message(&found)))
        }
        OpenKruiseAction::Release => {
            let said = openkruise::release(&client, args.dry_run.is_some())
                .await
                .map_err(Failure)?;
            for line in said {
                println!("{line}");
            }
            Ok(())
        }
    }
}

/// One look at the job: what to print, and whether it is done.
struct Snapshot {
    text: String,
    done: bool,
    failed: bool,
}

async fn run(args: &ProgressArgs) -> Result<(), Failure> {
    let client = client().await?;
    let namespace = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    follow(&client, &namespace, &args.name, args.watch, args.interval, args.output)
        .await
        .map(|_| ())
}

/// Prints the job's progress, again each `interval` while `watch`ing until it
/// completes; returns whether any node or image failed.
pub(crate) async fn follow(
    client: &Client,
    namespace: &str,
    name: &str,
    watch: bool,
    interval: Duration,
    output: Output,
) -> Result<bool, Failure> {
    let mut last = String::new();
    loop {
        let snapshot = look(client, namespace, name, output).await?;
        if snapshot.text != last {
            if !last.is_empty() && output == Output::Table {
                println!();
            }
            print!("{}", snapshot.text);
            last = snapshot.text;
        }
        if !watch || snapshot.done {
            return Ok(snapshot.failed);
        }
        tokio::time::sleep(interval).await;
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
        let mut snapshot = list_snapshot(&list, &children, output)?;
        if output == Output::Table {
            snapshot.text.push_str(&node_tables(client, &list, &children).await?);
        }
        return Ok(snapshot);
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
        failed: status.failed.unwrap_or(0) > 0,
    })
}

/// Each image's progress node by node, under a line naming the image and its job.
async fn node_tables(client: &Client, list: &ImageListPullJob, children: &[ImagePullJob]) -> Result<String, Failure> {
    let uid = list.metadata.uid.as_deref();
    let mut owned: Vec<&ImagePullJob> = children
        .iter()
        .filter(|c| {
            c.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| Some(o.uid.as_str()) == uid)
        })
        .collect();
    if owned.is_empty() {
        return Ok(String::new());
    }
    owned.sort_by(|a, b| a.spec.image.cmp(&b.spec.image));
    let node_images = Api::<NodeImage>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Failure::api)?
        .items;
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut text = String::new();
    for child in owned {
        let rows = progress::rows(child, &node_images, now).map_err(Failure)?;
        let name = child.metadata.name.as_deref().unwrap_or_default();
        text.push_str(&format!(
            "{} ({name}) by node:\n{}",
            child.spec.image,
            progress::render(&rows)
        ));
    }
    Ok(text)
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
        failed: status.failed_image_statuses.as_ref().is_some_and(|f| !f.is_empty()),
    })
}

pub(crate) fn encode(value: &serde_json::Value, output: Output) -> Result<String, Failure> {
    let text = match output {
        Output::Yaml => serde_saphyr::to_string(value).map_err(|e| Failure(format!("error: {e}")))?,
        _ => serde_json::to_string_pretty(value).map_err(|e| Failure(format!("error: {e}")))? + "\n",
    };
    Ok(text)
}
