#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The whole system on one machine, for trying prewarm and for end-to-end
//! tests: this test API server (HTTPS, RBAC enforced) with prewarm's CRDs,
//! namespaces, ServiceAccounts, RBAC and webhook configurations; the webhook
//! (`--cert-source secret`), the controller and one node agent per node, each
//! authenticated as its shipped ServiceAccount; three "nodes", each a Ready
//! Node object with its own containerd (private root, state and socket); and
//! two local registries (open, and htpasswd-protected) holding small images
//! under the names the seed examples use. Every process is stopped on drop.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::infra::{Daemon, containerd, free_port, push, push_with, registry, spawn_with_env};
use crate::{Options, TestApi};

/// The images pushed to the open registry, as `repository:tag` (the seed's).
pub const IMAGES: [&str; 7] = [
    "library/nginx:1.9.1",
    "library/nginx:1.25",
    "library/busybox:1.29.2",
    "library/busybox:1.36",
    "library/ubuntu:22.04",
    "library/ubuntu:latest",
    "library/redis:7",
];
/// An image served through a throttled proxy (`LocalCluster::slow_image`),
/// so that a pull takes seconds: for faults in the middle of a pull.
pub const SLOW_IMAGE: &str = "library/slow:1.0";
/// Its layer's size and the proxy's rate: about four seconds a pull.
const SLOW_LAYER_BYTES: usize = 512 * 1024;
const SLOW_BYTES_PER_SECOND: usize = 128 * 1024;

/// The image of the private registry, and the user that may pull it.
pub const PRIVATE_IMAGE: &str = "team/private:1.0";
pub const PRIVATE_USER: (&str, &str) = ("ci", "s3cret-pw");

const WEBHOOK_SERVICE: &str = "prewarm-system/prewarm-webhook";

/// The nodes: name and labels.
pub fn node_labels(index: usize) -> serde_json::Value {
    let name = format!("node-{index}");
    let zone = if index % 2 == 1 { "a" } else { "b" };
    let mut labels = json!({"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone});
    // The seed's label selector (`node-type: xxx`) matches the first two nodes.
    if index <= 2 {
        labels["node-type"] = json!("xxx");
    }
    labels
}

#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub socket: PathBuf,
    containerd: Option<Daemon>,
    agent: Option<Daemon>,
}

#[derive(Debug)]
pub struct LocalCluster {
    pub api: TestApi,
    pub dir: PathBuf,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    pub registry_port: u16,
    /// The open registry's log: one line per request it served.
    pub registry_log: PathBuf,
    pub private_registry_port: u16,
    /// A throttled proxy to the open registry (see [`SLOW_IMAGE`]).
    pub slow_registry_port: u16,
    /// The manifest digest of each of [`IMAGES`].
    pub digests: std::collections::BTreeMap<String, String>,
    pub nodes: Vec<Node>,
    binaries: PathBuf,
    webhook: Option<Daemon>,
    webhook_port: u16,
    webhook_health_port: u16,
    controller: Option<Daemon>,
    controller_admin_port: u16,
    /// Flags the controller starts with besides the cluster's own (a test
    /// sets them, then restarts it with `stop_controller` and `start_controller`).
    pub controller_flags: Vec<String>,
    _registries: Vec<Daemon>,
}

/// Where the webhook and the controller read the feature gates, live.
const GATES_FLAG: &str = "--feature-gates-config-map=prewarm-system/prewarm-feature-gates";

/// The feature gate ConfigMap with ImagePullJobGate as `on` says.
fn gate_config_map(on: bool) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "prewarm-feature-gates", "namespace": "prewarm-system"},
           "data": {"featureGates": format!("ImagePullJobGate={on}")}})
}

