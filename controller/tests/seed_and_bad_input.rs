//! The seed's examples through real kubectl, and input the controller must
//! survive: a full NodeImage, an invalid image.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use prewarm_api::v1beta1::{ImagePullJob, NodeImage};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_examples_through_kubectl_and_the_webhook() {
    let running = running(Cluster::start().await, &[]).await;
    let cluster = &running.cluster;
    let node_images: Api<NodeImage> = Api::all(cluster.client.clone());
    cluster.set_ready("node-1", false).await;

    // The seed's first example, a v1alpha1 job, applied as written.
    let seed = common::repo("api/tests/fixtures/seed/02-imagepulljob-names.yaml");
    let (ok, out) = cluster.kubectl(&["apply", "-f", seed.to_str().unwrap()]);
    assert!(ok, "{out}");
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let waiting = wait_status(
        &jobs,
        "job-with-always",
        "node-2 done, node-1 waiting",
        10 * SECONDS,
        |s| s["succeeded"] == 1,
    )
    .await;
    assert_eq!(waiting["desired"], 2);
    let (_, finalizers) = cluster.kubectl(&[
        "get",
        "imagepulljobs.v1alpha1.apps.kruise.io",
        "job-with-always",
        "-o",
        "jsonpath={.metadata.finalizers}",
    ]);
    assert!(
        finalizers.contains("apps.kruise.io/deletion-protection"),
        "{finalizers}"
    );
    cluster.set_ready("node-1", true).await;
    wait_status(&jobs, "job-with-always", "completion", 10 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    let (ok, table) = cluster.kubectl(&["get", "imagepulljobs.v1alpha1.apps.kruise.io", "job-with-always"]);
    assert!(ok && table.contains("job has completed"), "{table}");

    // The seed's low-level use: a tag patched in by hand, without owner; the
    // webhook fills createdAt, the agent pulls it, and it is kept.
    let patch = std::fs::read_to_string(common::repo("api/tests/fixtures/seed/16-nodeimage-merge-patch.json")).unwrap();
    let (ok, out) = cluster.kubectl(&["patch", "nodeimage", "node-3", "--type=merge", "-p", patch.trim()]);
    assert!(ok, "{out}");
    eventually("the agent pulls the hand-made tag", 10 * SECONDS, || async {
        let status = node_images.get("node-3").await.unwrap().status?;
        let phase = status.image_statuses?.remove("ubuntu")?.tags.first()?.phase.clone();
        (phase == "Succeeded").then_some(())
    })
    .await;
    let short = patch.replace("300", "2");
    let (ok, out) = cluster.kubectl(&["patch", "nodeimage", "node-2", "--type=merge", "-p", short.trim()]);
    assert!(ok, "{out}");
    eventually("the short-lived one removed after its TTL", 10 * SECONDS, || async {
        tag_owners(cluster, "node-2", "ubuntu", "latest")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        tag_owners(cluster, "node-3", "ubuntu", "latest").await.is_some(),
        "a tag without owner is not removed for that"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_image_fails_its_node_only() {
    let running = running(Cluster::start().await, &[]).await;
    let cluster = &running.cluster;
    let node_images: Api<NodeImage> = Api::all(cluster.client.clone());
    let images: serde_json::Map<String, Value> = (0..256)
        .map(|i| {
            (
                format!("registry.local/filler{i}"),
                json!({"tags": [{"tag": "1", "pullPolicy": {"ttlSecondsAfterFinished": 3600}}]}),
            )
        })
        .collect();
    node_images
        .patch(
            "node-3",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"images": images}})),
        )
        .await
        .unwrap();
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "nginx:full", "parallelism": 3, "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("full", spec)).await.unwrap();
    let done = wait_status(&jobs, "full", "completion", 15 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    assert_eq!(
        (done["succeeded"].clone(), done["failedNodes"].clone()),
        (json!(2), json!(["node-3"])),
        "{done}"
    );
    let reasons = event_reasons(cluster, "full").await;
    assert!(reasons.contains("NodeImageFull"), "{reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_image_is_reported_and_other_jobs_go_on() {
    // Without the webhook, which would refuse the image.
    let running = running(Cluster::start_without_webhook().await, &[]).await;
    let cluster = &running.cluster;
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let bad = json!({"image": "Redis:6.0:latest", "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("bad", bad)).await.unwrap();
    let good = json!({"image": "redis:6.0", "parallelism": 3, "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("good", good)).await.unwrap();
    let reported = wait_status(&jobs, "bad", "the invalid image reported", 10 * SECONDS, |s| {
        s["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("invalid image reference \"Redis:6.0:latest\""))
    })
    .await;
    assert!(reported["completionTime"].is_null());
    wait_status(&jobs, "good", "the other job completes", 10 * SECONDS, |s| {
        s["succeeded"] == 3
    })
    .await;
    let reasons = event_reasons(cluster, "bad").await;
    assert!(reasons.contains("InvalidImage"), "{reasons:?}");
}
