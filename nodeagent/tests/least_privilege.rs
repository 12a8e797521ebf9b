//! `prewarm-nodeagent run` under the shipped RBAC: authenticated as its
//! ServiceAccount, it watches its own NodeImage, reads a pull secret from the
//! agent namespace, writes status and records a failure event without a single
//! 403, and every rule (and verb) of its roles is needed by some request it made.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Behaviour, serve};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::PostParams;
use kube::{Api, Client};
use prewarm_api::v1beta1::NodeImage;
use prewarm_testapi::{Options, TestApi, rbac};
use serde_json::{Value, json};

const ACCOUNT: (&str, &str) = ("prewarm-nodeagent", "prewarm-nodeagent");

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn tag(tag: &str) -> Value {
    json!({"tag": tag, "version": 0, "createdAt": "2026-11-25T10:00:00Z",
           "pullPolicy": {"ttlSecondsAfterFinished": 300, "timeoutSeconds": 5, "backoffLimit": 0}})
}

async fn create<K>(api: &Api<K>, object: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.create(&PostParams::default(), &serde_json::from_value(object).unwrap())
        .await
        .unwrap();
}

/// `prewarm-nodeagent run` for node-1 on the fake runtime at `socket`.
fn agent_on_node_1(kubeconfig: &Path, socket: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_prewarm-nodeagent"));
    command
        .env("KUBECONFIG", kubeconfig)
        .args([
            "run",
            "--node-name=node-1",
            "--health-listen=127.0.0.1:0",
            "--status-interval-ms=50",
        ])
        .arg(format!("--cri-socket={}", socket.display()))
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_works_under_its_shipped_rbac_and_needs_every_rule() {
    let api_server = TestApi::start(Options::default()).await.unwrap();
    api_server.load_manifests(&repo("manifests/crds")).unwrap();
    let admin = Client::try_from(kube::Config::new(api_server.url().parse().unwrap())).unwrap();
    for namespace in ["prewarm-system", "prewarm-nodeagent", "kruise-daemon-config"] {
        create(
            &Api::<Namespace>::all(admin.clone()),
            json!({"metadata": {"name": namespace}}),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    for file in ["serviceaccounts.yaml", "rbac-nodeagent.yaml"] {
        std::fs::copy(repo(&format!("manifests/base/{file}")), dir.path().join(file)).unwrap();
    }
    api_server.load_manifests(dir.path()).unwrap();

    let config = |user: &str| {
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            json!({"auths": {"127.0.0.1:5001": {"username": user, "password": "pw"}}}).to_string(),
        )
    };
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "kruise-daemon-config");
    for (name, user) in [("registry", "ci"), ("stale", "someone-else")] {
        create(
            &secrets,
            json!({"metadata": {"name": name, "namespace": "kruise-daemon-config"},
            "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": config(user)}}),
        )
        .await;
    }
    let node_images: Api<NodeImage> = Api::all(admin.clone());
    let secret = |name: &str| json!([{"namespace": "kruise-daemon-config", "name": name}]);
    create(
        &node_images,
        json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage", "metadata": {"name": "node-1"},
        "spec": {"images": {
            "127.0.0.1:5001/team/app": {"pullSecrets": secret("registry"), "tags": [tag("1.0")]},
            "127.0.0.1:5001/team/denied": {"pullSecrets": secret("stale"), "tags": [tag("1.0")]}
        }}}),
    )
    .await;
    // Another node's NodeImage, which this agent never reads.
    create(
        &node_images,
        json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
        "metadata": {"name": "node-2"}, "spec": {"images": {"nginx": {"tags": [tag("1.25")]}}}}),
    )
    .await;

    let fake = serve(Behaviour {
        accepted_users: vec!["ci".into()],
        ..Behaviour::default()
    })
    .await;
    let kubeconfig = dir.path().join("agent-kubeconfig");
    std::fs::write(&kubeconfig, api_server.kubeconfig_for(ACCOUNT.0, ACCOUNT.1)).unwrap();
    let mut agent = agent_on_node_1(&kubeconfig, &fake.socket).spawn().unwrap();

    let started = std::time::Instant::now();
    let status = loop {
        let status = serde_json::to_value(node_images.get("node-1").await.unwrap().status).unwrap();
        let settled = status["succeeded"] == 1 && status["failed"] == 1;
        let events = api_server.audit().iter().any(|d| d.request.resource == "events");
        if settled && events {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the agent did not finish: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        status["imageStatuses"]["127.0.0.1:5001/team/app"]["tags"][0]["phase"],
        "Succeeded"
    );
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &agent.id().unwrap().to_string()])
        .status();
    tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .unwrap()
        .unwrap();

    let shipped = prewarm_testapi::read_manifests(&repo("manifests/base/rbac-nodeagent.yaml")).unwrap();
    let report = rbac::least_privilege(&api_server.audit(), &shipped, ACCOUNT.0, ACCOUNT.1);
    assert_eq!(report.rules.len(), 4, "{:#?}", report.rules);
    assert_eq!(report.problems(), Vec::<String>::new());
    // Its NodeImage reads are all narrowed to its own name (a field selector,
    // which the API server authorises as a request for that name).
    let reads: Vec<_> = report
        .requests
        .iter()
        .filter(|r| r.resource == "nodeimages" && r.subresource.is_none())
        .collect();
    assert!(!reads.is_empty());
    assert!(reads.iter().all(|r| r.name.as_deref() == Some("node-1")), "{reads:#?}");
}

