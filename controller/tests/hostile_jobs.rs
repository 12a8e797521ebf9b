//! Jobs a tenant may create that once stopped or corrupted the controller's
//! work for everyone (issue #23), against the real binary and the test API server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use common::*;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use prewarm_api::v1beta1::{ImagePullJob, NodeImage};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_the_largest_deadline_stalls_no_other_job() {
    let Running {
        cluster,
        mut controller,
        _agent,
    } = running(Cluster::start().await, &[]).await;
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    // The webhook accepts any deadline at or above timeoutSeconds; this one asks
    // to be looked at again in 2^63 - 1 seconds.
    let forever = json!({"image": "nginx:1.21", "parallelism": 1,
        "completionPolicy": {"type": "Always", "activeDeadlineSeconds": i64::MAX},
        "pullPolicy": {"timeoutSeconds": 50, "backoffLimit": 1}});
    jobs.create(&PostParams::default(), &job("forever", forever))
        .await
        .unwrap();
    wait_status(&jobs, "forever", "desired 3", 5 * SECONDS, |s| s["desired"] == 3).await;

    let after = json!({"image": "nginx:1.22", "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("after", after)).await.unwrap();
    for name in ["after", "forever"] {
        let done = wait_status(&jobs, name, "completion", 20 * SECONDS, |s| {
            s["completionTime"].is_string()
        })
        .await;
        assert_eq!(done["succeeded"], 3, "{name}: {done}");
    }
    assert!(
        controller.child.try_wait().unwrap().is_none(),
        "the controller is still running"
    );
    assert!(controller.terminate().await.success());
}

/// OpenKruise #1517's class: many jobs writing tags of one repository into the
/// same NodeImage entries at once. Every tag a job wrote stays: a watch on the
/// NodeImages sees no tag disappear from any node at any version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_on_one_repository_never_undo_each_others_tags() {
    const JOBS: usize = 16;
    let Running {
        cluster,
        controller,
        _agent,
    } = running(
        Cluster::start().await,
        &["--imagepulljob-workers=8", "--job-batch-window=10ms"],
    )
    .await;
    // (NodeImage, its tags) at every version the watch delivered.
    type Seen = Vec<(String, BTreeSet<String>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let recorder = {
        let seen = seen.clone();
        let api: Api<NodeImage> = Api::all(cluster.client.clone());
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            futures_util::pin_mut!(stream);
            while let Some(Ok(node_image)) = stream.next().await {
                let tags = node_image
                    .spec
                    .images
                    .iter()
                    .flatten()
                    .flat_map(|(image, entry)| entry.tags.iter().map(move |t| format!("{image}:{}", t.tag)))
                    .collect();
                seen.lock().unwrap().push((node_image.name_any(), tags));
            }
        })
    };
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    // The NodeImages already hold an entry, so that the repository's entry is
    // added beside it (an absent `images` map takes another path).
    let first = json!({"image": "reg.example/base:1", "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("base", first)).await.unwrap();
    wait_status(&jobs, "base", "completion", 20 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    let creates = (0..JOBS).map(|i| {
        let jobs = jobs.clone();
        async move {
            let spec = json!({"image": format!("reg.example/team/app:1.{i}"), "parallelism": 3,
                "completionPolicy": {"type": "Always"}});
            jobs.create(&PostParams::default(), &job(&format!("app-{i}"), spec))
                .await
                .unwrap();
        }
    });
    futures_util::future::join_all(creates).await;
    for i in 0..JOBS {
        let done = wait_status(&jobs, &format!("app-{i}"), "completion", 60 * SECONDS, |s| {
            s["completionTime"].is_string()
        })
        .await;
        assert_eq!(done["succeeded"], 3, "app-{i}: {done}");
    }
    recorder.abort();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let mut last: BTreeMap<&str, &BTreeSet<String>> = BTreeMap::new();
    for (node, tags) in seen.iter() {
        if let Some(before) = last.insert(node, tags) {
            let lost: Vec<_> = before.difference(tags).collect();
            assert!(lost.is_empty(), "{node} lost {lost:?} (had {before:?}, then {tags:?})");
        }
    }
    for node in ["node-1", "node-2", "node-3"] {
        assert_eq!(last[node].len(), JOBS + 1, "{node}: {:?}", last[node]);
    }
    assert!(controller.terminate().await.success());
}

/// A job names its pull secrets: only registry credentials are copied, a copy
/// holds the credentials alone, and a NodeImage names a copy only once it is
/// confirmed to come from the job's own secret (a Secret planted under the
/// copy's name with another uid is refreshed from the source first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_hold_registry_credentials_only_and_are_confirmed_before_use() {
    let Running {
        cluster,
        controller,
        _agent,
    } = running(Cluster::start().await, &[]).await;
    let secrets: Api<Secret> = Api::namespaced(cluster.client.clone(), "default");
    let source: Secret = serde_json::from_value(json!({"metadata": {"name": "pull-secret",
            "labels": {"team": "a"}, "annotations": {"owner": "someone"}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "e30=", "extra": "c2VjcmV0"}}))
    .unwrap();
    let source = secrets.create(&PostParams::default(), &source).await.unwrap();
    let token: Secret = serde_json::from_value(json!({"metadata": {"name": "sa-token"},
        "type": "Opaque", "data": {"token": "c2VjcmV0"}}))
    .unwrap();
    secrets.create(&PostParams::default(), &token).await.unwrap();
    // Someone with access to the agent namespace planted a Secret where the copy goes.
    let copies: Api<Secret> = Api::namespaced(cluster.client.clone(), "kruise-daemon-config");
    let copy_name = prewarm_controller::plan::secrets::copy_name("default", "pull-secret");
    let planted: Secret = serde_json::from_value(json!({"metadata": {"name": copy_name, "annotations": {
            "imagepulljobs.kruise.io/source-key": "default/pull-secret",
            "imagepulljobs.kruise.io/references": "", "imagepulljobs.kruise.io/mode": "batch",
            "prewarm.dev/source-uid": "not-the-source"}},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "ImV2aWwi"}}))
    .unwrap();
    copies.create(&PostParams::default(), &planted).await.unwrap();

    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "nginx:1.23", "pullSecrets": ["pull-secret", "sa-token"],
        "completionPolicy": {"type": "Never"}});
    jobs.create(&PostParams::default(), &job("with-secrets", spec))
        .await
        .unwrap();
    let refs = eventually("the copy named in the NodeImage", 10 * SECONDS, || async {
        let node_image = Api::<NodeImage>::all(cluster.client.clone())
            .get("node-1")
            .await
            .unwrap();
        node_image.spec.images?.remove("nginx")?.pull_secrets
    })
    .await;
    let names: Vec<_> = refs.iter().filter_map(|r| r.name.as_deref()).collect();
    assert_eq!(names, [copy_name.as_str()], "the Opaque secret is not copied");
    let copy = copies.get(&copy_name).await.unwrap();
    let data = copy.data.clone().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), [".dockerconfigjson"], "{data:?}");
    assert_eq!(
        data[".dockerconfigjson"].0, b"{}",
        "refreshed from the source before use"
    );
    let annotations = copy.metadata.annotations.clone().unwrap();
    assert_eq!(
        annotations["prewarm.dev/source-uid"],
        source.metadata.uid.clone().unwrap()
    );
    assert_eq!(
        annotations["imagepulljobs.kruise.io/references"],
        "default/with-secrets"
    );
    assert!(!annotations.contains_key("owner"), "{annotations:?}");
    assert_eq!(
        copy.metadata.labels.clone().unwrap(),
        [(
            "app.kubernetes.io/managed-by".to_owned(),
            "prewarm-controller".to_owned()
        )]
        .into()
    );
    let all = copies.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        all.len(),
        1,
        "no copy of sa-token: {:?}",
        all.iter().map(|s| s.name_any()).collect::<Vec<_>>()
    );
    let notes = event_notes(&cluster, "with-secrets", "PullSecretRefused").await;
    assert!(
        notes
            .iter()
            .any(|n| n.contains("sa-token (type Opaque)") && n.contains("kubernetes.io/dockerconfigjson")),
        "{notes:?}"
    );
    assert!(controller.terminate().await.success());
}

