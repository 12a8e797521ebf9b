//! The controller under the shipped RBAC: authenticated as its ServiceAccount,
//! it does a full round of its work (NodeImages for new and removed Nodes, a
//! job with a pull secret whose copy follows its source and is released, a
//! list job growing and shrinking, TTL deletions, a silent tag failed, events,
//! a cron job's run, its Lease) without a
//! single 403, and every rule of its roles is needed by some request it made.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use prewarm_api::v1beta1::{AdvancedCronJob, ImageListPullJob, ImagePullJob, NodeImage};
use prewarm_controller::plan::image_list_pull_job::{child_name, revision};
use prewarm_testapi::rbac;
use serde_json::{Value, json};

const ACCOUNT: (&str, &str) = ("prewarm-system", "prewarm-controller");

/// The shipped objects of `manifests/base/<file>`.
fn shipped(file: &str) -> Vec<Value> {
    prewarm_testapi::read_manifests(&repo(&format!("manifests/base/{file}"))).unwrap()
}

/// How the shipped Deployment tells the controller where the gates are.
const LIVE_GATES: &str = "--feature-gates-config-map=prewarm-system/prewarm-feature-gates";

/// The controller's ServiceAccount and RBAC (its own and the gate ConfigMap's,
/// which is set to turn ImagePullJobGate on), into the install namespace
/// `Cluster` made.
async fn install_rbac(cluster: &Cluster) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("00-agents-namespace.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: prewarm-nodeagent}\n",
    )
    .unwrap();
    for file in [
        "serviceaccounts.yaml",
        "rbac-controller.yaml",
        "rbac-openkruise-check.yaml",
        "feature-gates.yaml",
    ] {
        std::fs::copy(repo(&format!("manifests/base/{file}")), dir.path().join(file)).unwrap();
    }
    cluster.api.load_manifests(dir.path()).unwrap();
    cluster
        .api
        .put(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "prewarm-feature-gates", "namespace": "prewarm-system"},
                      "data": {"featureGates": "ImagePullJobGate=true"}}))
        .unwrap();
    let mut objects = shipped("rbac-controller.yaml");
    objects.extend(shipped("rbac-openkruise-check.yaml"));
    objects.extend(shipped("feature-gates.yaml"));
    objects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controller_works_under_its_shipped_rbac_and_needs_every_rule() {
    let cluster = Cluster::start_without_webhook().await;
    let objects = install_rbac(&cluster).await;
    let kubeconfig = cluster.api_kubeconfig_for(ACCOUNT.0, ACCOUNT.1);
    three_nodes(&cluster).await;
    let _agent = spawn_agent(cluster.client.clone());
    let client = cluster.client.clone();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "web", "image": "nginx"}]},
        "status": {"phase": "Running"}}))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let dockerconfig = |password: &str| {
        json!({".dockerconfigjson": base64::Engine::encode(&base64::engine::general_purpose::STANDARD,
            json!({"auths": {"registry.example": {"username": "u", "password": password}}}).to_string())})
    };
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "regcred", "namespace": "default"},
        "type": "kubernetes.io/dockerconfigjson", "data": dockerconfig("one")}))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();

    // No --leader-elect-namespace: out of cluster the Lease goes to the install's namespace.
    let controller = cluster.controller_as(&kubeconfig, &[LIVE_GATES]);
    let node_images: Api<NodeImage> = Api::all(client.clone());
    eventually("a NodeImage per node", 10 * SECONDS, || async {
        (node_images.list(&ListParams::default()).await.unwrap().items.len() == 3).then_some(())
    })
    .await;

    // A job with a pull secret, paused at first: the copy is made, follows its
    // source, and goes with the job once it has run and expired.
    let jobs: Api<ImagePullJob> = Api::namespaced(client.clone(), "default");
    let copies: Api<Secret> = Api::namespaced(client.clone(), "kruise-daemon-config");
    let warm = job(
        "warm",
        json!({"image": "nginx:1.9.1", "pullSecrets": ["regcred"],
        "selector": {"names": ["node-1", "node-2"]}, "parallelism": 0,
        "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 2},
        "pullPolicy": {"backoffLimit": 3, "timeoutSeconds": 60}, "imagePullPolicy": "IfNotPresent"}),
    );
    jobs.create(&PostParams::default(), &warm).await.unwrap();
    let copy_of = |copies: Vec<Secret>| {
        copies
            .into_iter()
            .find(|s| s.data.as_ref().and_then(|d| d.get(".dockerconfigjson")).is_some())
    };
    eventually("the pull secret copied", 10 * SECONDS, || async {
        copy_of(copies.list(&ListParams::default()).await.unwrap().items)
    })
    .await;
    secrets
        .patch(
            "regcred",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": dockerconfig("two")})),
        )
        .await
        .unwrap();
    let updated = serde_json::to_value(dockerconfig("two")[".dockerconfigjson"].clone()).unwrap();
    eventually("the copy following its source", 10 * SECONDS, || async {
        let copy = copy_of(copies.list(&ListParams::default()).await.unwrap().items)?;
        (serde_json::to_value(&copy.data.unwrap()[".dockerconfigjson"]).unwrap() == updated).then_some(())
    })
    .await;

    jobs.patch(
        "warm",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"parallelism": 2}})),
    )
    .await
    .unwrap();

    // A job by pod selector, and a list job that grows children and loses one.
    let by_pods = job(
        "by-pods",
        json!({"image": "busybox:1.36", "podSelector": {"matchLabels": {"app": "web"}},
        "completionPolicy": {"type": "Never"}, "pullPolicy": {"backoffLimit": 3, "timeoutSeconds": 60}}),
    );
    jobs.create(&PostParams::default(), &by_pods).await.unwrap();
    let lists: Api<ImageListPullJob> = Api::namespaced(client.clone(), "default");
    let list = list_job(
        "list",
        json!({"images": ["redis:7", "memcached:1.6"],
        "selector": {"names": ["node-1"]},
        "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 2},
        "pullPolicy": {"backoffLimit": 3, "timeoutSeconds": 60}}),
    );
    // A job of the user's own under the name the redis child would get: the
    // child is made under another name (the cache says whose it is: no `get`).
    let squatter_name = child_name("list", "redis:7", &revision(&list));
    let squatter = job(
        &squatter_name,
        json!({"image": "nginx:1.9.1", "selector": {"names": ["node-2"]}, "parallelism": 0,
        "completionPolicy": {"type": "Always"}, "pullPolicy": {"backoffLimit": 3, "timeoutSeconds": 60}}),
    );
    jobs.create(&PostParams::default(), &squatter).await.unwrap();
    lists.create(&PostParams::default(), &list).await.unwrap();
    eventually("two children of the list job", 10 * SECONDS, || async {
        (children(&jobs)
            .await
            .iter()
            .filter(|j| j.metadata.owner_references.is_some())
            .count()
            == 2)
            .then_some(())
    })
    .await;
    let left_alone = jobs.get(&squatter_name).await.unwrap();
    assert_eq!(left_alone.spec.image, "nginx:1.9.1");
    assert!(left_alone.metadata.owner_references.is_none());
    jobs.delete(&squatter_name, &DeleteParams::default()).await.unwrap();
    lists
        .patch(
            "list",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"images": ["redis:7"]}})),
        )
        .await
        .unwrap();

    // TTLs delete the finished jobs (and the secret copy); a removed Node loses its NodeImage.
    eventually("finished jobs deleted after their TTL", 20 * SECONDS, || async {
        let names: Vec<String> = children(&jobs)
            .await
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect();
        let list_gone = lists.get_opt("list").await.unwrap().is_none();
        (list_gone && names == ["by-pods"]).then_some(())
    })
    .await;
    eventually("the secret copy released", 10 * SECONDS, || async {
        copy_of(copies.list(&ListParams::default()).await.unwrap().items)
            .is_none()
            .then_some(())
    })
    .await;
    Api::<Node>::all(client.clone())
        .delete("node-3", &DeleteParams::default())
        .await
        .unwrap();
    eventually("node-3's NodeImage deleted", 10 * SECONDS, || async {
        node_images.get_opt("node-3").await.unwrap().is_none().then_some(())
    })
    .await;
    // Tags their node never answered: the controller fails them in the NodeImage
    // status, with an event for each (their messages differ).
    let silent = json!({"spec": {"images": {"silent/app": {"tags": [
        {"tag": "v1", "createdAt": "2020-01-01T00:00:00Z", "version": 0},
        {"tag": "v2", "createdAt": "2020-01-01T00:00:00Z", "version": 0}]}}}});
    node_images
        .patch("node-2", &PatchParams::default(), &Patch::Merge(silent))
        .await
        .unwrap();
    eventually("the silent tag failed by the controller", 10 * SECONDS, || async {
        let node_image = serde_json::to_value(node_images.get("node-2").await.unwrap()).unwrap();
        let tags = node_image["status"]["imageStatuses"]["silent/app"]["tags"]
            .as_array()
            .cloned()?;
        (tags.len() == 2 && tags.iter().all(|t| t["phase"] == "Failed")).then_some(())
    })
    .await;
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
    eventually(
        "a PullImageFailed event for each of node-2's tags",
        10 * SECONDS,
        || async {
            let list = events.list(&ListParams::default()).await.unwrap().items;
            let mut notes: Vec<String> = list
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("PullImageFailed"))
                .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("node-2"))
                .filter_map(|e| e.note)
                .collect();
            notes.sort();
            let expected = ["silent/app:v1", "silent/app:v2"];
            (notes.len() == 2 && notes.iter().zip(expected).all(|(n, tag)| n.contains(tag))).then_some(())
        },
    )
    .await;
    // The same failure again (a new version of v1, still unanswered): the same
    // message, so the event's series grows (a patch) instead of a new event.
    let again = json!({"spec": {"images": {"silent/app": {"tags": [
        {"tag": "v1", "createdAt": "2020-01-01T00:00:00Z", "version": 1},
        {"tag": "v2", "createdAt": "2020-01-01T00:00:00Z", "version": 0}]}}}});
    node_images
        .patch("node-2", &PatchParams::default(), &Patch::Merge(again))
        .await
        .unwrap();
    eventually("v1's event seen twice", 10 * SECONDS, || async {
        let list = events.list(&ListParams::default()).await.unwrap().items;
        list.into_iter()
            .filter(|e| e.reason.as_deref() == Some("PullImageFailed"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("node-2"))
            .any(|e| {
                e.note.as_deref().is_some_and(|n| n.contains("silent/app:v1")) && e.series.is_some_and(|s| s.count >= 2)
            })
            .then_some(())
    })
    .await;
    // A cron job: a run made (every second), its status written, then paused.
    let crons: Api<AdvancedCronJob> = Api::namespaced(client.clone(), "default");
    let cron: AdvancedCronJob = serde_json::from_value(json!({
        "metadata": {"name": "warm-nightly", "namespace": "default"},
        "spec": {"schedule": "@every 1s", "concurrencyPolicy": "Replace",
            "template": {"imageListPullJobTemplate": {"spec": {"images": ["redis:7"],
                "selector": {"names": ["node-1"]}, "completionPolicy": {"type": "Always"}}}}}}))
    .unwrap();
    crons.create(&PostParams::default(), &cron).await.unwrap();
    eventually("a run of the cron job, in its status", 20 * SECONDS, || async {
        let status = crons.get("warm-nightly").await.unwrap().status?;
        let run = lists
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|l| {
                l.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.name == "warm-nightly")
            });
        (status.last_schedule_time.is_some() && run.is_some()).then_some(())
    })
    .await;
    crons
        .patch(
            "warm-nightly",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    assert!(controller.terminate().await.success());

    // The controller reads Secrets as metadata only (no Secret's data crosses
    // the wire), but for the sources of copies, read one by one. Its list and
    // watch are the only ones asking for metadata; the test's own lists ask for data.
    let counts = cluster.api.store.counts();
    assert_eq!(counts.get("list as metadata /secrets"), Some(&1), "{counts:?}");
    assert_eq!(
        counts.get("watch /secrets"),
        counts.get("watch as metadata /secrets"),
        "{counts:?}"
    );
    let report = rbac::least_privilege(&cluster.api.audit(), &objects, ACCOUNT.0, ACCOUNT.1);
    assert!(report.rules.len() >= 10, "{:#?}", report.rules);
    assert_eq!(report.problems(), Vec::<String>::new());
}

