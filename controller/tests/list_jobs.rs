//! ImageListPullJob end to end (reference §6.4), adapted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::*;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use prewarm_api::v1beta1::ImagePullJob;
use serde_json::json;

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
