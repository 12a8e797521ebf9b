//! NodeImage `/status` writes as the API server sends them for review: a node
//! agent's token names its node in `userInfo.extra`, and only that node's
//! NodeImage, with entries for the tags its spec asks for, is accepted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::Service;
use hyper::{Request, StatusCode};
use prewarm_api::admission::Policy;
use prewarm_api::gates::FeatureGates;
use prewarm_webhook::admit::{Admission, AdmitState};
use prewarm_webhook::limits::LimitsConfig;
use prewarm_webhook::metrics::Metrics;
use serde_json::{Value, json};

const AGENT: &str = "system:serviceaccount:prewarm-nodeagent:prewarm-nodeagent";

async fn review(node_agent: Option<&str>, node_image: &str, user_info: Value, status: Value) -> Value {
    let policy = Policy {
        node_agent: node_agent.map(str::to_owned),
        ..Policy::gates(FeatureGates::default())
    };
    let state = Arc::new(AdmitState::new(
        policy,
        Arc::new(Metrics::default()),
        &LimitsConfig::default(),
    ));
    let object = |status: Value| {
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "NodeImage",
               "metadata": {"name": node_image, "resourceVersion": "7"},
               "spec": {"images": {"nginx": {"tags": [{"tag": "1.25", "version": 0}, {"tag": "1.26"}]}}},
               "status": status})
    };
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "3b6f1f6e-0000-4000-8000-000000000001",
        "kind": {"group": "apps.kruise.io", "version": "v1alpha1", "kind": "NodeImage"},
        "resource": {"group": "apps.kruise.io", "version": "v1alpha1", "resource": "nodeimages"},
        "subResource": "status", "name": node_image, "operation": "UPDATE", "userInfo": user_info,
        "object": object(status), "oldObject": object(json!({"desired": 2})),
        "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}, "dryRun": false}});
    let request = Request::post("/validate-apps-kruise-io-nodeimage")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = Admission::new(state).call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    answer["response"].clone()
}

/// `userInfo` of a token bound to a Pod on `node`, as kube-apiserver fills it
/// (ServiceAccountTokenPodNodeInfo, Kubernetes 1.30+).
fn agent_on(node: &str) -> Value {
    json!({"username": AGENT, "uid": "0f9a", "groups": ["system:serviceaccounts",
            "system:serviceaccounts:prewarm-nodeagent", "system:authenticated"],
           "extra": {"authentication.kubernetes.io/credential-id": ["JTI=5d1c"],
                     "authentication.kubernetes.io/node-name": [node],
                     "authentication.kubernetes.io/node-uid": ["9e1b"],
                     "authentication.kubernetes.io/pod-name": ["prewarm-nodeagent-x7k2p"],
                     "authentication.kubernetes.io/pod-uid": ["77aa"]}})
}

fn pulling(tags: &[&str]) -> Value {
    let tags: Vec<Value> = tags
        .iter()
        .map(|t| json!({"tag": t, "phase": "Pulling", "version": 0}))
        .collect();
    json!({"desired": 2, "pulling": tags.len(), "imageStatuses": {"nginx": {"tags": tags}}})
}

#[tokio::test]
async fn an_agent_writes_its_own_node_s_status() {
    let answer = review(Some(AGENT), "node-a", agent_on("node-a"), pulling(&["1.25", "1.26"])).await;
    assert_eq!(answer["allowed"], true, "{answer}");
}

#[tokio::test]
async fn an_agent_is_refused_on_another_node_s_status() {
    let answer = review(Some(AGENT), "node-b", agent_on("node-a"), pulling(&["1.25"])).await;
    assert_eq!(answer["allowed"], false, "{answer}");
    assert_eq!(answer["status"]["code"], 403, "{answer}");
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("on node \"node-a\" may not write the status of NodeImage \"node-b\""),
        "{message}"
    );
}

#[tokio::test]
async fn an_agent_token_without_a_node_is_refused_and_told_why() {
    let unbound = json!({"username": AGENT, "groups": ["system:serviceaccounts"]});
    let answer = review(Some(AGENT), "node-a", unbound, pulling(&["1.25"])).await;
    assert_eq!(answer["status"]["code"], 403, "{answer}");
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(message.contains("authentication.kubernetes.io/node-name"), "{message}");
    assert!(message.contains("Kubernetes 1.30"), "{message}");
    // Two node names are as good as none: the token does not say which node.
    let mut doubled = agent_on("node-a");
    doubled["extra"]["authentication.kubernetes.io/node-name"] = json!(["node-a", "node-b"]);
    let answer = review(Some(AGENT), "node-a", doubled, pulling(&["1.25"])).await;
    assert_eq!(answer["status"]["code"], 403, "{answer}");
}

#[tokio::test]
async fn an_agent_reports_only_on_what_the_spec_asks_for() {
    let mut status = pulling(&["1.25", "1.25", "9.9"]);
    status["imageStatuses"]["evil.example/everything"] = json!({"tags": [{"tag": "x", "phase": "Succeeded"}]});
    status["imageStatuses"]["nginx"]["tags"][0]["message"] = json!("m".repeat(1025));
    let answer = review(Some(AGENT), "node-a", agent_on("node-a"), status).await;
    assert_eq!(answer["status"]["code"], 422, "{answer}");
    let fields: Vec<&str> = answer["status"]["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "status.imageStatuses[evil.example/everything]",
            "status.imageStatuses[nginx].tags[0].message",
            "status.imageStatuses[nginx].tags[1].tag",
            "status.imageStatuses[nginx].tags[2].tag",
        ],
        "{answer}"
    );
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(message.contains("Duplicate value: \"1.25\""), "{message}");
    assert!(
        message.contains("Invalid value: \"9.9\": not a tag of spec.images[\"nginx\"].tags"),
        "{message}"
    );
    // A status that is not a status at all.
    let answer = review(
        Some(AGENT),
        "node-a",
        agent_on("node-a"),
        json!({"imageStatuses": [1, 2]}),
    )
    .await;
    assert_eq!(answer["status"]["code"], 422, "{answer}");
}

#[tokio::test]
async fn other_writers_and_unconfigured_webhooks_are_not_held_to_a_node() {
    let admin = json!({"username": "kubernetes-admin", "groups": ["system:masters"]});
    let answer = review(Some(AGENT), "node-b", admin, pulling(&["1.25"])).await;
    assert_eq!(answer["allowed"], true, "{answer}");
    let answer = review(None, "node-b", agent_on("node-a"), pulling(&["1.25"])).await;
    assert_eq!(answer["allowed"], true, "{answer}");
}
