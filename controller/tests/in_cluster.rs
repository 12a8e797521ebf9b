//! `prewarm-controller` (the real binary) against the test API server, with a
//! simulated node agent: OpenKruise's end-to-end cases (reference §6.2),
//! adapted, plus NodeImage lifecycle, leader election and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Cluster, Controller, eventually, spawn_agent};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use prewarm_api::v1beta1::{ImagePullJob, NodeImage};
use serde_json::{Value, json};

const SECONDS: Duration = Duration::from_secs(1);

async fn three_nodes(cluster: &Cluster) {
    for (name, zone) in [("node-1", "a"), ("node-2", "b"), ("node-3", "a")] {
        cluster
            .add_node(name, json!({"zone": zone, "kubernetes.io/hostname": name}), true)
            .await;
    }
}

struct Running {
    cluster: Cluster,
    controller: Controller,
    _agent: tokio::task::JoinHandle<()>,
}

/// Three Ready nodes, the simulated agent, and a controller started with
/// `args`; returns once the three NodeImages exist.
async fn running(cluster: Cluster, args: &[&str]) -> Running {
    three_nodes(&cluster).await;
    let agent = spawn_agent(cluster.client.clone());
    let controller = cluster.controller(args);
    let node_images: Api<NodeImage> = Api::all(cluster.client.clone());
    eventually("a NodeImage per node", 10 * SECONDS, || async {
        (node_images.list(&ListParams::default()).await.unwrap().items.len() == 3).then_some(())
    })
    .await;
    Running {
        cluster,
        controller,
        _agent: agent,
    }
}

fn job(name: &str, spec: Value) -> ImagePullJob {
    serde_json::from_value(json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec}))
    .unwrap()
}

async fn status(jobs: &Api<ImagePullJob>, name: &str) -> Option<Value> {
    let job = jobs.get_opt(name).await.unwrap()?;
    Some(serde_json::to_value(job.status?).unwrap())
}

async fn wait_status(
    jobs: &Api<ImagePullJob>,
    name: &str,
    what: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, within, || async { status(jobs, name).await.filter(|s| check(s)) }).await
}

async fn tag_owners(cluster: &Cluster, node: &str, image: &str, tag: &str) -> Option<Vec<String>> {
    let node_image = Api::<NodeImage>::all(cluster.client.clone())
        .get_opt(node)
        .await
        .unwrap()?;
    let entry = node_image.spec.images?.remove(image)?;
    let tag = entry.tags.into_iter().find(|t| t.tag == tag)?;
    Some(
        tag.owner_references
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| o.name)
            .collect(),
    )
}

