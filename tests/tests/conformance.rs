//! The test API server driven by kube-rs the way prewarm's controller and node
//! agent will drive it: Api, watcher, reflector and Controller.
//!
//! With `PREWARM_CONFORMANCE_KUBECONFIG=<kubeconfig>` the same tests run
//! against that cluster instead (each in a namespace of its own, left behind
//! for inspection), so a real kube-apiserver shows where the stand-in differs.
//! The stand-in's own knobs (watch history size, injected faults and latency,
//! dropped watches, preloading) are tested in `stand_in.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{code, config_map};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use prewarm_api::v1beta1::ImagePullJob;
use prewarm_testapi::{Options, TestApi};
use serde_json::json;

/// The server under test: the stand-in (`Some`), or the real cluster of
/// `PREWARM_CONFORMANCE_KUBECONFIG` (`None`), with a client whose default
/// namespace is the test's.
async fn start(options: Options) -> (Option<TestApi>, Client) {
    if let Some(path) = std::env::var_os("PREWARM_CONFORMANCE_KUBECONFIG") {
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let namespace = format!(
            "prewarm-conformance-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let client = Client::try_from(config.clone()).unwrap();
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
        let object = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
        namespaces.create(&PostParams::default(), &object).await.unwrap();
        config.default_namespace = namespace;
        return (None, Client::try_from(config).unwrap());
    }
    let api = TestApi::start(options).await.unwrap();
    let mut config = kube::Config::new(api.url().parse().unwrap());
    config.default_namespace = "default".to_owned();
    (Some(api), Client::try_from(config).unwrap())
}

/// prewarm's CRDs, created (or already there) and Established.
async fn apply_crds(client: &Client) {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for (_, crd) in prewarm_api::crd::all().unwrap() {
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(other) => panic!("creating {}: {other}", crd.name_any()),
        }
        let established = kube::runtime::conditions::is_crd_established();
        tokio::time::timeout(
            Duration::from_secs(30),
            kube::runtime::wait::await_condition(crds.clone(), &crd.name_any(), established),
        )
        .await
        .unwrap()
        .unwrap();
    }
}

