//! `prewarm-controller` (the real binary) against the test API server, with
//! the real webhook in its admission chain and a simulated node agent:
//! OpenKruise's ImagePullJob end-to-end cases (reference §6.2), adapted, and
//! the NodeImage lifecycle.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::*;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use prewarm_api::v1beta1::{ImagePullJob, NodeImage};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_images_follow_nodes() {
    let cluster = Cluster::start().await;
    three_nodes(&cluster).await;
    cluster.add_node("node-4", json!({"zone": "c"}), false).await;
    cluster.add_node("vk", json!({"type": "virtual-kubelet"}), true).await;
    let fake: NodeImage = serde_json::from_value(json!({"metadata": {"name": "fake-nodeimage",
        "labels": {"apps.kruise.io/fake-nodeimage": "true"}}, "spec": {}}))
    .unwrap();
    let node_images: Api<NodeImage> = Api::all(cluster.client.clone());
    node_images.create(&PostParams::default(), &fake).await.unwrap();
    let controller = cluster.controller(&[]);
    let names = || async {
        let list = node_images.list(&ListParams::default()).await.unwrap();
        list.items.iter().map(|n| n.name_any()).collect::<BTreeSet<_>>()
    };
    let expected: BTreeSet<String> = ["fake-nodeimage", "node-1", "node-2", "node-3"]
        .map(String::from)
        .into();
    eventually("a NodeImage per Ready node", 10 * SECONDS, || async {
        (names().await == expected).then_some(())
    })
    .await;
    let labels = node_images.get("node-2").await.unwrap().metadata.labels.unwrap();
    assert_eq!(labels["zone"], "b", "labels copied from the Node at creation");

    cluster.set_ready("node-4", true).await;
    eventually("node-4's NodeImage once Ready", 10 * SECONDS, || async {
        node_images.get_opt("node-4").await.unwrap().map(|_| ())
    })
    .await;
    let nodes: Api<Node> = Api::all(cluster.client.clone());
    nodes
        .patch(
            "node-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"zone": "z"}}})),
        )
        .await
        .unwrap();
    eventually("labels follow the Node", 10 * SECONDS, || async {
        let labels = node_images
            .get("node-1")
            .await
            .unwrap()
            .metadata
            .labels
            .unwrap_or_default();
        (labels.get("zone").map(String::as_str) == Some("z")).then_some(())
    })
    .await;
    nodes.delete("node-3", &DeleteParams::default()).await.unwrap();
    eventually("node-3's NodeImage deleted with its Node", 10 * SECONDS, || async {
        node_images.get_opt("node-3").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(names().await.contains("fake-nodeimage"), "a fake NodeImage is kept");
    let metrics = controller.metrics().await;
    assert!(
        metrics.contains(
            "prewarm_controller_api_writes_total{verb=\"create\",resource=\"nodeimages\",result=\"success\"}"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("prewarm_controller_leader 1"), "{metrics}");
    assert_eq!(controller.get("/readyz").await, "ok", "ready once the caches synced");
    assert!(controller.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_job_completes_reports_and_is_deleted_after_its_ttl_with_its_tags() {
    let Running {
        cluster,
        controller,
        _agent,
    } = running(Cluster::start().await, &[]).await;
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "nginx:1.20", "parallelism": 2,
        "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 3},
        "pullPolicy": {"timeoutSeconds": 50, "backoffLimit": 2}});
    jobs.create(&PostParams::default(), &job("test-imagepulljob", spec))
        .await
        .unwrap();
    wait_status(&jobs, "test-imagepulljob", "desired 3", 3 * SECONDS, |s| {
        s["desired"] == 3
    })
    .await;
    let done = wait_status(&jobs, "test-imagepulljob", "completion", 20 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    assert_eq!(done["succeeded"], 3, "{done}");
    assert_eq!(done["message"], "job has completed");
    let owners = tag_owners(&cluster, "node-1", "nginx", "1.20").await;
    assert_eq!(
        owners,
        Some(vec!["test-imagepulljob".to_owned()]),
        "the tag stays after completion"
    );
    eventually("the finalizer removed after completion", 5 * SECONDS, || async {
        let job = jobs.get_opt("test-imagepulljob").await.unwrap()?;
        job.finalizers().is_empty().then_some(())
    })
    .await;
    let reasons = event_reasons(&cluster, "test-imagepulljob").await;
    assert!(
        reasons.contains("Started") && reasons.contains("Completed"),
        "{reasons:?}"
    );

    eventually("the job deleted after its TTL", 10 * SECONDS, || async {
        jobs.get_opt("test-imagepulljob").await.unwrap().is_none().then_some(())
    })
    .await;
    for node in ["node-1", "node-2", "node-3"] {
        eventually("the tag removed with its owner", 5 * SECONDS, || async {
            tag_owners(&cluster, node, "nginx", "1.20")
                .await
                .is_none()
                .then_some(())
        })
        .await;
    }
    assert!(controller.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallelism_failures_and_a_second_job_for_the_same_image() {
    // Jobs without pull secrets never need the agent namespace.
    let running = running(Cluster::start().await, &["--agent-namespace=not-created"]).await;
    let cluster = &running.cluster;
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");

    let failing = json!({"image": "registry.local/missing:1", "parallelism": "50%",
        "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("failing", failing))
        .await
        .unwrap();
    let done = wait_status(&jobs, "failing", "failing job completion", 20 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    assert_eq!(done["failed"], 3, "{done}");
    assert_eq!(done["failedNodes"], json!(["node-1", "node-2", "node-3"]));
    let reasons = event_reasons(cluster, "failing").await;
    assert!(reasons.contains("PullImageFailed"), "{reasons:?}");

    eventually(
        "the finalizer of a completed job goes without the agent namespace",
        5 * SECONDS,
        || async { jobs.get("failing").await.unwrap().finalizers().is_empty().then_some(()) },
    )
    .await;

    let by_label = json!({"image": "busybox", "selector": {"matchLabels": {"zone": "a"}},
        "completionPolicy": {"type": "Never"}});
    jobs.create(&PostParams::default(), &job("job1", by_label.clone()))
        .await
        .unwrap();
    wait_status(&jobs, "job1", "job1 on the two zone-a nodes", 20 * SECONDS, |s| {
        s["succeeded"] == 2
    })
    .await;
    let job1 = status(&jobs, "job1").await.unwrap();
    assert_eq!(job1["desired"], 2);
    assert!(job1["completionTime"].is_null(), "a Never job does not complete");
    let node_images: Api<NodeImage> = Api::all(cluster.client.clone());
    let version = |n: &NodeImage| n.spec.images.as_ref().unwrap()["busybox"].tags[0].version;
    let before = version(&node_images.get("node-1").await.unwrap());

    jobs.create(&PostParams::default(), &job("job2", by_label))
        .await
        .unwrap();
    wait_status(&jobs, "job2", "job2 joins the same tags", 20 * SECONDS, |s| {
        s["succeeded"] == 2
    })
    .await;
    let owners = tag_owners(cluster, "node-1", "busybox", "latest").await.unwrap();
    assert_eq!(owners, vec!["job1".to_owned(), "job2".to_owned()]);
    let after = version(&node_images.get("node-1").await.unwrap());
    assert_eq!(after, before.map(|v| v + 1), "joining bumps the version");
    assert_eq!(
        tag_owners(cluster, "node-2", "busybox", "latest").await,
        None,
        "node-2 is zone b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_selector_counts_only_pods_of_the_jobs_namespace() {
    let running = running(Cluster::start().await, &[]).await;
    let cluster = &running.cluster;
    for (namespace, name, node) in [("default", "web-1", "node-2"), ("kube-system", "web-2", "node-3")] {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
            "status": {"phase": "Running"}}))
        .unwrap();
        Api::<Pod>::namespaced(cluster.client.clone(), namespace)
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
    }
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "redis:7", "podSelector": {"matchLabels": {"app": "web"}},
        "completionPolicy": {"type": "Never"}});
    jobs.create(&PostParams::default(), &job("pods", spec)).await.unwrap();
    wait_status(&jobs, "pods", "the pod's node pulled", 10 * SECONDS, |s| {
        s["succeeded"] == 1
    })
    .await;
    assert_eq!(status(&jobs, "pods").await.unwrap()["desired"], 1);
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web-3", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "nginx"}]}}))
    .unwrap();
    Api::<Pod>::namespaced(cluster.client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    wait_status(&jobs, "pods", "a new pod's node joins", 10 * SECONDS, |s| {
        s["succeeded"] == 2
    })
    .await;
    assert_eq!(
        tag_owners(cluster, "node-3", "redis", "7").await,
        None,
        "kube-system's pod is not ours"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secret_is_copied_follows_its_source_and_is_released() {
    let running = running(Cluster::start().await, &[]).await;
    let cluster = &running.cluster;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "default");
    let source: Secret = serde_json::from_value(json!({"metadata": {"name": "pull-secret"},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}}))
    .unwrap();
    secrets.create(&PostParams::default(), &source).await.unwrap();
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "nginx:slow", "pullSecrets": ["pull-secret", "not-there"],
        "completionPolicy": {"type": "Never"}});
    jobs.create(&PostParams::default(), &job("with-secret", spec))
        .await
        .unwrap();
    let copies: Api<Secret> = Api::namespaced(cluster.client.clone(), "kruise-daemon-config");
    let copy = eventually("a copy in the agent namespace", 10 * SECONDS, || async {
        copies
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
    })
    .await;
    let annotations = copy.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["imagepulljobs.kruise.io/source-key"], "default/pull-secret");
    assert_eq!(annotations["imagepulljobs.kruise.io/references"], "default/with-secret");
    assert_eq!(annotations["imagepulljobs.kruise.io/mode"], "batch");
    let copy_name = copy.name_any();
    let refs = eventually("the copy named in the NodeImage", 10 * SECONDS, || async {
        let node_image = Api::<NodeImage>::all(cluster.client.clone())
            .get("node-1")
            .await
            .unwrap();
        node_image.spec.images?.remove("nginx")?.pull_secrets
    })
    .await;
    assert_eq!(refs[0].name.as_deref(), Some(copy_name.as_str()));
    assert_eq!(refs[0].namespace.as_deref(), Some("kruise-daemon-config"));

    secrets
        .patch(
            "pull-secret",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {".dockerconfigjson": "eyJhdXRocyI6e319"}})),
        )
        .await
        .unwrap();
    eventually("the copy follows its source", 10 * SECONDS, || async {
        let copy = copies.get(&copy_name).await.unwrap();
        let data = copy.data.unwrap_or_default();
        (data[".dockerconfigjson"].0 == b"{\"auths\":{}}").then_some(())
    })
    .await;
    let reasons = event_reasons(cluster, "with-secret").await;
    assert!(reasons.contains("PullSecretNotFound"), "{reasons:?}");

    jobs.delete("with-secret", &DeleteParams::default()).await.unwrap();
    eventually("the copy released", 10 * SECONDS, || async {
        copies
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    eventually("the job gone", 10 * SECONDS, || async {
        jobs.get_opt("with-secret").await.unwrap().is_none().then_some(())
    })
    .await;
    eventually("its tags removed", 10 * SECONDS, || async {
        tag_owners(cluster, "node-1", "nginx", "slow")
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_nodes_wait_and_a_hand_added_tag_lives_until_its_ttl() {
    let running = running(Cluster::start().await, &[]).await;
    let cluster = &running.cluster;
    let node_images: Api<NodeImage> = Api::all(cluster.client.clone());
    cluster.set_ready("node-3", false).await;
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "alpine:3", "parallelism": 3, "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("waits", spec)).await.unwrap();
    let waiting = wait_status(&jobs, "waits", "two nodes done, one waiting", 10 * SECONDS, |s| {
        s["succeeded"] == 2
    })
    .await;
    assert_eq!(
        waiting["message"],
        "job is running, progress 66.7%, 1 targeted node is not Ready and will pull once Ready"
    );
    assert_eq!(tag_owners(cluster, "node-3", "alpine", "3").await, None);
    cluster.set_ready("node-3", true).await;
    wait_status(&jobs, "waits", "completion once Ready", 10 * SECONDS, |s| {
        s["succeeded"] == 3
    })
    .await;

    // The seed's low-level use: a tag added by hand, without owner.
    let tag = json!({"spec": {"images": {"hand/made": {"tags": [{"tag": "1", "version": 0,
        "createdAt": "2026-01-01T00:00:00Z", "pullPolicy": {"ttlSecondsAfterFinished": 4}}]}}}});
    node_images
        .patch("node-2", &PatchParams::default(), &Patch::Merge(&tag))
        .await
        .unwrap();
    eventually("the agent pulls the hand-made tag", 5 * SECONDS, || async {
        let status = node_images.get("node-2").await.unwrap().status?;
        status.image_statuses?.get("hand/made").map(|_| ())
    })
    .await;
    tokio::time::sleep(2 * SECONDS).await;
    assert!(
        tag_owners(cluster, "node-2", "hand/made", "1").await.is_some(),
        "kept while its TTL runs, though it has no owner"
    );
    eventually("removed after its TTL", 10 * SECONDS, || async {
        tag_owners(cluster, "node-2", "hand/made", "1")
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

/// Each distinct message is an event of its own: nodes failing one after the
/// other each get their `PullImageFailed`, not a repeat count on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_distinct_event_message_is_kept() {
    let Running {
        cluster,
        controller,
        _agent,
    } = running(Cluster::start().await, &[]).await;
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "missing:1", "parallelism": 1, "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("one-by-one", spec))
        .await
        .unwrap();
    wait_status(&jobs, "one-by-one", "completion", 20 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    let notes = eventually("three failure events", 5 * SECONDS, || async {
        let notes = event_notes(&cluster, "one-by-one", "PullImageFailed").await;
        (notes.len() == 3).then_some(notes)
    })
    .await;
    for node in ["node-1", "node-2", "node-3"] {
        assert!(
            notes
                .iter()
                .any(|n| n.ends_with(&format!(": {node}; see the NodeImage of each node"))),
            "{node}: {notes:?}"
        );
    }
    assert!(controller.terminate().await.success());
}

/// A job that names a node that does not exist, or only such nodes, says so
/// in a Warning event and its status, instead of completing quietly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_reaches_nothing_says_why() {
    let Running {
        cluster,
        controller,
        _agent,
    } = running(Cluster::start().await, &[]).await;
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let ghost =
        json!({"image": "nginx:1.24", "selector": {"names": ["ghost"]}, "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("ghost", ghost)).await.unwrap();
    let done = wait_status(&jobs, "ghost", "completion", 10 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    assert_eq!(
        done["message"],
        "job has completed, no node targeted: node \"ghost\" does not exist"
    );
    let notes = event_notes(&cluster, "ghost", "NoTargets").await;
    assert_eq!(notes, ["nginx:1.24: node \"ghost\" does not exist"]);

    let partly = json!({"image": "nginx:1.24", "selector": {"names": ["node-1", "ghost"]}, "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("partly", partly))
        .await
        .unwrap();
    let done = wait_status(&jobs, "partly", "completion", 10 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    assert_eq!(done["succeeded"], 1, "{done}");
    let notes = event_notes(&cluster, "partly", "NodeNotFound").await;
    assert_eq!(notes, ["nginx:1.24: node \"ghost\" does not exist"]);

    let pods = json!({"image": "nginx:1.24", "podSelector": {"matchLabels": {"app": "none"}}, "completionPolicy": {"type": "Never"}});
    jobs.create(&PostParams::default(), &job("no-pods", pods))
        .await
        .unwrap();
    let idle = wait_status(&jobs, "no-pods", "a first status", 10 * SECONDS, |s| {
        s["message"].is_string()
    })
    .await;
    assert_eq!(
        idle["message"],
        "job is running, no progress: no running pod matches podSelector in namespace default"
    );
    assert!(controller.terminate().await.success());
}
