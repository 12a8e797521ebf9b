//! `prewarm-nodeagent run` logic against the test API server and a fake CRI:
//! a NodeImage spec leads to the expected status, a restarted agent does not
//! pull finished tags again, a bumped version pulls again, and a tag removed
//! mid-pull is stopped quietly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::cluster::{cluster, create_node_image, set_images, start_agent, status, tag, wait_for_events, wait_until};
use common::{Behaviour, serve};
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use prewarm_api::v1beta1::NodeImage;
use prewarm_nodeagent::cri::Cri;
use prewarm_nodeagent::health::AgentMetrics;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_image_spec_to_status_with_resume_and_cancellation() {
    let (_api_server, client, node_images) = cluster().await;
    let node_image: NodeImage = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage", "metadata": {"name": "node-1"},
        "spec": {"images": {"nginx": {"tags": [tag("1.25", 1), tag("1.26", 1)]}}}
    }))
    .unwrap();
    node_images.create(&PostParams::default(), &node_image).await.unwrap();
    let fake = serve(Behaviour {
        pull_delay_ms: 100.into(),
        ..Behaviour::default()
    })
    .await;
    let cri = Cri::connect(&fake.socket).await.unwrap();

    let metrics = Arc::new(AgentMetrics::default());
    let (stop, agent) = start_agent(&client, &cri, &metrics);
    let done = wait_until(&node_images, "both tags pulled", |s| s["succeeded"] == 2).await;
    assert_eq!(
        (
            done["desired"].as_i64(),
            done["failed"].as_i64(),
            done["pulling"].as_i64(),
            done["waiting"].as_i64()
        ),
        (Some(2), Some(0), Some(0), Some(0))
    );
    for entry in done["imageStatuses"]["nginx"]["tags"].as_array().unwrap() {
        assert_eq!(entry["phase"], "Succeeded");
        assert_eq!(entry["version"], 1);
        assert_eq!(entry["imageID"], "nginx@sha256:pulled");
        assert!(
            entry["startTime"].is_string() && entry["completionTime"].is_string(),
            "{entry}"
        );
    }
    let pulled: Vec<String> = fake
        .behaviour
        .pulls
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.image.clone().unwrap().image)
        .collect();
    assert_eq!(pulled.len(), 2);
    assert!(
        pulled.contains(&"docker.io/library/nginx:1.25".to_owned()),
        "{pulled:?}"
    );
    let text = metrics.render();
    assert!(
        text.contains(r#"prewarm_nodeagent_pulls_total{result="pulled"} 2"#),
        "{text}"
    );
    assert!(text.contains("prewarm_nodeagent_pulls_in_flight 0"), "{text}");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let started = std::time::Instant::now();
    let reasons = loop {
        let reasons: Vec<String> = events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        if reasons.len() >= 2 || started.elapsed() > Duration::from_secs(5) {
            break reasons;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(reasons, ["PullImageSucceed", "PullImageSucceed"]);

    // A restarted agent resumes from the stored status: finished tags are not pulled again.
    stop.send(()).unwrap();
    agent.await.unwrap();
    let (stop, agent) = start_agent(&client, &cri, &metrics);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        fake.behaviour.pulls.lock().unwrap().len(),
        2,
        "finished tags were pulled again after a restart"
    );
    assert_eq!(status(&node_images).await["succeeded"], 2);

    // A bumped version pulls again.
    let patch = json!({"spec": {"images": {"nginx": {"tags": [tag("1.25", 2), tag("1.26", 1)]}}}});
    node_images
        .patch("node-1", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    wait_until(&node_images, "version 2 pulled", |s| {
        s["imageStatuses"]["nginx"]["tags"].as_array().is_some_and(|t| {
            t.iter()
                .any(|e| e["tag"] == "1.25" && e["version"] == 2 && e["phase"] == "Succeeded")
        })
    })
    .await;
    assert_eq!(fake.behaviour.pulls.lock().unwrap().len(), 3);

    // A tag removed while it is being pulled is stopped quietly: no failure is reported.
    fake.behaviour.pull_delay_ms.store(30_000, Ordering::SeqCst);
    let patch = json!({"spec": {"images": {"nginx": {"tags": [tag("1.25", 2), tag("1.26", 1), tag("1.27", 0)]}}}});
    node_images
        .patch("node-1", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    wait_until(&node_images, "1.27 pulling", |s| s["pulling"] == 1).await;
    let patch = json!({"spec": {"images": {"nginx": {"tags": [tag("1.25", 2), tag("1.26", 1)]}}}});
    node_images
        .patch("node-1", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let after = wait_until(&node_images, "1.27 gone", |s| s["desired"] == 2 && s["pulling"] == 0).await;
    assert_eq!(
        (after["failed"].as_i64(), after["succeeded"].as_i64()),
        (Some(0), Some(2)),
        "{after:#}"
    );
    assert!(!after.to_string().contains("1.27"), "{after:#}");
    assert!(
        metrics.render().contains("prewarm_nodeagent_pulls_in_flight 0"),
        "a stopped pull still counts as in flight"
    );

    stop.send(()).unwrap();
    agent.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_named_by_the_node_image_are_used() {
    let (api_server, client, _) = cluster().await;
    let config = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        r#"{"auths":{"127.0.0.1:5001":{"username":"ci","password":"secret"}}}"#,
    );
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "registry", "namespace": "kruise-daemon-config"},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": config}
    }))
    .unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "kruise-daemon-config"}})).unwrap(),
        )
        .await
        .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "kruise-daemon-config")
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let node_images: Api<NodeImage> = Api::all(client.clone());
    let node_image: NodeImage = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage", "metadata": {"name": "node-1"},
        "spec": {"images": {"127.0.0.1:5001/team/app": {
            "pullSecrets": [{"namespace": "kruise-daemon-config", "name": "registry", "mode": "batch"}],
            "tags": [tag("1.0", 0), tag("1.1", 0)]
        }}}
    }))
    .unwrap();
    node_images.create(&PostParams::default(), &node_image).await.unwrap();
    let fake = serve(Behaviour {
        accepted_users: vec!["ci".into()],
        ..Behaviour::default()
    })
    .await;
    let cri = Cri::connect(&fake.socket).await.unwrap();
    let metrics = Arc::new(AgentMetrics::default());
    let (stop, agent) = start_agent(&client, &cri, &metrics);
    let done = wait_until(&node_images, "the private image", |s| {
        s["succeeded"].as_i64().unwrap_or(0) + s["failed"].as_i64().unwrap_or(0) == 2
    })
    .await;
    assert_eq!(done["succeeded"], 2, "{done:#}");
    let reads = api_server.store.counts().get("get /secrets").copied();
    assert_eq!(
        reads,
        Some(1),
        "the secret is read once and cached: {:?}",
        api_server.store.counts()
    );
    let auth = fake.behaviour.pulls.lock().unwrap()[0].auth.clone().unwrap();
    assert_eq!((auth.username.as_str(), auth.password.as_str()), ("ci", "secret"));
    assert!(!done.to_string().contains("secret\""), "no credentials in the status");
    stop.send(()).unwrap();
    agent.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_equals_what_the_agent_computed() {
    let (_api_server, client, node_images) = cluster().await;
    // A deadline too far away to add to a clock must not stall the tag.
    let mut far = tag("7", 0);
    far["pullPolicy"]["activeDeadlineSeconds"] = json!(i64::MAX);
    create_node_image(
        &node_images,
        json!({"nginx": {"tags": [tag("1.25", 0)]}, "redis": {"tags": [far]}}),
    )
    .await;
    let fake = serve(Behaviour::default()).await;
    let cri = Cri::connect(&fake.socket).await.unwrap();
    let (stop, agent) = start_agent(&client, &cri, &Arc::new(AgentMetrics::default()));
    wait_until(&node_images, "both images pulled", |s| s["succeeded"] == 2).await;

    set_images(&node_images, json!({"redis": null})).await;
    let one = wait_until(&node_images, "redis gone from the status", |s| s["desired"] == 1).await;
    assert!(one["imageStatuses"]["redis"].is_null(), "{one:#}");
    assert_eq!(one["imageStatuses"]["nginx"]["tags"][0]["phase"], "Succeeded");

    set_images(&node_images, json!(null)).await;
    let none = wait_until(&node_images, "an empty status", |s| s["desired"] == 0).await;
    assert!(none["imageStatuses"].is_null(), "{none:#}");
    stop.send(()).unwrap();
    agent.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_node_image_is_not_written_again() {
    let (api_server, client, node_images) = cluster().await;
    create_node_image(&node_images, json!({"nginx": {"tags": [tag("1.25", 0)]}})).await;
    let fake = serve(Behaviour::default()).await;
    let cri = Cri::connect(&fake.socket).await.unwrap();
    let (stop, agent) = start_agent(&client, &cri, &Arc::new(AgentMetrics::default()));
    wait_until(&node_images, "the image pulled", |s| s["succeeded"] == 1).await;
    node_images.delete("node-1", &Default::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    api_server.store.reset_counts();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let writes: u64 = api_server
        .store
        .counts()
        .iter()
        .filter(|(k, _)| {
            k.ends_with("apps.kruise.io/nodeimages")
                && !k.starts_with("watch")
                && !k.starts_with("get")
                && !k.starts_with("list")
        })
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        writes,
        0,
        "the agent kept writing a deleted NodeImage: {:?}",
        api_server.store.counts()
    );

    // Created again, it is served again.
    create_node_image(&node_images, json!({"nginx": {"tags": [tag("1.25", 1)]}})).await;
    wait_until(&node_images, "the image pulled again", |s| s["succeeded"] == 1).await;
    stop.send(()).unwrap();
    agent.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_reach_the_owning_jobs_and_foreign_secrets_are_refused() {
    let (api_server, client, node_images) = cluster().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let team = serde_json::from_value(json!({"metadata": {"name": "team"}})).unwrap();
    namespaces.create(&PostParams::default(), &team).await.unwrap();
    let mut owned = tag("1.0", 0);
    owned["ownerReferences"] = json!([{"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
        "namespace": "team", "name": "job-1", "uid": "u-1"}]);
    create_node_image(
        &node_images,
        json!({
            "127.0.0.1:5001/team/app": {"pullSecrets": [{"namespace": "team", "name": "registry"}], "tags": [owned.clone()]},
            "Not_A_Valid/Reference": {"tags": [owned]},
        }),
    )
    .await;
    let fake = serve(Behaviour {
        accepted_users: vec!["ci".into()],
        ..Behaviour::default()
    })
    .await;
    let cri = Cri::connect(&fake.socket).await.unwrap();
    let (stop, agent) = start_agent(&client, &cri, &Arc::new(AgentMetrics::default()));
    let done = wait_until(&node_images, "both tags failed", |s| s["failed"] == 2).await;
    let invalid = &done["imageStatuses"]["Not_A_Valid/Reference"]["tags"][0];
    assert!(
        invalid["message"].as_str().unwrap().contains("invalid image"),
        "{done:#}"
    );

    let on_job = wait_for_events(&client, "team", "failures on the job", |e| e.len() >= 2).await;
    assert!(
        on_job
            .iter()
            .all(|(name, reason, _)| name == "job-1" && reason == "PullImageFailed"),
        "{on_job:#?}"
    );
    let on_node = wait_for_events(&client, "default", "the refused secret", |e| {
        e.iter().any(|(_, reason, _)| reason == "PullSecretRefused")
    })
    .await;
    let refused = on_node
        .iter()
        .find(|(_, reason, _)| reason == "PullSecretRefused")
        .unwrap();
    assert!(
        refused.2.contains("team/registry") && refused.2.contains("kruise-daemon-config"),
        "{refused:?}"
    );
    assert_eq!(
        on_node.iter().filter(|(_, r, _)| r == "PullImageFailed").count(),
        2,
        "{on_node:#?}"
    );
    let reads: Vec<_> = api_server
        .store
        .counts()
        .into_iter()
        .filter(|(k, _)| k.ends_with("/secrets"))
        .collect();
    assert!(
        reads.is_empty(),
        "secrets outside the agent's namespace were read: {reads:?}"
    );
    assert!(fake.behaviour.pulls.lock().unwrap().iter().all(|p| p.auth.is_none()));
    stop.send(()).unwrap();
    agent.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_written_by_the_controller_is_adopted() {
    let (_api_server, client, node_images) = cluster().await;
    create_node_image(&node_images, json!({"nginx": {"tags": [tag("1.25", 1)]}})).await;
    let fake = serve(Behaviour {
        pull_delay_ms: 30_000.into(),
        ..Behaviour::default()
    })
    .await;
    let cri = Cri::connect(&fake.socket).await.unwrap();
    let metrics = Arc::new(AgentMetrics::default());
    let (stop, agent) = start_agent(&client, &cri, &metrics);
    wait_until(&node_images, "pulling", |s| s["pulling"] == 1).await;
    let verdict = json!({"status": {"desired": 1, "failed": 1, "succeeded": 0, "pulling": 0, "waiting": 0,
        "imageStatuses": {"nginx": {"tags": [{"tag": "1.25", "version": 1, "phase": "Failed",
            "completionTime": "2026-11-29T10:00:00Z", "message": "the node did not answer within 600s"}]}}}});
    node_images
        .patch_status("node-1", &PatchParams::default(), &Patch::Merge(verdict))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while !metrics.render().contains("prewarm_nodeagent_pulls_in_flight 0") {
        assert!(started.elapsed() < Duration::from_secs(5), "the pull was not stopped");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = status(&node_images).await;
    assert_eq!(
        after["imageStatuses"]["nginx"]["tags"][0]["phase"], "Failed",
        "{after:#}"
    );
    assert_eq!(after["failed"], 1, "{after:#}");
    stop.send(()).unwrap();
    agent.await.unwrap();
}

/// Credentials are a tenant's, not an image's: on an entry that lists two
/// tenants' copies, a tag owned by team-b's job is pulled with team-b's copy
/// only, never team-a's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_is_pulled_only_with_its_owners_copies() {
    let (_api_server, client, _) = cluster().await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "kruise-daemon-config"}})).unwrap(),
        )
        .await
        .unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), "kruise-daemon-config");
    for (copy, source, user) in [("copy-a", "team-a/regcred", "a"), ("copy-b", "team-b/regcred", "b")] {
        let config = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            json!({"auths": {"127.0.0.1:5001": {"username": user, "password": "pw"}}}).to_string(),
        );
        let secret = serde_json::from_value(json!({
            "metadata": {"name": copy, "namespace": "kruise-daemon-config",
                "annotations": {"imagepulljobs.kruise.io/source-key": source}},
            "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": config}
        }))
        .unwrap();
        secrets.create(&PostParams::default(), &secret).await.unwrap();
    }
    let owned_by = |namespace: &str, tag_name: &str| {
        let mut tag = tag(tag_name, 0);
        tag["ownerReferences"] = json!([{"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
            "namespace": namespace, "name": "job", "uid": format!("{namespace}-uid")}]);
        tag
    };
    let node_images: Api<NodeImage> = Api::all(client.clone());
    let node_image: NodeImage = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage", "metadata": {"name": "node-1"},
        "spec": {"images": {"127.0.0.1:5001/shared/app": {
            "pullSecrets": [{"namespace": "kruise-daemon-config", "name": "copy-a", "mode": "batch"},
                            {"namespace": "kruise-daemon-config", "name": "copy-b", "mode": "batch"}],
            "tags": [owned_by("team-b", "b1")]
        }}}
    }))
    .unwrap();
    node_images.create(&PostParams::default(), &node_image).await.unwrap();
    // The registry would take either tenant's credentials.
    let fake = serve(Behaviour {
        accepted_users: vec!["a".into(), "b".into()],
        ..Behaviour::default()
    })
    .await;
    let cri = Cri::connect(&fake.socket).await.unwrap();
    let metrics = Arc::new(AgentMetrics::default());
    let (stop, agent) = start_agent(&client, &cri, &metrics);
    let done = wait_until(&node_images, "team-b's tag", |s| s["succeeded"].as_i64() == Some(1)).await;
    assert_eq!(done["succeeded"], 1, "{done:#}");
    let users: Vec<String> = fake
        .behaviour
        .pulls
        .lock()
        .unwrap()
        .iter()
        .filter_map(|p| p.auth.as_ref().map(|a| a.username.clone()))
        .collect();
    assert_eq!(users, ["b"], "team-a's credentials were offered for team-b's tag");
    stop.send(()).unwrap();
    agent.await.unwrap();
}

