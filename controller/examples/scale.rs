//! The controller at scale: the real `prewarm-controller` binary against the
//! test API server with N simulated Nodes and NodeImages and a simulated node
//! agent that succeeds at once. For each N: one Always job over all nodes
//! with parallelism 100, then 20 such jobs for different images at once.
//! Prints time to completion, controller CPU seconds, peak RSS, the
//! controller's writes against the minimum, and list requests after sync.
//!
//! cargo build --release -p prewarm-controller --bin prewarm-controller --example scale
//! target/release/examples/scale [N ...]          (default: 1000 2000 5000)
//! target/release/examples/scale --baseline=PATH [N ...]
//! target/release/examples/scale --one-job [N ...]   (the first phase only, to profile it)
//! target/release/examples/scale --secrets=S [N ...]  (S Secrets stored besides, as a cluster's Helm releases and tokens)
//!
//! With `--baseline`, each N also runs the controller binary at PATH (an
//! older build), right after this build's run, so both meet the same machine.
//!
//! Each phase is repeated, every time on a fresh API server and controller,
//! until its runs at each N add up to `--min-seconds` (default 30) and to one
//! run at the largest N; the growth is taken between the mean CPU times.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use prewarm_api::v1beta1::{ImagePullJob, NodeImage};
use prewarm_testapi::{Options, TestApi};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

/// The command's test API server and simulated agent, not the controller
/// (a child process with its own allocator), run on mimalloc: with the system
/// allocator they spend half their time in malloc and fall behind.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PARALLELISM: i32 = 100;
const MANY_JOBS: usize = 20;

#[derive(Debug, Default, Clone, Copy)]
struct Sample {
    cpu_seconds: f64,
    peak_rss_mib: f64,
    wakeups: u64,
}

