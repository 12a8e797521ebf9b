//! The stand-in's own knobs, driven by kube-rs: a short watch history
//! (410 Gone), injected write faults and latency, dropped watches, TLS and
//! preloaded manifests, raw metadata-only reads. These have no counterpart on
//! a real cluster, so unlike `conformance.rs` they run against the stand-in only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{code, config_map};
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use prewarm_api::v1beta1::ImagePullJob;
use prewarm_testapi::{Options, TestApi};
use serde_json::json;

async fn start(options: Options) -> (TestApi, Client) {
    let api = TestApi::start(options).await.unwrap();
    let mut config = kube::Config::new(api.url().parse().unwrap());
    config.default_namespace = "default".to_owned();
    (api, Client::try_from(config).unwrap())
}

#[tokio::test]
async fn watches_resume_and_expire() {
    let (api, client) = start(Options {
        history: 20,
        ..Options::default()
    })
    .await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let first = maps
        .create(&PostParams::default(), &config_map("w0", json!({})))
        .await
        .unwrap();
    let from = first.resource_version().unwrap();
    maps.create(&PostParams::default(), &config_map("w1", json!({})))
        .await
        .unwrap();
    maps.delete("w0", &DeleteParams::default()).await.unwrap();
    // Resuming from a resourceVersion replays what came after it.
    let stream = maps.watch(&WatchParams::default().timeout(1), &from).await.unwrap();
    let events: Vec<WatchEvent<ConfigMap>> = stream.take(2).try_collect().await.unwrap();
    let names: Vec<(String, String)> = events
        .iter()
        .map(|e| match e {
            WatchEvent::Added(o) => ("ADDED".to_owned(), o.name_any()),
            WatchEvent::Deleted(o) => ("DELETED".to_owned(), o.name_any()),
            other => (format!("{other:?}"), String::new()),
        })
        .collect();
    assert_eq!(
        names,
        [
            ("ADDED".to_owned(), "w1".to_owned()),
            ("DELETED".to_owned(), "w0".to_owned())
        ]
    );
    // Past the kept history, the server answers 410 Gone.
    for i in 0..30 {
        maps.patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let mut stream = maps
        .watch(&WatchParams::default().timeout(1), &from)
        .await
        .unwrap()
        .boxed();
    match stream.next().await.unwrap().unwrap() {
        WatchEvent::Error(status) => assert_eq!(status.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
    assert!(api.store.resource_version() > 30);
}

#[tokio::test]
async fn pods_by_node_and_injected_faults() {
    let (api, client) = start(Options::default()).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    for (name, node) in [("a", "node-1"), ("b", "node-2"), ("c", "node-1")] {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})).unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let on_node_1 = pods
        .list(&ListParams::default().fields("spec.nodeName=node-1"))
        .await
        .unwrap();
    assert_eq!(on_node_1.items.len(), 2);
    assert_eq!(
        code(
            pods.list(&ListParams::default().fields("spec.unknown=x"))
                .await
                .unwrap_err()
        ),
        400
    );

    api.store.inject_write_faults(2, 500);
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    assert_eq!(
        code(
            maps.create(&PostParams::default(), &config_map("f1", json!({})))
                .await
                .unwrap_err()
        ),
        500
    );
    assert_eq!(
        code(
            maps.create(&PostParams::default(), &config_map("f2", json!({})))
                .await
                .unwrap_err()
        ),
        500
    );
    maps.create(&PostParams::default(), &config_map("f3", json!({})))
        .await
        .unwrap();
    let counts = api.store.counts();
    assert_eq!(counts.get("create /configmaps"), Some(&3));
    assert_eq!(counts.get("list /pods"), Some(&2));
}

#[tokio::test]
async fn watchers_recover_from_dropped_connections_and_latency() {
    let (api, client) = start(Options::default()).await;
    let maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector::reflector(writer, watcher(maps.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    let watches = || api.store.counts().get("watch /configmaps").copied().unwrap_or(0);
    tokio::time::timeout(Duration::from_secs(5), async {
        while watches() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    api.store.drop_watches();
    api.store.inject_latency(Duration::from_millis(30));
    maps.create(&PostParams::default(), &config_map("after-drop", json!({})))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while reader
            .get(&reflector::ObjectRef::new("after-drop").within(client.default_namespace()))
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the watcher reconnects and sees the new object");
    assert!(
        watches() >= 2,
        "the dropped watch was not re-established: {:?}",
        api.store.counts()
    );
    task.abort();
}

#[tokio::test]
async fn https_and_preloaded_manifests() {
    let api = TestApi::start(Options {
        tls: true,
        ..Options::default()
    })
    .await
    .unwrap();
    assert!(api.url().starts_with("https://"));
    let ca = api.ca_pem.clone().unwrap();
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap();
    let mut config = kube::Config::new(api.url().parse().unwrap());
    config.root_cert = Some(vec![der.to_vec()]);
    let client = Client::try_from(config).unwrap();
    let loaded = api
        .load_manifests(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../manifests/crds"
        )))
        .unwrap();
    assert_eq!(loaded, 4);
    let jobs: Api<ImagePullJob> = Api::all(client);
    assert!(jobs.list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_reads_carry_no_data() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::core::PartialObjectMeta;
    let (api, client) = start(Options::default()).await;
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "s", "annotations": {"a": "b"}},
        "data": {"password": "c2VjcmV0"}}))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    let metadata: Api<PartialObjectMeta<Secret>> = Api::default_namespaced(client.clone());
    let listed = metadata.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].metadata.annotations.as_ref().unwrap()["a"], "b");
    let one = metadata.get("s").await.unwrap();
    assert_eq!(
        one.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );

    // On the wire: no data in a metadata list, get or watch.
    let url = |query: &str| format!("{}/api/v1/namespaces/default/secrets{query}", api.url());
    for (path, accept) in [
        (
            url(""),
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        ),
        (
            url("/s"),
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        ),
        (
            url("?watch=true&timeoutSeconds=1"),
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        ),
    ] {
        let output = std::process::Command::new("curl")
            .args(["-s", "--max-time", "3", "-H", &format!("Accept: {accept}"), &path])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&output.stdout);
        assert!(body.contains("PartialObjectMetadata"), "{path}: {body}");
        assert!(!body.contains("c2VjcmV0"), "{path} leaks data: {body}");
    }
}