/// With two pull slots and three tags to pull, one pull waits: the metrics
/// say so while it does, and nothing waits once all are pulled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_waiting_for_a_slot_is_counted_until_it_starts() {
    let (_api_server, client, node_images) = cluster().await;
    let node_image: NodeImage = serde_json::from_value(json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage", "metadata": {"name": "node-1"},
        "spec": {"images": {"nginx": {"tags": [tag("1.25", 1), tag("1.26", 1), tag("1.27", 1)]}}}
    }))
    .unwrap();
    node_images.create(&PostParams::default(), &node_image).await.unwrap();
    let fake = serve(Behaviour {
        pull_delay_ms: 1500.into(),
        ..Behaviour::default()
    })
    .await;
    let cri = Cri::connect(&fake.socket).await.unwrap();
    let metrics = Arc::new(AgentMetrics::default());
    let (stop, agent) = start_agent(&client, &cri, &metrics);
    let started = std::time::Instant::now();
    while !(metrics.render().contains("prewarm_nodeagent_pulls_waiting 1")
        && metrics.render().contains("prewarm_nodeagent_pulls_in_flight 3"))
    {
        assert!(started.elapsed() < Duration::from_secs(10), "{}", metrics.render());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until(&node_images, "all three pulled", |s| s["succeeded"] == 3).await;
    let text = metrics.render();
    assert!(text.contains("prewarm_nodeagent_pulls_waiting 0"), "{text}");
    assert!(
        text.contains(r#"prewarm_nodeagent_pulls_total{result="failed"} 0"#),
        "every result from 0: {text}"
    );
    stop.send(()).unwrap();
    agent.await.unwrap();
}