/// CPU time to the nanosecond: the sum of the scheduler's run time of every
/// thread (`/proc/PID/task/*/schedstat`, first field). `/proc/PID/stat` counts
/// in 10 ms ticks, a tenth of a small phase. The controller's threads live as
/// long as it does (tokio workers), so none is lost between two samples.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let nanos: u64 = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// Times the controller's threads went to sleep (voluntary context switches).
fn wakeups(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

fn sample(pid: u32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    Sample {
        cpu_seconds: cpu_seconds(pid),
        peak_rss_mib: peak_kib / 1024.0,
        wakeups: wakeups(pid),
    }
}

/// The sum of the series `name` (`metric{a="x"}`) names, whatever other
/// labels they carry: builds that add a label stay comparable.
fn metric(text: &str, name: &str) -> f64 {
    let prefix = name.strip_suffix('}').unwrap_or(name);
    text.lines()
        .filter(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with([',', '}', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn controller_metrics(port: u16) -> String {
    let output = tokio::process::Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Answers every new (tag, version) with Succeeded, at most 32 writes at once.
fn simulated_agent(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<NodeImage> = Api::all(client);
        let limit = Arc::new(Semaphore::new(32));
        let stream = watcher(api.clone(), watcher::Config::default().any_semantic()).applied_objects();
        futures_util::pin_mut!(stream);
        while let Some(Ok(node_image)) = stream.next().await {
            let statuses = node_image
                .status
                .as_ref()
                .and_then(|s| s.image_statuses.clone())
                .unwrap_or_default();
            let mut patch = serde_json::Map::new();
            for (image, entry) in node_image.spec.images.iter().flatten() {
                let known = statuses.get(image).map(|s| s.tags.as_slice()).unwrap_or_default();
                let missing = entry.tags.iter().any(|t| {
                    !known
                        .iter()
                        .any(|s| s.tag == t.tag && s.version == t.version && s.phase == "Succeeded")
                });
                if missing {
                    let tags: Vec<Value> = entry
                        .tags
                        .iter()
                        .map(|t| {
                            json!({"tag": t.tag, "phase": "Succeeded", "version": t.version.unwrap_or(0),
                                        "completionTime": now(), "progress": 100})
                        })
                        .collect();
                    patch.insert(image.clone(), json!({"tags": tags}));
                }
            }
            if patch.is_empty() {
                continue;
            }
            let name = node_image.metadata.name.clone().unwrap_or_default();
            let permit = limit.clone().acquire_owned().await.unwrap();
            let api = api.clone();
            tokio::spawn(async move {
                let body = json!({"status": {"desired": 0, "imageStatuses": patch}});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                    .await;
                drop(permit);
            });
        }
    })
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn job(name: &str, image: &str) -> ImagePullJob {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
        "spec": {"image": image, "parallelism": PARALLELISM,
                 "completionPolicy": {"type": "Always"}, "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3}}}))
    .unwrap()
}

/// Waits until every named job completed (by GETs: a list would count as one).
async fn wait_completed(jobs: &Api<ImagePullJob>, names: &[String], nodes: usize) -> Duration {
    let started = Instant::now();
    for name in names {
        loop {
            let job = jobs.get(name).await.unwrap();
            if let Some(status) = job.status.filter(|s| s.completion_time.is_some()) {
                assert_eq!(
                    status.succeeded.unwrap_or(0) as usize,
                    nodes,
                    "job {name} did not succeed everywhere"
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(1800),
                "jobs did not complete in 30 minutes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    started.elapsed()
}

#[derive(Debug)]
struct Phase {
    jobs: usize,
    seconds: f64,
    cpu: f64,
    rss: f64,
    node_image_writes: f64,
    status_writes: f64,
    other_writes: f64,
    lists_after_sync: u64,
    job_passes: f64,
    node_image_reconciles: f64,
    agent_answers: u64,
    wakeups: u64,
}

async fn run(nodes: usize, secrets: usize, controller_bin: &Path, phases_to_run: &[(&str, usize)]) -> Vec<Phase> {
    let api = TestApi::start(Options {
        history: 50_000,
        ..Options::default()
    })
    .await
    .unwrap();
    api.load_manifests(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds"))
        .unwrap();
    let node_type = api.store.resource_type("", "v1", "nodes").unwrap();
    let node_image_type = api
        .store
        .resource_type("apps.kruise.io", "v1beta1", "nodeimages")
        .unwrap();
    let namespace_type = api.store.resource_type("", "v1", "namespaces").unwrap();
    for ns in ["prewarm-system", "kruise-daemon-config"] {
        api.store
            .create(
                &namespace_type,
                "",
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                false,
            )
            .unwrap();
    }
    for i in 0..nodes {
        let name = format!("node-{i:05}");
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"zone": format!("z{}", i % 3)}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        api.store.create(&node_type, "", node, false).unwrap();
        let node_image = json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
            "metadata": {"name": name, "labels": {"zone": format!("z{}", i % 3)}}, "spec": {}});
        api.store.create(&node_image_type, "", node_image, false).unwrap();
    }
    let secret_type = api.store.resource_type("", "v1", "secrets").unwrap();
    for i in 0..secrets {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
            "metadata": {"name": format!("sh.helm.release.v1.app-{i:05}.v1"), "namespace": "prewarm-system",
                "labels": {"owner": "helm", "name": format!("app-{i:05}")}},
            "data": {"release": "SDRzSUFBQUFBQUFDLzZ5VVFXdlRRQkNGLzBxWXN3MEp0VFhOVVRB"}});
        api.store.create(&secret_type, "prewarm-system", secret, false).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    let client = Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let _agent = simulated_agent(client.clone());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = match &*CONTROLLER_CPUS {
        Some(cpus) => {
            let mut taskset = tokio::process::Command::new("taskset");
            taskset.args(["-c", cpus]).arg(controller_bin);
            taskset
        }
        None => tokio::process::Command::new(controller_bin),
    };
    let mut controller = command
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", std::env::var("SCALE_LOG").unwrap_or_else(|_| "warn".into()))
        .args([
            "--feature-gates=ImagePullJobGate=true",
            "--leader-elect=false",
            &format!("--admin-listen=127.0.0.1:{port}"),
        ])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = controller.id().unwrap();
    loop {
        let output = tokio::process::Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{port}/readyz")])
            .output()
            .await
            .unwrap();
        if output.stdout == b"ok" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The first pass over every NodeImage after sync writes nothing; let it settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let jobs: Api<ImagePullJob> = Api::namespaced(client.clone(), "default");
    let mut phases = Vec::new();
    for &(phase, count) in phases_to_run {
        api.store.reset_counts();
        let before_metrics = controller_metrics(port).await;
        let before = sample(pid);
        let names: Vec<String> = (0..count).map(|i| format!("{phase}-{i}")).collect();
        for (i, name) in names.iter().enumerate() {
            jobs.create(
                &PostParams::default(),
                &job(name, &format!("registry.local/{phase}{i}:1")),
            )
            .await
            .unwrap();
        }
        let elapsed = wait_completed(&jobs, &names, nodes).await;
        // Let the last status writes land before reading the counters.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = sample(pid);
        let after_metrics = controller_metrics(port).await;
        let delta = |name: &str| metric(&after_metrics, name) - metric(&before_metrics, name);
        let counts: BTreeMap<String, u64> = api.store.counts();
        let lists_after_sync = counts
            .iter()
            .filter(|(k, _)| k.starts_with("list apps.kruise.io/"))
            .map(|(_, v)| *v)
            .sum();
        let node_image_writes = delta("prewarm_controller_api_writes_total{verb=\"patch\",resource=\"nodeimages\"}");
        let status_writes =
            delta("prewarm_controller_api_writes_total{verb=\"patch\",resource=\"imagepulljobs/status\"}");
        let all_writes: f64 = after_metrics
            .lines()
            .filter(|l| l.starts_with("prewarm_controller_api_writes_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
            - before_metrics
                .lines()
                .filter(|l| l.starts_with("prewarm_controller_api_writes_total"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        let patches = |plural: &str| {
            counts
                .get(&format!("patch apps.kruise.io/{plural}"))
                .copied()
                .unwrap_or(0)
        };
        let reconciles = |controller: &str| {
            delta(&format!(
                "prewarm_controller_reconciles_total{{controller=\"{controller}\"}}"
            ))
        };
        phases.push(Phase {
            jobs: count,
            seconds: elapsed.as_secs_f64(),
            cpu: after.cpu_seconds - before.cpu_seconds,
            rss: after.peak_rss_mib,
            node_image_writes,
            status_writes,
            other_writes: all_writes - node_image_writes - status_writes,
            lists_after_sync,
            job_passes: reconciles("imagepulljob"),
            node_image_reconciles: reconciles("nodeimage"),
            agent_answers: patches("nodeimages").saturating_sub(node_image_writes as u64),
            wakeups: after.wakeups - before.wakeups,
        });
    }
    let _ = controller.kill().await;
    phases
}

/// The controller's CPUs (taskset's list), when there are two or more: on a
/// cluster the API server is another machine, so here the command (API
/// server and simulated agent) keeps to CPU 0 and the controller to the rest,
/// and neither's work lands on the other's CPU and caches.
static CONTROLLER_CPUS: std::sync::LazyLock<Option<String>> = std::sync::LazyLock::new(|| {
    let count = std::thread::available_parallelism().map_or(1, usize::from);
    (count >= 2).then(|| format!("1-{}", count - 1))
});

/// Pins every thread of this process to CPU 0 (taskset, from util-linux).
fn pin_this_command() {
    if CONTROLLER_CPUS.is_none() {
        return;
    }
    let status = std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("taskset (util-linux)");
    assert!(status.success(), "taskset failed");
}

/// One phase's repetitions at one N with one build.
#[derive(Debug, Default)]
struct Measured {
    runs: Vec<Phase>,
}

impl Measured {
    fn seconds(&self) -> f64 {
        self.runs.iter().map(|p| p.seconds).sum()
    }

    fn mean_cpu(&self) -> f64 {
        self.runs.iter().map(|p| p.cpu).sum::<f64>() / self.runs.len().max(1) as f64
    }

    fn cpu_range(&self) -> (f64, f64) {
        let cpu = self.runs.iter().map(|p| p.cpu);
        (cpu.clone().fold(f64::INFINITY, f64::min), cpu.fold(0.0, f64::max))
    }
}

fn print_phase(build: &str, nodes: usize, phase: &Phase) {
    let minimum = (nodes * phase.jobs) as f64;
    println!(
        "{:>5} {:>6} {:>5} {:>9.1} {:>8.3} {:>9.1} {:>12} {:>10} {:>9.3} {:>10} {:>12}   (+{} other writes; {} job passes, {} NodeImage reconciles, {} agent answers, {} wake-ups)",
        build,
        nodes,
        phase.jobs,
        phase.seconds,
        phase.cpu,
        phase.rss,
        phase.node_image_writes,
        minimum,
        phase.node_image_writes / minimum,
        phase.status_writes,
        phase.lists_after_sync,
        phase.other_writes,
        phase.job_passes,
        phase.node_image_reconciles,
        phase.agent_answers,
        phase.wakeups,
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    pin_this_command();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![1000, 2000, 5000];
    }
    sizes.sort_unstable();
    sizes.dedup();
    let flag = |name: &str| args.iter().find_map(|a| a.strip_prefix(name)?.strip_prefix('='));
    let baseline = flag("--baseline").map(std::path::PathBuf::from);
    let secrets: usize = flag("--secrets").map_or(0, |s| s.parse().expect("--secrets=<count>"));
    let min_seconds: f64 = flag("--min-seconds").map_or(30.0, |s| s.parse().expect("--min-seconds=<seconds>"));
    let controller_bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("prewarm-controller"))
        .filter(|p| p.exists())
        .expect("build the controller first: cargo build --release -p prewarm-controller --bin prewarm-controller");
    // `--one-job`: only the first phase, to profile it on its own.
    let phases_to_run: &[(&str, usize)] = if args.iter().any(|a| a == "--one-job") {
        &[("one", 1)]
    } else {
        &[("one", 1), ("many", MANY_JOBS)]
    };
    let mut binaries = vec![("this", controller_bin)];
    if let Some(baseline) = baseline {
        assert!(baseline.exists(), "--baseline: {} does not exist", baseline.display());
        binaries.push(("base", baseline));
    }
    match &*CONTROLLER_CPUS {
        Some(cpus) => println!("this command on CPU 0, the controller on CPUs {cpus}"),
        None => println!("one CPU: this command and the controller share it"),
    }
    println!(
        "each phase is repeated, each time on a fresh API server and controller, until its runs at each N add up to \
         {min_seconds} s and to one run at the largest N; {secrets} other Secrets stored"
    );
    println!(
        "{:>5} {:>6} {:>5} {:>9} {:>8} {:>9} {:>12} {:>10} {:>9} {:>10} {:>12}",
        "build",
        "nodes",
        "jobs",
        "seconds",
        "cpu_s",
        "rss_MiB",
        "ni_writes",
        "minimum",
        "ratio",
        "status_w",
        "lists_after"
    );
    // This machine's speed drifts by tens of percent over seconds (see
    // BENCHMARKS.md): a short phase measured once is mostly that drift. So
    // each N's phase is run until it has covered as much time as the largest
    // N's phase (and `--min-seconds`), in rounds that visit every N (largest
    // first) and every build, so that all see the same stretch of the machine.
    let mut measured: BTreeMap<(&str, usize, usize), Measured> = BTreeMap::new();
    let largest = sizes.last().copied().unwrap_or(0);
    loop {
        let mut ran = false;
        for &nodes in sizes.iter().rev() {
            for (build, binary) in &binaries {
                let wanted = |phase: usize| {
                    let have = measured.get(&(*build, nodes, phase));
                    let largest_took = measured.get(&(*build, largest, phase)).map_or(0.0, Measured::seconds);
                    have.is_none_or(|m| m.seconds() < min_seconds.max(largest_took))
                };
                // Phases run in order in one world; run up to the last one still wanted.
                let Some(last) = (0..phases_to_run.len()).rev().find(|&i| wanted(i)) else {
                    continue;
                };
                ran = true;
                let phases = run(nodes, secrets, binary, &phases_to_run[..=last]).await;
                for (i, phase) in phases.into_iter().enumerate() {
                    print_phase(build, nodes, &phase);
                    measured.entry((*build, nodes, i)).or_default().runs.push(phase);
                }
            }
        }
        if !ran {
            break;
        }
    }
    println!("means over the repetitions:");
    println!(
        "{:>5} {:>6} {:>5} {:>5} {:>9} {:>10} {:>16} {:>12}",
        "build", "nodes", "jobs", "runs", "seconds", "mean_cpu_s", "cpu_s_min-max", "peak_rss_MiB"
    );
    for ((build, nodes, phase), m) in &measured {
        let (low, high) = m.cpu_range();
        let rss = m.runs.iter().map(|p| p.rss).fold(0.0, f64::max);
        println!(
            "{build:>5} {nodes:>6} {:>5} {:>5} {:>9.1} {:>10.3} {:>16} {rss:>12.1}",
            phases_to_run[*phase].1,
            m.runs.len(),
            m.seconds(),
            m.mean_cpu(),
            format!("{low:.3}-{high:.3}"),
        );
    }
    let smallest = sizes.first().copied().unwrap_or(0);
    if smallest != largest {
        for (build, _) in &binaries {
            let growth: Vec<String> = phases_to_run
                .iter()
                .enumerate()
                .filter_map(|(i, &(_, jobs))| {
                    let small = measured.get(&(*build, smallest, i))?.mean_cpu();
                    let large = measured.get(&(*build, largest, i))?.mean_cpu();
                    Some(format!("{jobs} job(s) {:.2}x", large / small))
                })
                .collect();
            println!(
                "{build}: CPU growth {smallest} -> {largest} nodes (means): {} (targets for 1000 -> 5000: one job <= 5.5, {MANY_JOBS} jobs <= 6)",
                growth.join(", ")
            );
        }
    }
    println!("targets: ni_writes/minimum <= 1.2 (with status writes bounded), peak RSS < 150 MiB, lists_after = 0");
}