#[tokio::test]
async fn crud_conflicts_and_errors() {
    let (_api, client) = start(Options::default()).await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut generated = config_map("", json!({"app": "web"}));
    generated.metadata.generate_name = Some("cm-".to_owned());
    let created = maps.create(&PostParams::default(), &generated).await.unwrap();
    let name = created.name_any();
    assert!(name.starts_with("cm-") && name.len() == 8, "{name}");
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    assert_eq!(created.metadata.generation, Some(1));

    assert_eq!(
        code(
            maps.create(&PostParams::default(), &config_map(&name, json!({})))
                .await
                .unwrap_err()
        ),
        409
    );
    let other_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "missing");
    assert_eq!(
        code(
            other_ns
                .create(&PostParams::default(), &config_map("x", json!({})))
                .await
                .unwrap_err()
        ),
        404
    );
    assert_eq!(code(maps.get("absent").await.unwrap_err()), 404);

    // Optimistic concurrency: a stale resourceVersion is a conflict.
    let mut stale = created.clone();
    let mut fresh = created.clone();
    fresh.data = Some([("k".to_owned(), "v2".to_owned())].into());
    maps.replace(&name, &PostParams::default(), &fresh).await.unwrap();
    stale.data = Some([("k".to_owned(), "v3".to_owned())].into());
    assert_eq!(
        code(maps.replace(&name, &PostParams::default(), &stale).await.unwrap_err()),
        409
    );

    // Patches: merge, JSON (a failed test is 422), and apply.
    let merged = maps
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"m": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data.as_ref().unwrap()["m"], "1");
    let failed_test = serde_json::from_value(json!([{"op": "test", "path": "/data/k", "value": "nope"}])).unwrap();
    assert_eq!(
        code(
            maps.patch(&name, &PatchParams::default(), &Patch::<()>::Json(failed_test))
                .await
                .unwrap_err()
        ),
        422
    );
    let applied = maps
        .patch(
            "applied",
            &PatchParams::apply("conformance"),
            &Patch::Apply(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "1"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["a"], "1");

    // Selectors and pagination.
    for i in 0..5 {
        maps.create(
            &PostParams::default(),
            &config_map(
                &format!("page-{i}"),
                json!({"tier": if i % 2 == 0 { "even" } else { "odd" }}),
            ),
        )
        .await
        .unwrap();
    }
    let even = maps.list(&ListParams::default().labels("tier=even")).await.unwrap();
    assert_eq!(even.items.len(), 3);
    let set_based = maps
        .list(&ListParams::default().labels("tier in (odd),app notin (web)"))
        .await
        .unwrap();
    assert_eq!(set_based.items.len(), 2);
    let by_name = maps
        .list(&ListParams::default().fields("metadata.name=page-3"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let mut paged = Vec::new();
    let mut params = ListParams::default().limit(3);
    loop {
        let page = maps.list(&params).await.unwrap();
        assert!(page.items.len() <= 3);
        paged.extend(page.items.into_iter().map(|m| m.name_any()));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = ListParams::default().limit(3).continue_token(&token),
            _ => break,
        }
    }
    let all: Vec<String> = maps
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.name_any())
        .collect();
    assert_eq!(paged, all);

    // dryRun writes change nothing.
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    maps.create(&dry, &config_map("dry", json!({}))).await.unwrap();
    assert_eq!(code(maps.get("dry").await.unwrap_err()), 404);

    let dry_delete = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    maps.delete("page-0", &dry_delete).await.unwrap();
    maps.get("page-0").await.unwrap();
    maps.delete_collection(&DeleteParams::default(), &ListParams::default().labels("tier=even"))
        .await
        .unwrap();
    assert!(
        maps.list(&ListParams::default().labels("tier=even"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        maps.list(&ListParams::default().labels("tier=odd"))
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    maps.delete(&name, &DeleteParams::default()).await.unwrap();
    assert_eq!(code(maps.get(&name).await.unwrap_err()), 404);
}

#[tokio::test]
async fn custom_resources_status_subresource_and_generation() {
    let (_api, client) = start(Options::default()).await;
    apply_crds(&client).await;
    let jobs: Api<ImagePullJob> = Api::default_namespaced(client.clone());
    let job: ImagePullJob = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob", "metadata": {"name": "job"},
        "spec": {"image": "nginx:1.9.1", "completionPolicy": {"type": "Always"}},
        "status": {"desired": 9}
    }))
    .unwrap();
    let created = jobs.create(&PostParams::default(), &job).await.unwrap();
    assert!(
        created.status.is_none(),
        "create drops status when there is a status subresource"
    );

    let status = jobs
        .patch_status(
            "job",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"desired": 3}, "spec": {"image": "ignored"}})),
        )
        .await
        .unwrap();
    assert_eq!(status.status.as_ref().unwrap().desired, 3);
    assert_eq!(status.spec.image, "nginx:1.9.1", "status writes change only status");
    assert_eq!(
        status.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );

    let main = jobs
        .patch(
            "job",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"desired": 99}, "metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.status.as_ref().unwrap().desired,
        3,
        "main-resource writes ignore status"
    );
    assert_eq!(
        main.metadata.generation,
        Some(1),
        "metadata changes do not bump generation"
    );
    let spec = jobs
        .patch(
            "job",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "nginx:1.25"}})),
        )
        .await
        .unwrap();
    assert_eq!(spec.metadata.generation, Some(2));

    // Both versions are served from one stored object.
    let v1alpha1: Api<prewarm_api::v1alpha1::ImagePullJob> = Api::default_namespaced(client.clone());
    assert_eq!(v1alpha1.get("job").await.unwrap().spec.image, "nginx:1.25");

    // Unknown fields are pruned by the structural schema, before admission.
    let pruned = jobs
        .patch(
            "job",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"notInSchema": 1}})),
        )
        .await
        .unwrap();
    let raw = serde_json::to_value(&pruned).unwrap();
    assert!(raw["spec"].get("notInSchema").is_none());
}

#[tokio::test]
async fn finalizers_and_garbage_collection() {
    let (_api, client) = start(Options::default()).await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut guarded = config_map("guarded", json!({}));
    guarded.metadata.finalizers = Some(vec!["example.com/cleanup".to_owned()]);
    maps.create(&PostParams::default(), &guarded).await.unwrap();
    maps.delete("guarded", &DeleteParams::default()).await.unwrap();
    let terminating = maps.get("guarded").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    maps.patch(
        "guarded",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(code(maps.get("guarded").await.unwrap_err()), 404);

    let owner = maps
        .create(&PostParams::default(), &config_map("owner", json!({})))
        .await
        .unwrap();
    let mut dependent = config_map("dependent", json!({}));
    dependent.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid, "controller": true
        }))
        .unwrap(),
    ]);
    maps.create(&PostParams::default(), &dependent).await.unwrap();
    maps.delete("owner", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        code(maps.get("dependent").await.unwrap_err()),
        404,
        "background deletion of dependents"
    );

    // Orphan propagation keeps the dependent and drops its owner reference.
    let owner = maps
        .create(&PostParams::default(), &config_map("owner-2", json!({})))
        .await
        .unwrap();
    let mut orphan = config_map("orphan", json!({}));
    orphan.metadata.owner_references = Some(vec![
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner-2", "uid": owner.metadata.uid
        }))
        .unwrap(),
    ]);
    maps.create(&PostParams::default(), &orphan).await.unwrap();
    maps.delete("owner-2", &DeleteParams::orphan()).await.unwrap();
    assert!(maps.get("orphan").await.unwrap().metadata.owner_references.is_none());
}

