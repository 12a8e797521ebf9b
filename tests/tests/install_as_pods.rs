//! The shipped install running as Pods: the image built from the checkout by
//! scripts/build-images.sh, pushed to the cluster's registry (containerd
//! knows it as `localhost`, the chart's default repository), the chart
//! installed with the real Helm library as the seed installs it, and every
//! Pod run by the test kubelets through containerd's CRI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Kubectl, repo};
use prewarm_testapi::local_cluster::node_labels;
use prewarm_testapi::pod_cluster::PodCluster;
use serde_json::Value;

/// Builds the image (incrementally after the first time) and pushes it to
/// the registry at `port` as `prewarm:<tag>`.
fn build_and_push(port: u16) {
    // One build at a time: the tests of this file share the cargo target and buildah's store.
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = BUILD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = Command::new(repo("scripts/build-images.sh")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "build-images.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = stdout
        .lines()
        .find_map(|l| l.strip_prefix("image "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_owned();
    let (_, name) = image.split_once('/').unwrap();
    let pushed = Command::new("buildah")
        .args(["push", "--quiet", "--tls-verify=false", &image])
        .arg(format!("docker://127.0.0.1:{port}/{name}"))
        .output()
        .unwrap();
    assert!(
        pushed.status.success(),
        "buildah push: {}",
        String::from_utf8_lossy(&pushed.stderr)
    );
}

/// `helm ARGS --kubeconfig <the cluster's>` through the real Helm library.
fn helm(cluster: &PodCluster, args: &[&str]) -> String {
    let kubeconfig = cluster.kubeconfig.to_str().unwrap();
    let ran = common::manifests::helm(&[args, &["--kubeconfig", kubeconfig]].concat());
    assert!(ran.ok, "helm {args:?}: {}", ran.stderr);
    ran.stdout
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The Pods of `namespace` whose names start with `prefix`.
fn pods<'a>(all: &'a [Value], namespace: &str, prefix: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|p| p["metadata"]["namespace"] == namespace)
        .filter(|p| p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .collect()
}

fn wait_ready(kubectl: &Kubectl, cluster: &PodCluster, expected: &[(&str, &str, usize)]) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let listed: Value = serde_json::from_str(&kubectl.ok(&["get", "pods", "-A", "-o", "json"])).unwrap();
        let all = listed["items"].as_array().cloned().unwrap_or_default();
        let done = expected.iter().all(|(namespace, prefix, count)| {
            let matching = pods(&all, namespace, prefix);
            matching.len() == *count && matching.iter().all(|p| ready(p))
        });
        if done {
            return all;
        }
        if started.elapsed() > Duration::from_secs(180) {
            let mut report = String::new();
            for pod in &all {
                let (namespace, name) = (
                    pod["metadata"]["namespace"].as_str().unwrap_or_default(),
                    pod["metadata"]["name"].as_str().unwrap_or_default(),
                );
                let container = pod["spec"]["containers"][0]["name"].as_str().unwrap_or_default();
                report.push_str(&format!(
                    "\n{namespace}/{name}: {:#}\nlog: {}",
                    pod["status"]["containerStatuses"],
                    cluster.log(namespace, name, container, 0)
                ));
            }
            panic!(
                "not Ready within 180 s: {expected:?}\n{}{report}",
                kubectl.ok(&["get", "pods", "-A", "-o", "wide"])
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_chart_comes_up_ready_as_pods() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = PodCluster::start(dir.path(), 3, "10.216.0.0/16", "prewarm-i0", node_labels).await;
    let kubectl = Kubectl::new(&cluster.api);
    tokio::task::block_in_place(|| {
        build_and_push(cluster.registry_port);
        let chart = repo("charts/prewarm");
        helm(
            &cluster,
            &[
                "install",
                "kruise",
                chart.to_str().unwrap(),
                "--set",
                "featureGates=ImagePullJobGate=true",
            ],
        );
        wait_ready(
            &kubectl,
            &cluster,
            &[
                ("kruise-system", "prewarm-webhook-", 2),
                ("kruise-system", "prewarm-controller-", 2),
                ("prewarm-nodeagent", "prewarm-nodeagent-", 3),
            ],
        );
        seed_job_completes(&kubectl, &cluster, "job-with-always");
        a_killed_webhook_restarts_and_admission_goes_on(&kubectl, &cluster);
        deleting_the_leader_hands_the_lease_over(&kubectl, &cluster);
        a_recreated_agent_resumes(&kubectl, &cluster);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kustomize_base_comes_up_ready_as_pods() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = PodCluster::start(dir.path(), 2, "10.217.0.0/16", "prewarm-i1", node_labels).await;
    let kubectl = Kubectl::new(&cluster.api);
    tokio::task::block_in_place(|| {
        build_and_push(cluster.registry_port);
        kubectl.ok(&[
            "apply",
            "-k",
            repo("manifests/overlays/image-pull-job-gate").to_str().unwrap(),
        ]);
        wait_ready(
            &kubectl,
            &cluster,
            &[
                ("prewarm-system", "prewarm-webhook-", 2),
                ("prewarm-system", "prewarm-controller-", 2),
                ("prewarm-nodeagent", "prewarm-nodeagent-", 2),
            ],
        );
        seed_job_completes(&kubectl, &cluster, "job-with-always");
    });
}

fn get(kubectl: &Kubectl, args: &[&str]) -> Value {
    serde_json::from_str(&kubectl.ok(&[args, &["-o", "json"]].concat())).unwrap()
}

fn wait(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The seed's node-names job, applied as written (the mutating webhook
/// defaults it through the Service), pulls on node-1 and node-2.
fn seed_job_completes(kubectl: &Kubectl, cluster: &PodCluster, name: &str) {
    cluster.push_seed_images();
    let seed = repo("api/tests/fixtures/seed/02-imagepulljob-names.yaml");
    let manifest = std::fs::read_to_string(seed).unwrap().replace("job-with-always", name);
    let file = cluster.dir.join(format!("{name}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    kubectl.ok(&["apply", "-f", file.to_str().unwrap()]);
    wait("the seed job to complete", Duration::from_secs(120), || {
        let job = get(kubectl, &["get", "imagepulljob", name]);
        job["status"]["completionTime"].is_string()
    });
    let job = get(kubectl, &["get", "imagepulljob", name]);
    assert_eq!(job["status"]["succeeded"], 2, "{:#}", job["status"]);
}

fn pod_names(kubectl: &Kubectl, namespace: &str, prefix: &str) -> Vec<String> {
    let listed = get(kubectl, &["get", "pods", "-n", namespace]);
    listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["metadata"]["name"].as_str())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// SIGKILL to one webhook container's process: kubelet restarts it, the
/// Endpoints drop it while it is not Ready, and every admission meanwhile is
/// served by the other replica.
fn a_killed_webhook_restarts_and_admission_goes_on(kubectl: &Kubectl, cluster: &PodCluster) {
    let pids = Command::new("pgrep")
        .args(["-f", "^/prewarm-webhook serve"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&pids.stdout);
    let pid = pids.lines().next().expect("a webhook process");
    let killed = Command::new("kill").args(["-KILL", pid]).status().unwrap();
    assert!(killed.success());
    let restarted = || {
        let listed = get(kubectl, &["get", "pods", "-n", "kruise-system"]);
        listed["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("prewarm-webhook-"))
            })
            .any(|p| p["status"]["containerStatuses"][0]["restartCount"] == 1)
    };
    wait("the killed webhook to restart", Duration::from_secs(30), restarted);
    // Admission right away, while the restarted replica may not be Ready yet:
    // the other one answers (the dry run goes through both webhooks).
    // Without completionPolicy, which the schema requires: only the mutating
    // webhook's default lets it in.
    let file = cluster.dir.join("dry-run.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: dry-run\nspec:\n  image: nginx:1.9.1\n",
    )
    .unwrap();
    for _ in 0..5 {
        let created = kubectl.ok(&["create", "--dry-run=server", "-o", "json", "-f", file.to_str().unwrap()]);
        let job: Value = serde_json::from_str(&created).unwrap();
        assert_eq!(
            job["spec"]["completionPolicy"]["type"], "Always",
            "defaulted by the webhook"
        );
    }
}

fn deleting_the_leader_hands_the_lease_over(kubectl: &Kubectl, cluster: &PodCluster) {
    let holder = || {
        let lease = get(kubectl, &["get", "lease", "-n", "kruise-system", "prewarm-controller"]);
        lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_owned()
    };
    wait("a leader", Duration::from_secs(30), || !holder().is_empty());
    let leader = holder();
    let pods = pod_names(kubectl, "kruise-system", "prewarm-controller-");
    assert!(
        pods.contains(&leader),
        "the lease names a controller Pod: {leader} of {pods:?}"
    );
    kubectl.ok(&["delete", "pod", "-n", "kruise-system", &leader]);
    wait("another controller Pod to lead", Duration::from_secs(60), || {
        let now = holder();
        !now.is_empty() && now != leader
    });
    seed_job_completes(kubectl, cluster, "after-handover");
}

fn a_recreated_agent_resumes(kubectl: &Kubectl, cluster: &PodCluster) {
    let agents = pod_names(kubectl, "prewarm-nodeagent", "prewarm-nodeagent-");
    let on_node_1 = agents
        .iter()
        .find(|name| {
            let pod = get(kubectl, &["get", "pod", "-n", "prewarm-nodeagent", name]);
            pod["spec"]["nodeName"] == "node-1"
        })
        .unwrap()
        .clone();
    kubectl.ok(&["delete", "pod", "-n", "prewarm-nodeagent", &on_node_1]);
    wait_ready(kubectl, cluster, &[("prewarm-nodeagent", "prewarm-nodeagent-", 3)]);
    assert!(!pod_names(kubectl, "prewarm-nodeagent", "prewarm-nodeagent-").contains(&on_node_1));
    seed_job_completes(kubectl, cluster, "after-agent");
}