/// The webhook is down (`failurePolicy: Fail`): users' job writes are refused,
/// but the controller's own metadata-only updates skip it through the shipped
/// configurations' matchConditions, so deleting a job still finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_job_finishes_while_the_webhook_is_down() {
    let cluster = Cluster::start().await;
    install_rbac(&cluster).await;
    let kubeconfig = cluster.api_kubeconfig_for(ACCOUNT.0, ACCOUNT.1);
    three_nodes(&cluster).await;
    let _agent = spawn_agent(cluster.client.clone());
    let controller = cluster.controller_as(&kubeconfig, &[LIVE_GATES]);
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "nginx:1.9.1", "completionPolicy": {"type": "Never"}});
    jobs.create(&PostParams::default(), &job("kept", spec)).await.unwrap();
    eventually("the finalizer added", 10 * SECONDS, || async {
        let job = jobs.get("kept").await.unwrap();
        (!job.metadata.finalizers.unwrap_or_default().is_empty()).then_some(())
    })
    .await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cluster
        .api
        .set_service_endpoint("prewarm-system/prewarm-webhook", closed);
    let refused = jobs
        .patch(
            "kept",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"parallelism": 2}})),
        )
        .await;
    assert!(refused.is_err(), "a user's spec change still needs the webhook");
    jobs.delete("kept", &DeleteParams::default()).await.unwrap();
    eventually(
        "the job gone, its finalizer removed by the controller",
        15 * SECONDS,
        || async { jobs.get_opt("kept").await.unwrap().is_none().then_some(()) },
    )
    .await;
    assert!(controller.terminate().await.success());
}
