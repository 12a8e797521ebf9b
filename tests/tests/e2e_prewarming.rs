//! End to end on a local cluster: pre-warming on a schedule (an
//! AdvancedCronJob written as for OpenKruise 1.9, its runs seen pulling onto
//! the nodes' runtimes) and before a rollout (`kubectl prewarm workload`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::e2e::{E2e, completed, up, wait_until};
use serde_json::Value;

/// The ImageListPullJobs `cron` created, oldest schedule first.
fn runs(e2e: &E2e, cron: &str) -> Vec<Value> {
    let lists = e2e.get(&["imagelistpulljobs"]);
    let mut runs: Vec<Value> = lists["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["metadata"]["ownerReferences"][0]["name"] == cron)
        .cloned()
        .collect();
    runs.sort_by_key(|l| l["metadata"]["name"].as_str().unwrap().to_owned());
    runs
}

/// Waits for `cron`'s run number `index` (from 0) to be made and to complete; its name.
fn run_completes(e2e: &E2e, cron: &str, index: usize, within: Duration) -> String {
    wait_until(&format!("run {index} of {cron}"), within, || {
        runs(e2e, cron).len() > index
    });
    let name = runs(e2e, cron)[index]["metadata"]["name"].as_str().unwrap().to_owned();
    e2e.wait_job("imagelistpulljob", &name, within, completed);
    name
}

/// Removes `image` from `node`'s containerd, as image garbage collection would.
fn remove_image(e2e: &E2e, node: &str, image: &str) {
    let node = e2e.cluster.pods.nodes.iter().find(|n| n.name == node).unwrap();
    let socket = node.root.join("run/containerd/containerd.sock");
    let out = Command::new("ctr")
        .args([
            "--address",
            socket.to_str().unwrap(),
            "--namespace",
            "k8s.io",
            "images",
            "rm",
            image,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctr images rm {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cron_job_pre_warms_on_every_run() {
    let e2e = up(true).await;
    let redis = e2e.registries().image("redis:7");
    let cron = format!(
        "apiVersion: apps.kruise.io/v1alpha1
kind: AdvancedCronJob
metadata:
  name: warm-redis
spec:
  schedule: \"* * * * *\"
  template:
    imageListPullJobTemplate:
      metadata:
        labels:
          app: image-prefetch
      spec:
        images:
        - {redis}
        selector:
          names: [node-1, node-2]
        parallelism: 2
        completionPolicy:
          type: Always
"
    );

    // What prewarm does not run is refused with the reason, and so is a zone that does not exist.
    let batch = cron.replace(
        "    imageListPullJobTemplate:",
        "    jobTemplate: {spec: {}}\n    imageListPullJobTemplate:",
    );
    let refused = tokio::task::block_in_place(|| e2e.apply(&batch));
    assert!(
        !refused.ok && refused.stderr.contains("prewarm runs image pre-warming only"),
        "{}",
        refused.stderr
    );
    let zoned = cron.replace("  schedule:", "  timeZone: Mars/Olympus\n  schedule:");
    let refused = tokio::task::block_in_place(|| e2e.apply(&zoned));
    assert!(
        !refused.ok && refused.stderr.contains("unknown time zone \"Mars/Olympus\""),
        "{}",
        refused.stderr
    );

    // The first run pulls onto the two nodes.
    let applied = tokio::task::block_in_place(|| e2e.apply(&cron));
    assert!(applied.ok, "{}", applied.stderr);
    let defaulted = tokio::task::block_in_place(|| e2e.get(&["acj", "warm-redis"]));
    assert_eq!(defaulted["spec"]["concurrencyPolicy"], "Replace", "{defaulted:#}");
    let within = Duration::from_secs(150);
    let first = tokio::task::block_in_place(|| run_completes(&e2e, "warm-redis", 0, within));
    assert_eq!(e2e.nodes_with(&redis).await, ["node-1", "node-2"]);

    // Image GC takes it away; the next minute's run pulls it again.
    for node in ["node-1", "node-2"] {
        remove_image(&e2e, node, &redis);
    }
    assert_eq!(e2e.nodes_with(&redis).await, Vec::<String>::new());
    let second = tokio::task::block_in_place(|| run_completes(&e2e, "warm-redis", 1, within));
    assert_eq!(e2e.nodes_with(&redis).await, ["node-1", "node-2"]);

    // Named, annotated and owned as OpenKruise does: <cron>-<schedule time in Unix seconds>.
    let runs = tokio::task::block_in_place(|| runs(&e2e, "warm-redis"));
    for (run, name) in runs.iter().zip([&first, &second]) {
        let scheduled: k8s_openapi::jiff::Timestamp = run["metadata"]["annotations"]["apps.kruise.io/scheduled-at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(scheduled.as_second() % 60, 0, "{run:#}");
        assert_eq!(name.as_str(), format!("warm-redis-{}", scheduled.as_second()));
        assert_eq!(run["metadata"]["labels"]["app"], "image-prefetch");
        assert_eq!(run["metadata"]["ownerReferences"][0]["kind"], "AdvancedCronJob");
        assert_eq!(run["metadata"]["ownerReferences"][0]["controller"], true);
    }
    let status = tokio::task::block_in_place(|| e2e.get(&["acj", "warm-redis"]))["status"].clone();
    assert_eq!(status["type"], "ImageListPullJob", "{status:#}");
    assert_eq!(
        status["lastScheduleTime"], runs[1]["metadata"]["annotations"]["apps.kruise.io/scheduled-at"],
        "{status:#}"
    );
    let table = tokio::task::block_in_place(|| e2e.kubectl.ok(&["get", "advancedcronjobs.v1alpha1.apps.kruise.io"]));
    assert!(
        table.contains("SCHEDULE") && table.contains("LASTSCHEDULETIME") && table.contains("ImageListPullJob"),
        "{table}"
    );
    let events = tokio::task::block_in_place(|| e2e.events_of("warm-redis"));
    assert!(events.contains(&format!("Created job {first}")), "{events}");
}

/// The nodes the test scheduler bound `app`'s Pods to, once it bound them all.
fn pod_nodes(e2e: &E2e, app: &str, replicas: usize) -> Vec<String> {
    let mut nodes = Vec::new();
    wait_until(&format!("{replicas} {app} pods bound"), Duration::from_secs(60), || {
        let pods = e2e.get(&["pods", "-l", &format!("app={app}")]);
        nodes = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
            .collect();
        nodes.len() == replicas
    });
    nodes.sort();
    nodes.dedup();
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workloads_next_version_is_pre_warmed_before_its_rollout() {
    let e2e = up(true).await;
    let current = e2e.registries().image("busybox:1.36");
    let next = e2e.registries().image("nginx:1.25");
    let later = e2e.registries().image("redis:7");
    let web = format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      nodeSelector:
        topology.kubernetes.io/zone: a
      containers:
      - name: app
        image: {current}
        command: [sleep, infinity]
"
    );
    let running = tokio::task::block_in_place(|| {
        assert!(e2e.apply(&web).ok);
        pod_nodes(&e2e, "web", 2)
    });

    // The next version, where the pods run now: the nodes' runtimes have it when the command returns.
    let image = format!("app={next}");
    let ran = tokio::task::block_in_place(|| {
        e2e.plugin(&[
            "workload",
            "deployment/web",
            "--image",
            &image,
            "--wait",
            "--interval",
            "500ms",
        ])
    });
    assert!(ran.ok, "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.starts_with("imagepulljob.apps.kruise.io/prewarm-web-"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("Succeeded"), "{}", ran.stdout);
    assert_eq!(e2e.nodes_with(&next).await, running);

    // Every node the pods could go to (zone a: node-1 and node-3), but not one tainted against them.
    let tainted = tokio::task::block_in_place(|| {
        e2e.kubectl
            .run(&["taint", "nodes", "node-3", "dedicated=infra:NoSchedule"])
    });
    assert!(tainted.ok, "{}", tainted.stderr);
    let image = format!("app={later}");
    let planned = tokio::task::block_in_place(|| {
        e2e.plugin(&[
            "workload",
            "deploy/web",
            "--nodes=eligible",
            "--image",
            &image,
            "--dry-run=client",
            "-o",
            "yaml",
        ])
    });
    assert!(planned.ok, "{}", planned.stderr);
    let planned: Value = serde_saphyr::from_str(&planned.stdout).unwrap();
    assert_eq!(
        planned["spec"]["selector"]["names"],
        serde_json::json!(["node-1"]),
        "{planned:#}"
    );
    let ran = tokio::task::block_in_place(|| {
        e2e.plugin(&[
            "workload",
            "deploy/web",
            "--nodes=eligible",
            "--image",
            &image,
            "--wait",
            "--ttl",
            "1h",
        ])
    });
    assert!(ran.ok, "{}\n{}", ran.stdout, ran.stderr);
    assert_eq!(e2e.nodes_with(&later).await, ["node-1"]);
}
