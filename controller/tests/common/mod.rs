//! The controller binary against the test API server, with simulated Nodes and
//! a simulated node agent that answers NodeImage spec changes with status.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use prewarm_api::v1beta1::{ImagePullJob, NodeImage};
use prewarm_testapi::{Options, TestApi};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub struct Cluster {
    pub api: TestApi,
    pub client: Client,
    _dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

/// Where the shipped webhook configurations send admission requests.
const WEBHOOK_SERVICE: &str = "prewarm-system/prewarm-webhook";

impl Cluster {
    /// The test API server with the CRDs and, in its admission chain, the real
    /// webhook (ImagePullJobGate on) behind the shipped webhook configurations,
    /// as in a cluster: every controller write is defaulted and validated.
    pub async fn start() -> Self {
        let cluster = Self::start_without_webhook().await;
        let certs = cluster._dir.path().join("webhook-certs");
        let config = prewarm_webhook::server::ServeConfig {
            dns_names: vec!["prewarm-webhook.prewarm-system.svc".to_owned()],
            feature_gates: "ImagePullJobGate=true".parse().unwrap(),
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(1),
            ..prewarm_webhook::server::ServeConfig::loopback(&certs).unwrap()
        };
        let server = prewarm_webhook::server::Server::bind(config).await.unwrap();
        cluster
            .api
            .set_service_endpoint(WEBHOOK_SERVICE, server.local_addr().unwrap());
        tokio::spawn(server.run(std::future::pending()));
        let ca = std::fs::read(certs.join("ca.crt")).unwrap();
        let shipped = std::fs::read_to_string(repo("manifests/webhook/webhook-configurations.yaml")).unwrap();
        let configurations = shipped.replace(
            "  clientConfig:\n",
            &format!(
                "  clientConfig:\n    caBundle: {}\n",
                base64::engine::general_purpose::STANDARD.encode(ca)
            ),
        );
        let dir = cluster._dir.path().join("webhook-configurations");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("webhooks.yaml"), configurations).unwrap();
        cluster.api.load_manifests(&dir).unwrap();
        cluster
    }

    /// Without the webhook: for objects a webhook would refuse.
    pub async fn start_without_webhook() -> Self {
        let api = TestApi::start(Options::default()).await.unwrap();
        api.load_manifests(&repo("manifests/crds")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        let client = Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
        let cluster = Self {
            api,
            client,
            _dir: dir,
            kubeconfig,
        };
        for namespace in ["kruise-daemon-config", "prewarm-system"] {
            let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap();
            Api::<Namespace>::all(cluster.client.clone())
                .create(&PostParams::default(), &namespace)
                .await
                .unwrap();
        }
        cluster
    }

    /// A kubeconfig file that authenticates as ServiceAccount `namespace/name`.
    pub fn api_kubeconfig_for(&self, namespace: &str, name: &str) -> PathBuf {
        let path = self._dir.path().join(format!("kubeconfig-{namespace}-{name}"));
        std::fs::write(&path, self.api.kubeconfig_for(namespace, name)).unwrap();
        path
    }

    /// Real kubectl (PyPI, installed by scripts/install-test-deps.sh) on this cluster.
    pub fn kubectl(&self, args: &[&str]) -> (bool, String) {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
        let binary = cache.join("prewarm-test-tools/kubectl-venv/bin/kubectl");
        assert!(
            binary.exists(),
            "{} is missing: run scripts/install-test-deps.sh",
            binary.display()
        );
        let output = std::process::Command::new(binary)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self._dir.path())
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), text)
    }

    pub async fn add_node(&self, name: &str, labels: Value, ready: bool) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"conditions": [ready_condition(ready)]},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }

    pub async fn set_ready(&self, name: &str, ready: bool) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"status": {"conditions": [ready_condition(ready)]}});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    pub fn controller(&self, extra: &[&str]) -> Controller {
        self.controller_as(&self.kubeconfig, extra)
    }

    /// The controller authenticated by `kubeconfig` (such as a ServiceAccount's).
    pub fn controller_as(&self, kubeconfig: &Path, extra: &[&str]) -> Controller {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_prewarm-controller"));
        command
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .args([
                "--feature-gates=ImagePullJobGate=true",
                "--nodeimage-creation-delay=0s",
                "--leader-elect-lease-duration=3s",
                "--leader-elect-retry-period=500ms",
                &format!("--admin-listen=127.0.0.1:{port}"),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().unwrap();
        Controller { child, port }
    }
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The Ready condition as the node lifecycle controller writes it on a change:
/// its last transition is now.
fn ready_condition(ready: bool) -> Value {
    json!({"type": "Ready", "status": if ready { "True" } else { "False" },
           "lastTransitionTime": now(), "reason": "KubeletReady", "message": ""})
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Controller {
    pub child: Child,
    pub port: u16,
}

impl Controller {
    pub async fn metrics(&self) -> String {
        self.get("/metrics").await
    }

    /// A GET on the admin listener.
    pub async fn get(&self, path: &str) -> String {
        let output = Command::new("curl")
            .args(["-s", &format!("http://127.0.0.1:{}{path}", self.port)])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .unwrap()
            .unwrap()
    }
}

/// Polls `check` until it returns `Some`, or fails after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the simulated agent does with an image: by default it succeeds;
/// names containing `missing` fail, `silent` are never answered, `slow`
/// succeed after a second.
pub fn spawn_agent(client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api: Api<NodeImage> = Api::all(client);
        let stream = watcher(api.clone(), watcher::Config::default()).applied_objects();
        futures_util::pin_mut!(stream);
        while let Some(Ok(node_image)) = stream.next().await {
            let api = api.clone();
            tokio::spawn(async move { answer(&api, &node_image).await });
        }
    })
}

async fn answer(api: &Api<NodeImage>, node_image: &NodeImage) {
    let name = node_image.metadata.name.clone().unwrap_or_default();
    let old = serde_json::to_value(&node_image.status).unwrap_or(Value::Null);
    let mut images = serde_json::Map::new();
    let mut slow = false;
    for (image, entry) in node_image.spec.images.iter().flatten() {
        let mut tags = Vec::new();
        for tag in &entry.tags {
            let version = tag.version.unwrap_or(0);
            let previous = old["imageStatuses"][image]["tags"]
                .as_array()
                .and_then(|t| {
                    t.iter()
                        .find(|s| s["tag"] == tag.tag.as_str() && s["version"] == version)
                })
                .cloned();
            if image.contains("silent") {
                if let Some(previous) = previous {
                    tags.push(previous);
                }
                continue;
            }
            slow |= image.contains("slow") && previous.is_none();
            let phase = if image.contains("missing") {
                "Failed"
            } else {
                "Succeeded"
            };
            tags.push(previous.unwrap_or_else(|| {
                json!({"tag": tag.tag, "phase": phase, "version": version, "progress": 100,
                       "startTime": now(), "completionTime": now(),
                       "message": if phase == "Failed" { "rpc error: not found" } else { "" }})
            }));
        }
        if !tags.is_empty() {
            images.insert(image.clone(), json!({"tags": tags}));
        }
    }
    for gone in old["imageStatuses"].as_object().into_iter().flatten().map(|(k, _)| k) {
        images.entry(gone.clone()).or_insert(Value::Null);
    }
    let desired: usize = node_image.spec.images.iter().flatten().map(|(_, e)| e.tags.len()).sum();
    let status = json!({"desired": desired, "imageStatuses": images});
    if slow {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let unchanged =
        old["imageStatuses"] == status["imageStatuses"] || (old["imageStatuses"].is_null() && images.is_empty());
    // Like a real agent, retry a failed status write.
    for _ in 0..20 {
        if unchanged
            || api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
                .await
                .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

// Scenario helpers shared by the test files.

pub const SECONDS: Duration = Duration::from_secs(1);

pub async fn three_nodes(cluster: &Cluster) {
    for (name, zone) in [("node-1", "a"), ("node-2", "b"), ("node-3", "a")] {
        cluster
            .add_node(name, json!({"zone": zone, "kubernetes.io/hostname": name}), true)
            .await;
    }
}

pub struct Running {
    pub cluster: Cluster,
    pub controller: Controller,
    pub _agent: tokio::task::JoinHandle<()>,
}

/// Three Ready nodes, the simulated agent, and a controller started with
/// `args`; returns once the three NodeImages exist.
pub async fn running(cluster: Cluster, args: &[&str]) -> Running {
    three_nodes(&cluster).await;
    let agent = spawn_agent(cluster.client.clone());
    let controller = cluster.controller(args);
    let node_images: Api<NodeImage> = Api::all(cluster.client.clone());
    eventually("a NodeImage per node", 10 * SECONDS, || async {
        (node_images.list(&ListParams::default()).await.unwrap().items.len() == 3).then_some(())
    })
    .await;
    Running {
        cluster,
        controller,
        _agent: agent,
    }
}

pub fn job(name: &str, spec: Value) -> ImagePullJob {
    serde_json::from_value(json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec}))
    .unwrap()
}

pub async fn status(jobs: &Api<ImagePullJob>, name: &str) -> Option<Value> {
    let job = jobs.get_opt(name).await.unwrap()?;
    Some(serde_json::to_value(job.status?).unwrap())
}

pub async fn wait_status(
    jobs: &Api<ImagePullJob>,
    name: &str,
    what: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, within, || async { status(jobs, name).await.filter(|s| check(s)) }).await
}

pub async fn tag_owners(cluster: &Cluster, node: &str, image: &str, tag: &str) -> Option<Vec<String>> {
    let node_image = Api::<NodeImage>::all(cluster.client.clone())
        .get_opt(node)
        .await
        .unwrap()?;
    let entry = node_image.spec.images?.remove(image)?;
    let tag = entry.tags.into_iter().find(|t| t.tag == tag)?;
    Some(
        tag.owner_references
            .unwrap_or_default()
            .into_iter()
            .filter_map(|o| o.name)
            .collect(),
    )
}

/// The events about the object `name` in `default`.
async fn events_about(cluster: &Cluster, name: &str) -> Vec<k8s_openapi::api::events::v1::Event> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(cluster.client.clone(), "default");
    events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

pub async fn event_reasons(cluster: &Cluster, name: &str) -> BTreeSet<String> {
    events_about(cluster, name)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

/// The notes of the events with `reason` about the object `name` in `default`.
pub async fn event_notes(cluster: &Cluster, name: &str, reason: &str) -> Vec<String> {
    events_about(cluster, name)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .filter_map(|e| e.note)
        .collect()
}

pub fn list_job(name: &str, spec: Value) -> prewarm_api::v1beta1::ImageListPullJob {
    serde_json::from_value(
        json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImageListPullJob",
        "metadata": {"name": name, "namespace": "default"}, "spec": spec}),
    )
    .unwrap()
}

pub async fn children(jobs: &Api<ImagePullJob>) -> Vec<ImagePullJob> {
    jobs.list(&ListParams::default()).await.unwrap().items
}