/// The whole answer to a plain-HTTP GET on a loopback port, if any.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// A file of `manifests/` (paths relative to the repository).
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn wait(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl LocalCluster {
    /// Starts everything under `dir` with `nodes` nodes, the binaries found in
    /// `binaries` (a cargo target directory such as `target/debug`), and
    /// ImagePullJobGate as `gate_on` says.
    pub async fn start(dir: &Path, binaries: &Path, nodes: usize, gate_on: bool) -> Self {
        let nodes = nodes.max(1);
        for binary in ["prewarm-webhook", "prewarm-controller", "prewarm-nodeagent"] {
            assert!(
                binaries.join(binary).exists(),
                "{} is missing: build the workspace first (cargo build --bins)",
                binaries.join(binary).display()
            );
        }
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let api = TestApi::start(Options {
            tls: true,
            ..Options::default()
        })
        .await
        .unwrap();
        let kubeconfig = dir.join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        // What an install puts in the API: CRDs, namespaces, accounts, RBAC, webhook configurations.
        api.load_manifests(&repo("manifests/crds")).unwrap();
        let bootstrap = dir.join("bootstrap");
        std::fs::create_dir_all(&bootstrap).unwrap();
        // Loaded in name order: numbered so that the namespaces come first.
        for (index, file) in [
            "namespaces.yaml",
            "serviceaccounts.yaml",
            "rbac-webhook.yaml",
            "webhook-ca-secret.yaml",
            "feature-gates.yaml",
            "rbac-controller.yaml",
            "rbac-nodeagent.yaml",
        ]
        .into_iter()
        .enumerate()
        {
            std::fs::copy(
                repo(&format!("manifests/base/{file}")),
                bootstrap.join(format!("{index:02}-{file}")),
            )
            .unwrap();
        }
        std::fs::copy(
            repo("manifests/webhook/webhook-configurations.yaml"),
            bootstrap.join("webhooks.yaml"),
        )
        .unwrap();
        let node_objects: Vec<_> = (1..=nodes)
            .map(|index| {
                json!({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": format!("node-{index}"), "labels": node_labels(index)},
                    "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
                .to_string()
            })
            .collect();
        std::fs::write(bootstrap.join("zz-nodes.yaml"), node_objects.join("\n---\n")).unwrap();
        api.load_manifests(&bootstrap).unwrap();
        api.put(&gate_config_map(gate_on)).unwrap();
        for account in ["webhook", "controller"] {
            std::fs::write(
                dir.join(format!("kubeconfig-{account}")),
                api.kubeconfig_for("prewarm-system", &format!("prewarm-{account}")),
            )
            .unwrap();
        }

        let registries_dir = dir.join("registries");
        std::fs::create_dir_all(&registries_dir).unwrap();
        let htpasswd = registries_dir.join("htpasswd");
        let hashed = std::process::Command::new("htpasswd")
            .args(["-Bbn", PRIVATE_USER.0, PRIVATE_USER.1])
            .output()
            .unwrap();
        std::fs::write(&htpasswd, hashed.stdout).unwrap();
        let (open, registry_port, registry_log) = registry(&registries_dir, "open", None);
        let (private, private_registry_port, _) = registry(&registries_dir, "private", Some(&htpasswd));
        let mut digests = std::collections::BTreeMap::new();
        for image in IMAGES {
            let (repository, tag) = image.split_once(':').unwrap();
            digests.insert(
                image.to_owned(),
                push(registry_port, repository, tag, None, &registries_dir),
            );
        }
        let (repository, tag) = SLOW_IMAGE.split_once(':').unwrap();
        let noise: Vec<u8> = (0..SLOW_LAYER_BYTES as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        push_with(registry_port, repository, tag, None, &registries_dir, &noise);
        let slow_registry_port = throttled_proxy(registry_port, SLOW_BYTES_PER_SECOND).await;
        let (repository, tag) = PRIVATE_IMAGE.split_once(':').unwrap();
        push(
            private_registry_port,
            repository,
            tag,
            Some(&format!("{}:{}", PRIVATE_USER.0, PRIVATE_USER.1)),
            &registries_dir,
        );

        let mut cluster = Self {
            api,
            dir: dir.to_owned(),
            kubeconfig,
            registry_port,
            registry_log,
            private_registry_port,
            slow_registry_port,
            digests,
            nodes: Vec::new(),
            binaries: binaries.to_owned(),
            webhook: None,
            webhook_port: free_port(),
            webhook_health_port: free_port(),
            controller: None,
            controller_admin_port: free_port(),
            controller_flags: Vec::new(),
            _registries: vec![open, private],
        };
        cluster.start_webhook();
        for index in 1..=nodes {
            cluster.add_node(index);
        }
        cluster.start_controller();
        cluster
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn kubeconfig_of(&self, account: &str) -> PathBuf {
        self.dir.join(format!("kubeconfig-{account}"))
    }

    fn binary(&self, name: &str) -> String {
        self.binaries.join(name).display().to_string()
    }

    /// The webhook, with certificates from the shared CA Secret (it injects the
    /// caBundles); returns once it serves.
    pub fn start_webhook(&mut self) {
        let health = self.webhook_health_port;
        let cert_dir = self.dir.join("webhook-certs");
        let daemon = spawn_with_env(
            &self.binary("prewarm-webhook"),
            &[
                "serve",
                "--cert-source=secret",
                &format!("--kubeconfig={}", self.kubeconfig_of("webhook").display()),
                &format!("--cert-dir={}", cert_dir.display()),
                &format!("--listen=127.0.0.1:{}", self.webhook_port),
                &format!("--health-listen=127.0.0.1:{health}"),
                GATES_FLAG,
                "--node-agent-service-account=prewarm-nodeagent/prewarm-nodeagent",
                "--shutdown-delay=0s",
            ],
            &[],
            &self.log("webhook"),
        );
        self.api.set_service_endpoint(
            WEBHOOK_SERVICE,
            format!("127.0.0.1:{}", self.webhook_port).parse().unwrap(),
        );
        let log = self.log("webhook");
        let webhook = self.webhook.insert(daemon);
        let started = Instant::now();
        while !http_get(health, "/readyz").is_some_and(|answer| answer.starts_with("HTTP/1.1 200")) {
            let ended = webhook.exit_status();
            assert!(
                ended.is_none() && started.elapsed() < Duration::from_secs(30),
                "the webhook is not ready after {:?} (process: {}); its log:\n{}",
                started.elapsed(),
                ended.map_or("running".to_owned(), |status| status.to_string()),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn start_controller(&mut self) {
        let admin = self.controller_admin_port;
        let kubeconfig = self.kubeconfig_of("controller");
        let mut flags = vec![
            GATES_FLAG.to_owned(),
            "--nodeimage-creation-delay=0s".to_owned(),
            "--leader-elect-namespace=prewarm-system".to_owned(),
            "--leader-elect-lease-duration=3s".to_owned(),
            "--leader-elect-retry-period=500ms".to_owned(),
            format!("--admin-listen=127.0.0.1:{admin}"),
        ];
        // A test's flag replaces the cluster's flag of that name.
        let name = |flag: &str| flag.split('=').next().unwrap_or_default().to_owned();
        flags.retain(|f| !self.controller_flags.iter().any(|own| name(own) == name(f)));
        flags.extend(self.controller_flags.iter().cloned());
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let daemon = spawn_with_env(
            &self.binary("prewarm-controller"),
            &flags,
            &[("KUBECONFIG", &kubeconfig)],
            &self.log("controller"),
        );
        self.controller = Some(daemon);
    }

    /// Turns ImagePullJobGate on or off as an admin does, in the feature gate
    /// ConfigMap (nothing restarts); returns once the webhook and the
    /// controller both report the new value.
    pub fn set_gate(&mut self, on: bool) {
        self.api.put(&gate_config_map(on)).unwrap();
        let reported = format!(
            "prewarm_feature_gate_enabled{{gate=\"ImagePullJobGate\"}} {}",
            u8::from(on)
        );
        for port in [self.webhook_health_port, self.controller_admin_port] {
            wait("the new gate in force", Duration::from_secs(10), || {
                http_get(port, "/metrics").is_some_and(|metrics| metrics.contains(&reported))
            });
        }
    }

    pub fn stop_controller(&mut self) {
        self.controller = None;
    }

    fn add_node(&mut self, index: usize) {
        let name = format!("node-{index}");
        let node_dir = self.dir.join(&name);
        std::fs::create_dir_all(&node_dir).unwrap();
        let (daemon, socket) = containerd(&node_dir);
        self.nodes.push(Node {
            name,
            socket,
            containerd: Some(daemon),
            agent: None,
        });
        self.start_agent(self.nodes.len() - 1);
    }

    /// (Re)starts node `index`'s agent (0-based), with a token bound to its
    /// Node as kubelet's projected token would be (the webhook lets an agent
    /// write only its own node's NodeImage status).
    pub fn start_agent(&mut self, index: usize) {
        let node = &self.nodes[index];
        let kubeconfig = self.kubeconfig_of(&format!("nodeagent-{}", node.name));
        let bound = self
            .api
            .kubeconfig_bound(
                "prewarm-nodeagent",
                "prewarm-nodeagent",
                &json!({"apiVersion": "v1", "kind": "Node", "name": node.name}),
            )
            .unwrap();
        std::fs::write(&kubeconfig, bound).unwrap();
        let daemon = spawn_with_env(
            &self.binary("prewarm-nodeagent"),
            &[
                "run",
                &format!("--node-name={}", node.name),
                &format!("--cri-socket={}", node.socket.display()),
                "--health-listen=127.0.0.1:0",
                "--status-interval-ms=200",
                // The nodes share this machine's disk, however full it is; the
                // check itself is tested with a disk the test controls.
                "--max-image-fs-usage=100",
            ],
            &[("KUBECONFIG", &kubeconfig)],
            &self.log(&format!("nodeagent-{}", node.name)),
        );
        self.nodes[index].agent = Some(daemon);
    }

    /// Kills node `index`'s agent at once (as a crash would).
    pub fn kill_agent(&mut self, index: usize) {
        self.nodes[index].agent = None;
    }

    /// Stops node `index`'s containerd (its agent then cannot reach the runtime).
    pub fn stop_containerd(&mut self, index: usize) {
        self.nodes[index].containerd = None;
    }

    /// An image of the open registry, by its seed name (`nginx:1.9.1`).
    /// What `up` prints: where everything is, and how to reach it.
    pub fn summary(&self) -> String {
        let nodes: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        format!(
            "kubeconfig: {kubeconfig}\nnodes: {nodes}\nregistry: 127.0.0.1:{open} (images: {images})\nprivate registry: 127.0.0.1:{private} (user {user}, password {password}, image {PRIVATE_IMAGE})\nlogs: {logs}\n",
            kubeconfig = self.kubeconfig.display(),
            nodes = nodes.join(", "),
            open = self.registry_port,
            images = IMAGES.join(", "),
            private = self.private_registry_port,
            user = PRIVATE_USER.0,
            // A throwaway credential of this machine's test registry, printed so it can be used.
            password = PRIVATE_USER.1,
            logs = self.dir.join("logs").display(),
        )
    }

    pub fn image(&self, seed_name: &str) -> String {
        format!("127.0.0.1:{}/library/{seed_name}", self.registry_port)
    }

    /// An image of the open registry pinned by digest (`busybox:1.36` → `…/library/busybox@sha256:…`).
    pub fn pinned_image(&self, seed_name: &str) -> String {
        let repository = seed_name.split_once(':').map_or(seed_name, |(r, _)| r);
        let digest = &self.digests[&format!("library/{seed_name}")];
        format!("127.0.0.1:{}/library/{repository}@{digest}", self.registry_port)
    }

    /// [`SLOW_IMAGE`] through the throttled proxy.
    pub fn slow_image(&self) -> String {
        format!("127.0.0.1:{}/{SLOW_IMAGE}", self.slow_registry_port)
    }

    pub fn private_image(&self) -> String {
        format!("127.0.0.1:{}/{PRIVATE_IMAGE}", self.private_registry_port)
    }

    /// How many times the open registry served `image`'s manifest (pulls that reached it).
    pub fn manifest_requests(&self, seed_name: &str) -> usize {
        let (repository, tag) = seed_name.split_once(':').unwrap_or((seed_name, "latest"));
        let path = format!("/v2/library/{repository}/manifests/{tag}");
        std::fs::read_to_string(&self.registry_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("\"GET {path} ")) || l.contains(&format!("\"HEAD {path} ")))
            .count()
    }

    /// Everything the processes logged so far (to look for leaked secrets).
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.dir.join("logs")).unwrap().flatten() {
            all.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
        all
    }
}

/// A TCP proxy on a free loopback port to `upstream`, passing at most
/// `bytes_per_second` towards the client on each connection. Runs as long as
/// the runtime does.
async fn throttled_proxy(upstream: u16, bytes_per_second: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let requests = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    let _ = server_write.shutdown().await;
                });
                // Responses in chunks of a tenth of the rate, one per 100 ms.
                let mut chunk = vec![0u8; (bytes_per_second / 10).max(1)];
                while let Ok(read) = server_read.read(&mut chunk).await {
                    if read == 0 || client_write.write_all(&chunk[..read]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = client_write.shutdown().await;
                requests.abort();
            });
        }
    });
    port
}