async fn event_reasons(cluster: &Cluster, name: &str) -> BTreeSet<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(cluster.client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

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
        metrics.contains("prewarm_controller_api_writes_total{verb=\"create\",resource=\"nodeimages\"}"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_dies_and_a_restart_finishes_the_job() {
    let Running {
        cluster,
        controller: mut leader,
        _agent,
    } = running(Cluster::start().await, &["--identity=first"]).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(cluster.client.clone(), "kruise-system");
    let holder = || async {
        let lease = leases.get_opt("prewarm-controller").await.unwrap()?;
        lease.spec?.holder_identity
    };
    eventually("first holds the lease", 10 * SECONDS, || async {
        (holder().await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let standby = cluster.controller(&["--identity=second"]);
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "quay.io/silent/app:1", "parallelism": 1, "completionPolicy": {"type": "Never"}});
    jobs.create(&PostParams::default(), &job("long", spec)).await.unwrap();
    wait_status(&jobs, "long", "the first node synced", 10 * SECONDS, |s| {
        s["active"] == 1
    })
    .await;
    leader.child.kill().await.unwrap();
    eventually("second takes over within the lease duration", 10 * SECONDS, || async {
        (holder().await.as_deref() == Some("second")).then_some(())
    })
    .await;
    let spec = json!({"image": "nginx:2", "completionPolicy": {"type": "Always"}, "parallelism": 3});
    jobs.create(&PostParams::default(), &job("after", spec)).await.unwrap();
    wait_status(&jobs, "after", "the new leader completes a job", 15 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    let silent = status(&jobs, "long").await.unwrap();
    assert_eq!(silent["active"], 1, "no duplicate work after the takeover: {silent}");
    let owners = tag_owners(&cluster, "node-1", "quay.io/silent/app", "1").await.unwrap();
    assert_eq!(owners, vec!["long".to_owned()], "one owner entry, written once");
    let node_image = Api::<NodeImage>::all(cluster.client.clone())
        .get("node-1")
        .await
        .unwrap();
    let tag = &node_image.spec.images.unwrap()["quay.io/silent/app"].tags[0];
    assert_eq!(tag.version, Some(0), "the new leader did not write the tag again");
    assert_eq!(
        tag_owners(&cluster, "node-2", "quay.io/silent/app", "1").await,
        None,
        "parallelism 1 held"
    );
    let metrics = standby.metrics().await;
    assert!(metrics.contains("prewarm_controller_leader 1"));
    assert!(standby.terminate().await.success());
    let lease = leases.get("prewarm-controller").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None, "SIGTERM releases the lease");

    // Deleted while no controller runs: the next one cleans up.
    jobs.delete("long", &DeleteParams::default()).await.unwrap();
    let _restarted = cluster.controller(&["--identity=third"]);
    eventually("the restarted controller removes the tag", 15 * SECONDS, || async {
        tag_owners(&cluster, "node-1", "quay.io/silent/app", "1")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let reasons = event_reasons(&cluster, "after").await;
    assert!(reasons.contains("Completed"), "the new leader reports: {reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_converge_through_failing_api_writes() {
    let Running {
        cluster,
        controller,
        _agent,
    } = running(Cluster::start().await, &[]).await;
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "nginx:faults", "parallelism": 3, "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("faults", spec)).await.unwrap();
    // The next 6 writes of anyone (controller and agent) fail with 500.
    let faults = format!("{}/testapi/faults?writes=6&code=500", cluster.api.url());
    let injected = std::process::Command::new("curl")
        .args(["-sf", &faults])
        .status()
        .unwrap();
    assert!(injected.success());
    let done = wait_status(
        &jobs,
        "faults",
        "completion despite failing writes",
        30 * SECONDS,
        |s| s["completionTime"].is_string(),
    )
    .await;
    assert_eq!(done["succeeded"], 3, "{done}");
    assert!(controller.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_examples_through_kubectl_and_the_webhook() {
    let running = running(Cluster::start().await, &[]).await;
    let cluster = &running.cluster;
    let node_images: Api<NodeImage> = Api::all(cluster.client.clone());
    cluster.set_ready("node-1", false).await;

    // The seed's first example, a v1alpha1 job, applied as written.
    let seed = common::repo("api/tests/fixtures/seed/02-imagepulljob-names.yaml");
    let (ok, out) = cluster.kubectl(&["apply", "--validate=false", "-f", seed.to_str().unwrap()]);
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

fn list_job(name: &str, spec: Value) -> prewarm_api::v1beta1::ImageListPullJob {
    serde_json::from_value(
        json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImageListPullJob",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
    )
    .unwrap()
}

async fn children(jobs: &Api<ImagePullJob>) -> Vec<ImagePullJob> {
    jobs.list(&ListParams::default()).await.unwrap().items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_list_pull_jobs_make_one_child_per_image_and_go_with_their_ttl() {
    let running = running(Cluster::start().await, &[]).await;
    let cluster = &running.cluster;
    let lists: Api<prewarm_api::v1beta1::ImageListPullJob> = Api::namespaced(cluster.client.clone(), "default");
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"images": ["nginx:list", "busybox:list"], "parallelism": 3, "imagePullPolicy": "Always",
        "selector": {"matchExpressions": [{"key": "apps.kruise.io/fake-nodeimage", "operator": "DoesNotExist"}]},
        "pullPolicy": {"timeoutSeconds": 50, "backoffLimit": 2},
        "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 50, "ttlSecondsAfterFinished": 3}});
    lists
        .create(&PostParams::default(), &list_job("test-imagelistpulljob", spec))
        .await
        .unwrap();
    let made = eventually("two children within 3 s", 3 * SECONDS, || async {
        let made = children(&jobs).await;
        (made.len() == 2).then_some(made)
    })
    .await;
    for child in &made {
        assert!(
            child
                .metadata
                .name
                .as_deref()
                .unwrap()
                .starts_with("test-imagelistpulljob-")
        );
        let completion = child.spec.completion_policy.as_ref().unwrap();
        assert_eq!(completion.ttl_seconds_after_finished, None, "children carry no TTL");
    }
    let done = eventually("the list completes", 20 * SECONDS, || async {
        let list = lists.get("test-imagelistpulljob").await.unwrap();
        let status = serde_json::to_value(list.status?).unwrap();
        status["completionTime"].is_string().then_some(status)
    })
    .await;
    assert_eq!(
        (done["desired"].clone(), done["succeeded"].clone()),
        (json!(2), json!(2)),
        "{done}"
    );
    let reasons = event_reasons(cluster, "test-imagelistpulljob").await;
    assert!(reasons.contains("Successful create ImagePullJob"), "{reasons:?}");
    eventually("the list job deleted after its TTL", 10 * SECONDS, || async {
        lists
            .get_opt("test-imagelistpulljob")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    eventually("its children gone with it", 10 * SECONDS, || async {
        children(&jobs).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_list_pull_jobs_follow_their_images_and_list_failures() {
    let running = running(Cluster::start().await, &[]).await;
    let cluster = &running.cluster;
    let lists: Api<prewarm_api::v1beta1::ImageListPullJob> = Api::namespaced(cluster.client.clone(), "default");
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"images": ["redis:7", "registry.local/missing:1"], "selector": {"names": ["node-1"]},
        "completionPolicy": {"type": "Never"}});
    lists
        .create(&PostParams::default(), &list_job("never", spec))
        .await
        .unwrap();
    let status = eventually("both children finished", 15 * SECONDS, || async {
        let list = lists.get("never").await.unwrap();
        let status = serde_json::to_value(list.status?).unwrap();
        (status["completed"] == 2).then_some(status)
    })
    .await;
    assert!(status["completionTime"].is_null(), "a Never list does not complete");
    let failed = status["failedImageStatuses"].as_array().unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["name"], "registry.local/missing:1");

    let patch = json!({"spec": {"images": ["redis:7", "alpine:3"]}});
    lists
        .patch("never", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("alpine added, the failing image removed", 10 * SECONDS, || async {
        let images: BTreeSet<String> = children(&jobs).await.into_iter().map(|j| j.spec.image).collect();
        (images == BTreeSet::from(["redis:7".to_owned(), "alpine:3".to_owned()])).then_some(())
    })
    .await;
    let reasons = event_reasons(cluster, "never").await;
    assert!(reasons.contains("Successful delete ImagePullJob"), "{reasons:?}");
    let redis = children(&jobs)
        .await
        .into_iter()
        .find(|j| j.spec.image == "redis:7")
        .unwrap();

    // A TTL change reaches no child; a pull-policy change remakes them all.
    let patch = json!({"spec": {"parallelism": 2}});
    lists
        .patch("never", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("parallelism changed in place", 10 * SECONDS, || async {
        let same = jobs.get_opt(redis.metadata.name.as_deref().unwrap()).await.unwrap()?;
        (same.spec.parallelism == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(2))).then_some(())
    })
    .await;
    let patch = json!({"spec": {"imagePullPolicy": "Always"}});
    lists
        .patch("never", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("children remade for the new pull policy", 10 * SECONDS, || async {
        let now = children(&jobs).await;
        let remade = now.len() == 2
            && now.iter().all(|j| {
                j.spec.image_pull_policy.as_deref() == Some("Always") && j.metadata.deletion_timestamp.is_none()
            });
        remade.then_some(())
    })
    .await;
}
