//! The node agent's `run` against the test API server: a cluster with the
//! CRDs, an agent started in-process for `node-1`, and what tests read back.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use prewarm_api::v1beta1::NodeImage;
use prewarm_nodeagent::agent::{self, AgentConfig};
use prewarm_nodeagent::cri::Cri;
use prewarm_nodeagent::health::AgentMetrics;
use prewarm_nodeagent::image_fs::UsageLimit;
use prewarm_nodeagent::puller::Backoff;
use prewarm_testapi::{Options, TestApi};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn start_agent(client: &Client, cri: &Cri, metrics: &Arc<AgentMetrics>) -> (oneshot::Sender<()>, JoinHandle<()>) {
    start_agent_with(client, cri, metrics, UsageLimit::DEFAULT)
}

pub fn start_agent_with(
    client: &Client,
    cri: &Cri,
    metrics: &Arc<AgentMetrics>,
    max_image_fs_usage: UsageLimit,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let config = AgentConfig {
        node_name: "node-1".into(),
        metrics: metrics.clone(),
        plugins: None,
        max_concurrent_pulls: 2,
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
        status_interval: Duration::from_millis(50),
        secret_namespace: "kruise-daemon-config".into(),
        max_image_fs_usage,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(agent::run(client.clone(), cri.clone(), config, async move {
        let _ = stopped.await;
    }));
    (stop, handle)
}

pub async fn status(api: &Api<NodeImage>) -> Value {
    serde_json::to_value(api.get("node-1").await.unwrap().status).unwrap()
}

pub async fn wait_until(api: &Api<NodeImage>, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let started = std::time::Instant::now();
    loop {
        let status = status(api).await;
        if condition(&status) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}; status: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn cluster() -> (TestApi, Client, Api<NodeImage>) {
    let api_server = TestApi::start(Options::default()).await.unwrap();
    api_server
        .load_manifests(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/crds")))
        .unwrap();
    let client = Client::try_from(kube::Config::new(api_server.url().parse().unwrap())).unwrap();
    let node_images = Api::all(client.clone());
    (api_server, client, node_images)
}

pub async fn create_node_image(node_images: &Api<NodeImage>, images: Value) {
    let node_image: NodeImage = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage", "metadata": {"name": "node-1"},
        "spec": {"images": images}
    }))
    .unwrap();
    node_images.create(&PostParams::default(), &node_image).await.unwrap();
}

pub async fn set_images(node_images: &Api<NodeImage>, images: Value) {
    let patch = json!({"spec": {"images": images}});
    node_images
        .patch("node-1", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// Events in `namespace` as (involved object name, reason, message).
pub async fn events(client: &Client, namespace: &str) -> Vec<(String, String, String)> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| {
            (
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

pub async fn wait_for_events(
    client: &Client,
    namespace: &str,
    what: &str,
    condition: impl Fn(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    let started = std::time::Instant::now();
    loop {
        let found = events(client, namespace).await;
        if condition(&found) {
            return found;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}; events: {found:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn tag(tag: &str, version: i64) -> Value {
    json!({"tag": tag, "version": version, "createdAt": "2026-11-25T10:00:00Z", "imagePullPolicy": "Always",
           "pullPolicy": {"ttlSecondsAfterFinished": 300, "timeoutSeconds": 5, "backoffLimit": 1}})
}
