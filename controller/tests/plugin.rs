//! `kubectl prewarm progress` as users run it: real kubectl finding the plugin
//! on PATH, against the test API server with the real controller.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use kube::Api;
use kube::api::PostParams;
use prewarm_api::v1beta1::{ImageListPullJob, ImagePullJob};
use serde_json::{Value, json};

/// `kubectl ARGS` with the plugin's directory first on PATH: (exit ok, stdout, stderr).
fn kubectl(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-prewarm")).parent().unwrap();
    let path = std::env::join_paths(
        std::iter::once(plugin_dir.to_owned())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();
    let binary =
        PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/prewarm-test-tools/kubectl-venv/bin/kubectl");
    let output = std::process::Command::new(binary)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("PATH", path)
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_of_jobs_and_list_jobs_in_every_format() {
    let Running {
        cluster,
        controller,
        _agent,
    } = running(Cluster::start().await, &[]).await;

    let (ok, _, stderr) = tokio::task::block_in_place(|| kubectl(&cluster, &["prewarm", "progress", "nope"]));
    assert!(!ok);
    assert!(
        stderr.starts_with("Error from server (NotFound): imagepulljobs.apps.kruise.io \"nope\" not found"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("ErrorResponse") && !stderr.contains("Status {"),
        "no Debug dump: {stderr}"
    );

    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "nginx:slow", "parallelism": 3, "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("slow", spec)).await.unwrap();
    // -w follows the job until it completes, then returns.
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        kubectl(&cluster, &["prewarm", "progress", "slow", "-w", "--interval", "200ms"])
    });
    assert!(ok, "{stderr}");
    let last = stdout.split("\n\n").last().unwrap();
    assert!(
        last.starts_with("slow: 3 nodes, 3 succeeded, 0 failed, 0 active (job has completed)"),
        "{stdout}"
    );
    assert!(last.contains("node-3   Succeeded   100%"), "{last}");

    let (ok, stdout, _) =
        tokio::task::block_in_place(|| kubectl(&cluster, &["prewarm", "progress", "slow", "-o", "json"]));
    assert!(ok);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["kind"], "ImagePullJob");
    assert_eq!(report["nodes"].as_array().unwrap().len(), 3, "{report}");
    assert_eq!(report["nodes"][0]["phase"], "Succeeded");

    let lists: Api<ImageListPullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec =
        json!({"images": ["nginx:1.25", "busybox:1.36"], "parallelism": 3, "completionPolicy": {"type": "Always"}});
    lists
        .create(&PostParams::default(), &list_job("pair", spec))
        .await
        .unwrap();
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        kubectl(
            &cluster,
            &["prewarm", "progress", "pair", "--watch", "--interval", "200ms"],
        )
    });
    assert!(ok, "{stderr}");
    let last = stdout.split("\n\n").last().unwrap();
    assert!(
        last.starts_with("pair: 2 images, 2 completed, 2 succeeded, 0 active"),
        "{stdout}"
    );
    let rows: Vec<&str> = last.lines().skip(1).collect();
    assert!(rows[0].starts_with("IMAGE"), "{last}");
    assert!(
        rows.iter().any(|r| r.starts_with("nginx:1.25") && r.contains("pair-")),
        "one row per child: {last}"
    );
    assert!(rows.iter().any(|r| r.starts_with("busybox:1.36")), "{last}");
    let (ok, stdout, _) =
        tokio::task::block_in_place(|| kubectl(&cluster, &["prewarm", "progress", "pair", "-o", "yaml"]));
    assert!(ok);
    assert!(
        stdout.contains("kind: ImageListPullJob") && stdout.contains("image: busybox:1.36"),
        "{stdout}"
    );
    assert!(controller.terminate().await.success());
}

