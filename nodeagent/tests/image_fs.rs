//! The node agent refuses to start a pull on an image filesystem fuller than
//! `--max-image-fs-usage`: the agent in-process against the test API server and
//! a fake CRI that reports a real directory as its image filesystem.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::cluster::{cluster, create_node_image, set_images, start_agent_with, tag, wait_for_events, wait_until};
use common::{Behaviour, serve};
use prewarm_nodeagent::cri::Cri;
use prewarm_nodeagent::health::AgentMetrics;
use prewarm_nodeagent::image_fs::UsageLimit;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pull_starts_on_an_image_filesystem_above_the_limit() {
    let (_api_server, client, node_images) = cluster().await;
    let owned = |version| {
        let mut owned = tag("1.0", version);
        owned["ownerReferences"] = json!([{"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
            "name": "big", "namespace": "default", "uid": "u1"}]);
        json!({"127.0.0.1:5001/team/huge": {"tags": [owned]}})
    };
    create_node_image(&node_images, owned(0)).await;
    // A real directory: its filesystem (this machine's) is surely more than 1 % full.
    let disk = tempfile::tempdir().unwrap();
    let fake = serve(Behaviour {
        image_fs: Some((disk.path().display().to_string(), 30 << 20)),
        ..Behaviour::default()
    })
    .await;
    let cri = Cri::connect(&fake.socket).await.unwrap();
    let metrics = Arc::new(AgentMetrics::default());
    let one_percent = UsageLimit::parse("1").unwrap();
    let (stop, agent) = start_agent_with(&client, &cri, &metrics, one_percent);
    let done = wait_until(&node_images, "the refusal", |s| s["failed"] == 1).await;
    let message = done["imageStatuses"]["127.0.0.1:5001/team/huge"]["tags"][0]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(&format!("the image filesystem {} is", disk.path().display()))
            && message.contains("above the node agent's --max-image-fs-usage of 1%"),
        "{message}"
    );
    assert!(fake.behaviour.pulls.lock().unwrap().is_empty(), "nothing was pulled");
    let found = wait_for_events(&client, "default", "PullImageFailed on the job", |e| {
        e.iter()
            .any(|(name, reason, _)| name == "big" && reason == "PullImageFailed")
    })
    .await;
    assert!(
        found.iter().any(|(_, _, m)| m.contains("--max-image-fs-usage")),
        "{found:#?}"
    );
    let exposed = metrics.render();
    let usage = exposed
        .lines()
        .find_map(|l| l.strip_prefix("prewarm_nodeagent_image_fs_usage_ratio "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(usage > 0.01 && usage <= 1.0, "{exposed}");
    assert!(
        exposed.contains("prewarm_nodeagent_pulls_total{result=\"refused\"} 1"),
        "{exposed}"
    );
    stop.send(()).unwrap();
    agent.await.unwrap();

    // Below the limit (100 %: off) the same tag, at a new version, is pulled.
    let metrics = Arc::new(AgentMetrics::default());
    let (stop, agent) = start_agent_with(&client, &cri, &metrics, UsageLimit::parse("100").unwrap());
    set_images(&node_images, owned(1)).await;
    wait_until(&node_images, "the pull", |s| s["succeeded"] == 1).await;
    stop.send(()).unwrap();
    agent.await.unwrap();
}