#[tokio::test]
async fn watcher_reflector_and_controller() {
    let (_api, client) = start(Options::default()).await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    maps.create(&PostParams::default(), &config_map("before", json!({"watched": "yes"})))
        .await
        .unwrap();

    // A reflector over a label-filtered watcher, with streaming lists (sendInitialEvents).
    let (reader, writer) = reflector::store::<ConfigMap>();
    let config = watcher::Config::default().labels("watched=yes").streaming_lists();
    let stream = reflector::reflector(writer, watcher(maps.clone(), config)).applied_objects();
    let watch_task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    assert_eq!(reader.state().len(), 1);
    maps.create(&PostParams::default(), &config_map("after", json!({"watched": "yes"})))
        .await
        .unwrap();
    maps.create(&PostParams::default(), &config_map("ignored", json!({})))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while reader.state().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(reader.state().len(), 2);
    watch_task.abort();

    // A controller that marks every ConfigMap it reconciles.
    let context = Arc::new(maps.clone());
    let controller = Controller::new(maps.clone(), watcher::Config::default())
        .run(
            |object: Arc<ConfigMap>, maps: Arc<Api<ConfigMap>>| async move {
                if object.annotations().get("reconciled").is_none() {
                    let patch = Patch::Merge(json!({"metadata": {"annotations": {"reconciled": "yes"}}}));
                    maps.patch(&object.name_any(), &PatchParams::default(), &patch).await?;
                }
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_, _, _| Action::requeue(Duration::from_secs(1)),
            context,
        )
        .for_each(|_| async {});
    let controller_task = tokio::spawn(controller);
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let all = maps.list(&ListParams::default()).await.unwrap();
            if all.items.iter().all(|m| m.annotations().get("reconciled").is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the controller reconciles every ConfigMap");
    controller_task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_without_a_resource_version_do_not_conflict() {
    let (_api, client) = start(Options::default()).await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    maps.create(&PostParams::default(), &config_map("racy", json!({})))
        .await
        .unwrap();
    let patches = (0..20).map(|i| {
        let maps = maps.clone();
        tokio::spawn(async move {
            let patch = json!({"data": {format!("k{i}"): "v"}});
            maps.patch("racy", &PatchParams::default(), &Patch::Merge(&patch)).await
        })
    });
    for result in futures_util::future::join_all(patches).await {
        result.unwrap().unwrap();
    }
    assert_eq!(maps.get("racy").await.unwrap().data.unwrap().len(), 21);
    // A patch that names an old resourceVersion still conflicts.
    let stale = json!({"metadata": {"resourceVersion": "1"}, "data": {"x": "y"}});
    let error = maps
        .patch("racy", &PatchParams::default(), &Patch::Merge(&stale))
        .await
        .unwrap_err();
    assert_eq!(code(error), 409);
}

/// kube-apiserver validates custom resources against the CRD's structural
/// schema on every write, main resource and `/status`, in its own words.
#[tokio::test]
async fn custom_resources_are_validated_against_their_schema() {
    let (_api, client) = start(Options::default()).await;
    apply_crds(&client).await;
    let resource = kube::discovery::ApiResource::erase::<ImagePullJob>(&());
    let jobs: Api<kube::api::DynamicObject> = Api::default_namespaced_with(client.clone(), &resource);
    let job = |name: &str, spec: serde_json::Value| -> kube::api::DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
            "metadata": {"name": name}, "spec": spec
        }))
        .unwrap()
    };
    let refused = |error: kube::Error| match error {
        kube::Error::Api(status) => (status.code, status.message),
        other => panic!("not an API error: {other}"),
    };

    let error = jobs
        .create(
            &PostParams::default(),
            &job("no-image", json!({"completionPolicy": {"type": "Always"}})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused(error),
        (
            422,
            r#"ImagePullJob.apps.kruise.io "no-image" is invalid: spec.image: Required value"#.to_owned()
        )
    );
    let error = jobs
        .create(
            &PostParams::default(),
            &job(
                "bad-timeout",
                json!({"image": "nginx", "completionPolicy": {}, "pullPolicy": {"timeoutSeconds": "abc"}}),
            ),
        )
        .await
        .unwrap_err();
    let (code, message) = refused(error);
    assert_eq!(code, 422);
    assert!(
        message.contains(r#"spec.pullPolicy.timeoutSeconds: Invalid value: "string": spec.pullPolicy.timeoutSeconds in body must be of type integer: "string""#),
        "{message}"
    );

    jobs.create(
        &PostParams::default(),
        &job("good", json!({"image": "nginx", "completionPolicy": {}})),
    )
    .await
    .unwrap();
    let error = jobs
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"parallelism": true}})),
        )
        .await
        .unwrap_err();
    assert_eq!(refused(error).0, 422, "a patch is validated as the whole object");
    let error = jobs
        .patch_status(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": 1}})),
        )
        .await
        .unwrap_err();
    let (code, message) = refused(error);
    assert_eq!(code, 422);
    assert!(message.contains("status.desired: Required value"), "{message}");
    // A non-nullable null is dropped while decoding, as if it were not sent.
    let pruned = jobs
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"parallelism": null, "selector": null}})),
        )
        .await
        .unwrap();
    assert!(pruned.data["spec"].get("selector").is_none());
}
