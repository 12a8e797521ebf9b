//! End to end on a local cluster: pre-warming on a schedule, with an
//! AdvancedCronJob written as for OpenKruise 1.9, its runs seen pulling onto
//! the nodes' runtimes.

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
    let first = tokio::task::block_in_place(|| {
        wait_until("the first run", within, || !runs(&e2e, "warm-redis").is_empty());
        let first = runs(&e2e, "warm-redis")[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        e2e.wait_job("imagelistpulljob", &first, within, completed);
        first
    });
    assert_eq!(e2e.nodes_with(&redis).await, ["node-1", "node-2"]);

    // Image GC takes it away; the next minute's run pulls it again.
    for node in ["node-1", "node-2"] {
        remove_image(&e2e, node, &redis);
    }
    assert_eq!(e2e.nodes_with(&redis).await, Vec::<String>::new());
    let second = tokio::task::block_in_place(|| {
        wait_until("a second run", within, || runs(&e2e, "warm-redis").len() >= 2);
        let second = runs(&e2e, "warm-redis")[1]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        e2e.wait_job("imagelistpulljob", &second, within, completed);
        second
    });
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
