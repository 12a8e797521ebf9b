//! `kubectl prewarm workload`: reads the workload (from the cluster or a
//! manifest), asks the planner for its job, and creates or prints it;
//! `--wait` follows it node by node.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use kube::{Api, Client};
use prewarm_api::job::Parallelism;
use prewarm_controller::plan::workload::{self, Job, JobOptions, Target, Workload};

use super::{DryRun, Failure, Output, client, encode, follow};

#[derive(Debug, clap::Args)]
pub struct WorkloadArgs {
    /// The workload in the cluster: deployment/NAME, statefulset/NAME,
    /// daemonset/NAME, job/NAME or cronjob/NAME (kubectl's short names too).
    #[arg(required_unless_present = "filename", conflicts_with = "filename")]
    workload: Option<String>,
    /// A manifest of the workload, not yet applied (`-` reads standard input).
    #[arg(short, long)]
    filename: Option<PathBuf>,
    /// The workload's namespace, where the job is made (default: the manifest's, else the kubeconfig context's).
    #[arg(short, long)]
    namespace: Option<String>,
    /// `running`: the nodes its pods run on now; `eligible`: every node its
    /// pods could be scheduled to (nodeSelector, required node affinity, taints).
    #[arg(long, value_enum, default_value_t = Nodes::Running)]
    nodes: Nodes,
    /// CONTAINER=IMAGE: pre-warm this image for that container instead (the
    /// next version); repeat for several containers.
    #[arg(long = "image", value_name = "CONTAINER=IMAGE", value_parser = parse_override)]
    images: Vec<(String, String)>,
    /// Print the job instead of creating it (`client`, as kubectl).
    #[arg(long, value_name = "client", num_args = 0..=1, default_missing_value = "client")]
    dry_run: Option<DryRun>,
    /// Print the job as yaml or json (with --dry-run=client: the job not created).
    #[arg(short, long, value_enum)]
    output: Option<JobOutput>,
    /// Show the progress node by node until the job completes; exit 1 if a node failed.
    #[arg(long)]
    wait: bool,
    /// How often --wait refreshes (Go duration).
    #[arg(long, default_value = "2s", value_parser = prewarm_api::duration::parse)]
    interval: Duration,
    /// Delete the job this long after it completes (Go duration, such as 10m).
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<i32>,
    /// Most nodes pulling at once: a number, or a percentage of the nodes such as 25%.
    #[arg(long, value_parser = parse_parallelism)]
    parallelism: Option<IntOrString>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Nodes {
    Running,
    Eligible,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum JobOutput {
    Yaml,
    Json,
}

fn parse_override(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((container, image)) if !container.is_empty() && !image.is_empty() => {
            Ok((container.to_owned(), image.to_owned()))
        }
        _ => Err(format!(
            "{text:?}: write CONTAINER=IMAGE, such as app=registry.example.com/app:v2"
        )),
    }
}

fn parse_ttl(text: &str) -> Result<i32, String> {
    let ttl = prewarm_api::duration::parse(text)?;
    i32::try_from(ttl.as_secs()).map_err(|_| format!("{text:?} is longer than {} seconds", i32::MAX))
}

fn parse_parallelism(text: &str) -> Result<IntOrString, String> {
    let value = match text.parse::<i32>() {
        Ok(number) => IntOrString::Int(number),
        Err(_) => IntOrString::String(text.to_owned()),
    };
    Parallelism::parse(&value)
        .map(|_| value)
        .map_err(|e| format!("{text:?}: {e}"))
}

pub async fn run(args: &WorkloadArgs) -> Result<(), Failure> {
    let client = client().await?;
    let mut workload = match (&args.workload, &args.filename) {
        (Some(reference), _) => {
            let namespace = args
                .namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_owned());
            fetch(&client, reference, &namespace).await?
        }
        (None, Some(file)) => from_manifest(file)?,
        (None, None) => {
            return Err(Failure(
                "error: name a workload (KIND/NAME) or a manifest (-f FILE)".into(),
            ));
        }
    };
    if let Some(namespace) = &args.namespace {
        workload.namespace = Some(namespace.clone());
    }
    let namespace = workload
        .namespace
        .get_or_insert_with(|| client.default_namespace().to_owned())
        .clone();
    let overrides: BTreeMap<String, String> = args.images.iter().cloned().collect();
    let images = workload.images(&overrides).map_err(error)?;
    let target = match args.nodes {
        Nodes::Running => Target::Running(workload.pod_selector().map_err(error)?),
        Nodes::Eligible => {
            let nodes = Api::<Node>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map_err(Failure::api)?
                .items;
            Target::Nodes(workload.eligible_nodes(&nodes).map_err(error)?)
        }
    };
    let options = JobOptions {
        ttl_seconds: args.ttl,
        parallelism: args.parallelism.clone(),
    };
    let job = workload::job(
        &workload,
        images,
        workload.pull_secrets().map_err(error)?,
        target,
        &options,
    );
    if args.dry_run.is_some() {
        print!("{}", render(&job, args.output.unwrap_or(JobOutput::Yaml))?);
        return Ok(());
    }
    let (kind, name) = create(&client, &namespace, &job).await?;
    match args.output {
        Some(output) => print!("{}", render(&created(job, &name), output)?),
        None => println!("{kind}.apps.kruise.io/{name} created"),
    }
    if args.wait {
        let failed = follow(&client, &namespace, &name, true, args.interval, Output::Table).await?;
        if failed {
            return Err(Failure(format!(
                "error: {kind} {name} failed on some nodes (see above)"
            )));
        }
    }
    Ok(())
}