/// The agent runs in a namespace of its own, so the seed's
/// `credential-provider-config` ConfigMap (in the install namespace) reaches it
/// through the API: read once at start, its plugin answers the pulls it
/// matches, and a ConfigMap without the config stops the start with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_provider_config_is_read_from_its_config_map() {
    let api_server = TestApi::start(Options::default()).await.unwrap();
    api_server.load_manifests(&repo("manifests/crds")).unwrap();
    let admin = Client::try_from(kube::Config::new(api_server.url().parse().unwrap())).unwrap();
    create(
        &Api::<Namespace>::all(admin.clone()),
        json!({"metadata": {"name": "kruise-system"}}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = common::plugin(
        dir.path(),
        "test-provider",
        "cat > /dev/null\nprintf '%s' '{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":\"CredentialProviderResponse\",\"cacheKeyType\":\"Registry\",\"auth\":{\"127.0.0.1:5001\":{\"username\":\"plugin-user\",\"password\":\"pw\"}}}'\n",
    );
    let config_maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin.clone(), "kruise-system");
    let config = "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: test-provider\n  matchImages: [\"127.0.0.1:5001\"]\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n";
    create(
        &config_maps,
        json!({"metadata": {"name": "credential-provider-config"}, "data": {"CredentialProviderPlugin.yaml": config}}),
    )
    .await;
    create(
        &config_maps,
        json!({"metadata": {"name": "misnamed"}, "data": {"config.yaml": config}}),
    )
    .await;
    let node_images: Api<NodeImage> = Api::all(admin.clone());
    create(
        &node_images,
        json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage", "metadata": {"name": "node-1"},
               "spec": {"images": {"127.0.0.1:5001/team/app": {"tags": [tag("1.0")]}}}}),
    )
    .await;
    let fake = serve(Behaviour {
        accepted_users: vec!["plugin-user".into()],
        ..Behaviour::default()
    })
    .await;
    let kubeconfig = dir.path().join("kubeconfig");
    api_server.write_kubeconfig(&kubeconfig).unwrap();
    let agent = |config_map: &str| {
        agent_on_node_1(&kubeconfig, &fake.socket)
            .arg(format!("--credential-provider-config-map={config_map}"))
            .arg(format!("--credential-provider-bin-dir={}", bin_dir.display()))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };

    for (config_map, says) in [
        (
            "kruise-system/misnamed",
            "ConfigMap kruise-system/misnamed has no key CredentialProviderPlugin.yaml",
        ),
        ("kruise-system/absent", "reading ConfigMap kruise-system/absent"),
    ] {
        let refused = tokio::time::timeout(Duration::from_secs(10), agent(config_map).wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(refused.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(says), "{stderr}");
    }

    let _running = agent("kruise-system/credential-provider-config");
    let started = std::time::Instant::now();
    loop {
        let status = serde_json::to_value(node_images.get("node-1").await.unwrap().status).unwrap();
        if status["succeeded"] == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "not pulled: {status:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let users: Vec<String> = fake
        .behaviour
        .pulls
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.auth.clone().map(|a| a.username).unwrap_or_default())
        .collect();
    assert_eq!(users, ["plugin-user"], "the plugin's credentials were used");
}