/// Writes `manifest` to a file in the cluster's directory and applies it.
fn apply(cluster: &Cluster, name: &str, manifest: &str) {
    let file = cluster.kubeconfig.with_file_name(format!("{name}.yaml"));
    std::fs::write(&file, manifest).unwrap();
    let (ok, _, stderr) = kubectl(cluster, &["apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
}

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      nodeSelector: {zone: a}
      imagePullSecrets: [{name: regcred}]
      containers:
      - name: app
        image: nginx:1.25
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_are_pre_warmed_where_their_pods_run_or_could_run() {
    let Running {
        cluster,
        controller,
        _agent,
    } = running(Cluster::start().await, &[]).await;
    tokio::task::block_in_place(|| {
        apply(&cluster, "web", WEB);
        for (pod, node) in [("web-1", "node-1"), ("web-2", "node-2")] {
            let manifest = format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {pod}\n  labels: {{app: web}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: app\n    image: nginx:1.25\n"
            );
            apply(&cluster, pod, &manifest);
        }
    });

    // Where the pods run now, followed node by node until done.
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        kubectl(
            &cluster,
            &[
                "prewarm",
                "workload",
                "deployment/web",
                "--wait",
                "--interval",
                "200ms",
                "--ttl",
                "10m",
            ],
        )
    });
    assert!(ok, "{stdout}\n{stderr}");
    let created = stdout.lines().next().unwrap();
    let name = created
        .strip_prefix("imagepulljob.apps.kruise.io/")
        .and_then(|rest| rest.strip_suffix(" created"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(name.starts_with("prewarm-web-"), "{stdout}");
    let last = stdout.split("\n\n").last().unwrap();
    assert!(
        last.starts_with(&format!("{name}: 2 nodes, 2 succeeded, 0 failed")),
        "{stdout}"
    );
    assert!(
        last.contains("node-1") && last.contains("node-2") && !last.contains("node-3"),
        "{last}"
    );
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let job = jobs.get(name).await.unwrap();
    assert_eq!(job.spec.pull_secrets, Some(vec!["regcred".to_owned()]));
    assert_eq!(
        serde_json::to_value(&job.spec.pod_selector).unwrap(),
        json!({"matchLabels": {"app": "web"}})
    );
    assert_eq!(
        job.spec.completion_policy.unwrap().ttl_seconds_after_finished,
        Some(600)
    );

    // Where they could run (zone a: node-1 and node-3), for the next version; printed, not made.
    let before = jobs.list(&Default::default()).await.unwrap().items.len();
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        kubectl(
            &cluster,
            &[
                "prewarm",
                "workload",
                "deploy/web",
                "--nodes=eligible",
                "--image",
                "app=nginx:1.26",
                "--parallelism",
                "50%",
                "--dry-run=client",
                "-o",
                "yaml",
            ],
        )
    });
    assert!(ok, "{stderr}");
    let printed: Value = serde_saphyr::from_str(&stdout).unwrap();
    assert_eq!(printed["kind"], "ImagePullJob", "{stdout}");
    assert_eq!(printed["spec"]["image"], "nginx:1.26");
    assert_eq!(printed["spec"]["selector"]["names"], json!(["node-1", "node-3"]));
    assert_eq!(printed["spec"]["parallelism"], "50%");
    assert_eq!(
        printed["metadata"]["annotations"]["prewarm.io/workload"],
        "deployment/web"
    );
    assert_eq!(jobs.list(&Default::default()).await.unwrap().items.len(), before);

    // A manifest not yet applied, with several images: a list job, as JSON.
    let manifest = cluster.kubeconfig.with_file_name("db.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  selector:\n    matchLabels: {app: db}\n  template:\n    metadata:\n      labels: {app: db}\n    spec:\n      initContainers:\n      - {name: init, image: 'busybox:1.36'}\n      containers:\n      - {name: db, image: 'postgres:16'}\n      - {name: exporter, image: 'busybox:1.36'}\n",
    )
    .unwrap();
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        kubectl(
            &cluster,
            &[
                "prewarm",
                "workload",
                "-f",
                manifest.to_str().unwrap(),
                "--dry-run=client",
                "-o",
                "json",
            ],
        )
    });
    assert!(ok, "{stderr}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(printed["kind"], "ImageListPullJob");
    assert_eq!(printed["spec"]["images"], json!(["busybox:1.36", "postgres:16"]));
    assert_eq!(printed["spec"]["podSelector"], json!({"matchLabels": {"app": "db"}}));

    // A failing pull: --wait says so and exits non-zero.
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| {
        kubectl(
            &cluster,
            &[
                "prewarm",
                "workload",
                "deployment/web",
                "--image",
                "app=registry.local/missing:1",
                "--wait",
                "--interval",
                "200ms",
            ],
        )
    });
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("failed on some nodes"), "{stderr}");
    assert!(stdout.contains("Failed"), "{stdout}");

    // Mistakes are explained.
    let (ok, _, stderr) =
        tokio::task::block_in_place(|| kubectl(&cluster, &["prewarm", "workload", "deployment/nope"]));
    assert!(
        !ok && stderr.contains("Error from server (NotFound)") && stderr.contains("nope"),
        "{stderr}"
    );
    let (ok, _, stderr) = tokio::task::block_in_place(|| {
        kubectl(
            &cluster,
            &["prewarm", "workload", "deployment/web", "--image", "ap=x:1"],
        )
    });
    assert!(
        !ok && stderr.contains("has no container \"ap\"; its containers: app"),
        "{stderr}"
    );
    assert!(controller.terminate().await.success());
}