fn error(message: String) -> Failure {
    Failure(format!("error: {message}"))
}

/// The workload as the API server has it, through kubectl's resource names.
async fn fetch(client: &Client, reference: &str, namespace: &str) -> Result<Workload, Failure> {
    let (kind, name) = workload::parse_reference(reference).map_err(error)?;
    let (group, version, kind_name, plural) = match kind {
        "deployment" => ("apps", "v1", "Deployment", "deployments"),
        "statefulset" => ("apps", "v1", "StatefulSet", "statefulsets"),
        "daemonset" => ("apps", "v1", "DaemonSet", "daemonsets"),
        "job" => ("batch", "v1", "Job", "jobs"),
        _ => ("batch", "v1", "CronJob", "cronjobs"),
    };
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind_name), plural);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let object = api.get(&name).await.map_err(Failure::api)?;
    let mut value = serde_json::to_value(&object).map_err(|e| Failure(format!("error: {e}")))?;
    value["kind"] = kind_name.into();
    Workload::from_object(&value).map_err(error)
}

/// The one workload of a manifest (YAML or JSON, several documents allowed).
fn from_manifest(file: &PathBuf) -> Result<Workload, Failure> {
    let text = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| Failure(format!("error: reading standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(file).map_err(|e| Failure(format!("error: reading {}: {e}", file.display())))?
    };
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .map_err(|e| Failure(format!("error: {} is not YAML: {e}", file.display())))?;
    let workloads: Vec<Workload> = documents
        .iter()
        .filter(|d| d.is_object())
        .filter_map(|d| Workload::from_object(d).ok())
        .collect();
    match <[Workload; 1]>::try_from(workloads) {
        Ok([workload]) => Ok(workload),
        Err(found) if found.is_empty() => {
            // Say why the first document that looks like a workload was not one.
            let why = documents
                .iter()
                .find_map(|d| Workload::from_object(d).err())
                .unwrap_or_else(|| "it has no documents".into());
            Err(Failure(format!("error: {} holds no workload: {why}", file.display())))
        }
        Err(found) => {
            let names: Vec<String> = found.iter().map(|w| format!("{}/{}", w.kind, w.name)).collect();
            Err(Failure(format!(
                "error: {} holds {} workloads ({}); pre-warm one at a time",
                file.display(),
                names.len(),
                names.join(", ")
            )))
        }
    }
}

/// Creates the job; its kind (resource) and the name the API server gave it.
async fn create(client: &Client, namespace: &str, job: &Job) -> Result<(&'static str, String), Failure> {
    let made = match job {
        Job::Single(job) => Api::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), job)
            .await
            .map(|made: prewarm_api::v1beta1::ImagePullJob| ("imagepulljob", made.metadata.name)),
        Job::List(job) => Api::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), job)
            .await
            .map(|made: prewarm_api::v1beta1::ImageListPullJob| ("imagelistpulljob", made.metadata.name)),
    };
    let (kind, name) = made.map_err(Failure::api)?;
    Ok((kind, name.unwrap_or_default()))
}

fn created(mut job: Job, name: &str) -> Job {
    let metadata = match &mut job {
        Job::Single(job) => &mut job.metadata,
        Job::List(job) => &mut job.metadata,
    };
    metadata.name = Some(name.to_owned());
    metadata.generate_name = None;
    job
}

fn render(job: &Job, output: JobOutput) -> Result<String, Failure> {
    let value = match job {
        Job::Single(job) => serde_json::to_value(job),
        Job::List(job) => serde_json::to_value(job),
    }
    .map_err(|e| Failure(format!("error: {e}")))?;
    encode(
        &value,
        match output {
            JobOutput::Yaml => Output::Yaml,
            JobOutput::Json => Output::Json,
        },
    )
}
