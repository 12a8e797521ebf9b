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