/// An Always job without a deadline over a node that stays NotReady completes
/// once the node has been NotReady for the no-response window (shortened here),
/// instead of running, and holding its tags and secret copies, forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stays_not_ready_does_not_keep_a_job_running() {
    let Running {
        cluster,
        controller,
        _agent,
    } = running(Cluster::start().await, &["--node-no-response-timeout=3s"]).await;
    cluster.set_ready("node-3", false).await;
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "alpine:3.20", "parallelism": 3, "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("no-deadline", spec))
        .await
        .unwrap();
    let done = wait_status(&jobs, "no-deadline", "completion", 15 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    assert_eq!(done["succeeded"], 2, "{done}");
    assert_eq!(done["failedNodes"], json!(["node-3"]), "{done}");
    let notes = event_notes(&cluster, "no-deadline", "NodeNotReady").await;
    assert!(
        notes.iter().any(|n| n.contains("node-3") && n.contains("3s")),
        "{notes:?}"
    );
    assert!(controller.terminate().await.success());
}

/// A job with no selector targets every node but control-plane ones (their
/// disk is etcd's): `--excluded-nodes`, whose default excludes them; empty, it
/// excludes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_nodes_are_never_targeted_by_default() {
    let Running {
        cluster,
        controller,
        _agent,
    } = running(Cluster::start().await, &[]).await;
    cluster
        .add_node(
            "control-plane-1",
            json!({"node-role.kubernetes.io/control-plane": ""}),
            true,
        )
        .await;
    let node_images: Api<NodeImage> = Api::all(cluster.client.clone());
    eventually("the control-plane node's NodeImage too", 10 * SECONDS, || async {
        node_images.get_opt("control-plane-1").await.unwrap().map(|_| ())
    })
    .await;
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "nginx:1.26", "parallelism": 4, "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("everywhere", spec))
        .await
        .unwrap();
    let done = wait_status(&jobs, "everywhere", "completion", 10 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    assert_eq!(
        (done["desired"].clone(), done["succeeded"].clone()),
        (json!(3), json!(3)),
        "{done}"
    );
    assert_eq!(tag_owners(&cluster, "control-plane-1", "nginx", "1.26").await, None);
    assert!(controller.terminate().await.success());

    let controller = cluster.controller(&["--excluded-nodes="]);
    let spec = json!({"image": "nginx:1.27", "parallelism": 4, "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("really-everywhere", spec))
        .await
        .unwrap();
    let done = wait_status(&jobs, "really-everywhere", "completion", 10 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    assert_eq!(done["succeeded"], 4, "{done}");
    assert!(controller.terminate().await.success());
}
