#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! A cluster whose Pods run: the test API server (HTTPS, RBAC, admission,
//! the workload controllers and the scheduler), and nodes, each a test
//! kubelet over its own containerd laid out in the node's root directory,
//! all on one pod network (a bridge on this machine). Images come from a
//! local registry that containerd knows as `localhost` and `docker.io`, so
//! manifests name images as users write them. Everything stops on drop.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::infra::{LayerFile, PodNetwork, PodRuntime, containerd_for_pods, push_image};
use crate::kubelet::{self, backoff};
use crate::registries::SeedRegistries;
use crate::{Options, TestApi};

/// Pushes an image of one static binary of this machine (`binary`, which
/// `package` from Debian provides) at `path`, run by `config`'s entrypoint.
fn push_static(
    registry_port: u16,
    dir: &Path,
    image: (&str, &str),
    binary: &str,
    package: &str,
    path: &str,
    config: &str,
) {
    let content = std::fs::read(binary)
        .unwrap_or_else(|e| panic!("{binary}: {e} (scripts/install-test-deps.sh installs {package})"));
    let file = LayerFile {
        path,
        mode: 0o755,
        content: &content,
    };
    push_image(registry_port, image.0, image.1, None, dir, &[file], config);
}

/// The pause image the project builds: Debian's static catatonit in pause
/// mode (`-P`), as the sandbox of every Pod.
pub fn push_pause(registry_port: u16, dir: &Path) -> String {
    let config = r#"{"Entrypoint":["/pause","-P"]}"#;
    push_static(
        registry_port,
        dir,
        ("prewarm/pause", "1.0"),
        "/usr/bin/catatonit",
        "catatonit",
        "pause",
        config,
    );
    format!("127.0.0.1:{registry_port}/prewarm/pause:1.0")
}

/// A shell image (`localhost/busybox:test`): Debian's static busybox.
pub fn push_busybox(registry_port: u16, dir: &Path) {
    let config = r#"{"Entrypoint":["/bin/busybox"]}"#;
    push_static(
        registry_port,
        dir,
        ("busybox", "test"),
        "/bin/busybox",
        "busybox-static",
        "bin/busybox",
        config,
    );
}

/// Creates the pod network's bridge with its gateway address before anything
/// listens there (the CNI bridge plugin adopts it); one left by a run that
/// was killed goes first, as it would shadow this one's routes.
fn bridge(network: &PodNetwork) {
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    ip(&["link", "del", &network.bridge]);
    assert!(
        ip(&["link", "add", "name", &network.bridge, "type", "bridge"]),
        "creating bridge {}",
        network.bridge
    );
    let prefix = network.subnet.split('/').nth(1).unwrap_or("16");
    assert!(ip(&[
        "addr",
        "add",
        &format!("{}/{prefix}", network.gateway()),
        "dev",
        &network.bridge
    ]));
    assert!(ip(&["link", "set", &network.bridge, "up"]));
}

/// The Pods of the chart installed with its defaults (release namespace
/// kruise-system): namespace, name prefix, how many.
pub fn chart_pods(agents: usize) -> [(&'static str, &'static str, usize); 3] {
    [
        ("kruise-system", "prewarm-webhook-", 2),
        ("kruise-system", "prewarm-controller-", 2),
        ("prewarm-nodeagent", "prewarm-nodeagent-", agents),
    ]
}

#[derive(Debug)]
pub struct PodNode {
    pub name: String,
    pub root: PathBuf,
    kubelet: tokio::task::JoinHandle<()>,
    runtime: Option<PodRuntime>,
}

#[derive(Debug)]
pub struct PodCluster {
    pub api: TestApi,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// The pause, busybox and prewarm images are in the open one too.
    pub registries: SeedRegistries,
    pub network: PodNetwork,
    pub nodes: Vec<PodNode>,
    pause: String,
}

impl Drop for PodCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kubelet.abort();
        }
        for node in &mut self.nodes {
            node.runtime.take();
        }
        // The kubelets were stopped without tearing their Pods down: their
        // tmpfs go too, again while a worker still leaving may mount one.
        let pods: Vec<PathBuf> = self.nodes.iter().map(|n| n.root.join("var/lib/kubelet/pods")).collect();
        let started = Instant::now();
        loop {
            pods.iter().for_each(|dir| kubelet::volumes::remove_pod_dir(dir));
            let left = pods.iter().any(|dir| kubelet::volumes::has_mounts_under(dir));
            if !left || started.elapsed() > Duration::from_secs(10) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.network.bridge])
            .status();
    }
}

impl PodCluster {
    /// Starts the API server, a registry (holding the pause and busybox
    /// images) and `nodes` nodes named `node-1`…, labelled by `labels(index)`,
    /// on the pod network `subnet` (a /16, such as `10.215.0.0/16`) through
    /// the bridge `bridge_name`.
    pub async fn start(
        dir: &Path,
        nodes: usize,
        subnet: &str,
        bridge_name: &str,
        labels: impl Fn(usize) -> serde_json::Value,
    ) -> Self {
        let network = PodNetwork {
            bridge: bridge_name.to_owned(),
            subnet: subnet.to_owned(),
            data_dir: dir.join("ipam"),
        };
        bridge(&network);
        let gateway = IpAddr::V4(network.gateway());
        let mut api = TestApi::start(Options {
            tls: true,
            pod_network_address: Some(gateway),
            ..Options::default()
        })
        .await
        .unwrap();
        api.start_workloads();
        let kubeconfig = dir.join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        let registries = SeedRegistries::start(&dir.join("registries")).await;
        let pause = push_pause(registries.open_port, &registries.dir);
        push_busybox(registries.open_port, &registries.dir);
        let mut cluster = Self {
            api,
            dir: dir.to_owned(),
            kubeconfig,
            registries,
            network,
            nodes: Vec::new(),
            pause,
        };
        for index in 1..=nodes {
            cluster.add_node(index, labels(index));
        }
        cluster
    }

    fn add_node(&mut self, index: usize, labels: serde_json::Value) {
        let name = format!("node-{index}");
        let root = self.dir.join(&name);
        let registry = format!("127.0.0.1:{}", self.registries.open_port);
        let (runtime, socket) = containerd_for_pods(&root, &self.pause, &self.network, &registry);
        self.api
            .put(&json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": labels},
                "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                    "addresses": [{"type": "InternalIP", "address": self.network.gateway().to_string()},
                                  {"type": "Hostname", "address": name}]}}))
            .unwrap();
        let node = kubelet::Node {
            name: name.clone(),
            root: root.clone(),
            socket,
            host_ip: self.network.gateway().to_string(),
            api_host: self.network.gateway().to_string(),
            api_port: self.api.addr.port(),
            ca_pem: self.api.ca_pem.clone().unwrap_or_default(),
            backoff: backoff::Limits::KUBELET,
            store: self.api.store.clone(),
            tokens: self.api.token_issuer(),
        };
        self.api.register_node_root(&name, &root);
        let kubelet = tokio::spawn(kubelet::run(node));
        self.nodes.push(PodNode {
            name,
            root,
            kubelet,
            runtime: Some(runtime),
        });
    }

    /// Pushes `image` (`localhost/prewarm:0.1.0`, as scripts/build-images.sh
    /// leaves it in buildah's store) to the registry, where containerd finds
    /// it under the same name.
    pub fn push_from_buildah(&self, image: &str) -> Result<(), String> {
        let name = image.strip_prefix("localhost/").unwrap_or(image);
        let pushed = std::process::Command::new("buildah")
            .args(["push", "--quiet", "--tls-verify=false", image])
            .arg(format!("docker://127.0.0.1:{}/{name}", self.registries.open_port))
            .output()
            .map_err(|e| format!("running buildah: {e}"))?;
        if !pushed.status.success() {
            return Err(format!(
                "buildah push {image}: {}",
                String::from_utf8_lossy(&pushed.stderr)
            ));
        }
        Ok(())
    }

    /// `helm ARGS` against this cluster, through the real Helm library
    /// (scripts/helm.py with the Python that scripts/install-test-deps.sh set up).
    pub fn helm(&self, python: &Path, args: &[&str]) -> Result<String, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/helm.py");
        let out = std::process::Command::new(python)
            .arg(script)
            .args(args)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .output()
            .map_err(|e| format!("running {}: {e}", python.display()))?;
        if !out.status.success() {
            return Err(format!("helm {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The Pods that are not Ready of those `expected` names (namespace, name
    /// prefix, count); empty once all are there and Ready.
    pub fn not_ready(&self, expected: &[(&str, &str, usize)]) -> Vec<String> {
        let Some(rt) = self.api.store.resource_type("", "v1", "pods") else {
            return vec!["pods are not served".to_owned()];
        };
        let (pods, _) = self.api.store.list(&rt, None);
        let ready = crate::workloads::pod_ready;
        let mut missing = Vec::new();
        for (namespace, prefix, count) in expected {
            let matching: Vec<&serde_json::Value> = pods
                .iter()
                .filter(|p| p["metadata"]["namespace"] == *namespace)
                .filter(|p| p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
                .collect();
            let ready_count = matching.iter().filter(|p| ready(p)).count();
            if matching.len() != *count || ready_count != *count {
                missing.push(format!(
                    "{namespace}/{prefix}*: {ready_count} of {count} Ready ({} Pods)",
                    matching.len()
                ));
            }
        }
        missing
    }

    /// The host pid of the first container of Pod `namespace/name`, as its
    /// node's containerd reports it (`ContainerStatus`, verbose).
    pub async fn container_pid(&self, namespace: &str, name: &str) -> Result<u32, String> {
        let rt = self
            .api
            .store
            .resource_type("", "v1", "pods")
            .ok_or("pods are not served")?;
        let pod = self.api.store.get(&rt, namespace, name).map_err(|e| e.message)?;
        let text = |p: &str| pod.pointer(p).and_then(serde_json::Value::as_str).unwrap_or_default();
        let id = text("/status/containerStatuses/0/containerID")
            .strip_prefix("containerd://")
            .ok_or("the Pod has no container yet")?
            .to_owned();
        let node = self
            .nodes
            .iter()
            .find(|n| n.name == text("/spec/nodeName"))
            .ok_or("the Pod is on no node of this cluster")?;
        let socket = node.root.join("run/containerd/containerd.sock");
        let mut cri = kubelet::cri::Cri::connect(&socket).await?;
        let status = cri
            .runtime
            .container_status(kubelet::cri::api::ContainerStatusRequest {
                container_id: id,
                verbose: true,
            })
            .await
            .map_err(|e| e.message().to_owned())?
            .into_inner();
        let info: serde_json::Value =
            serde_json::from_str(status.info.get("info").ok_or("no verbose info")?).map_err(|e| e.to_string())?;
        info["pid"]
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok())
            .ok_or_else(|| format!("no pid in {info}"))
    }

    /// Stops node `index`'s containerd (0-based); it comes back on drop to
    /// remove what it ran.
    pub fn stop_containerd(&mut self, index: usize) {
        if let Some(runtime) = self.nodes[index].runtime.as_mut() {
            runtime.stop();
        }
    }

    /// Everything every container of every Pod logged, all instances (to
    /// look for leaked secrets).
    pub fn all_logs(&self) -> String {
        self.logs_matching(|_| true)
    }

    /// Everything the containers of the Pods of `namespace` whose name
    /// starts with `prefix` logged, all instances.
    pub fn logs_of(&self, namespace: &str, prefix: &str) -> String {
        self.logs_matching(|pod| {
            pod["metadata"]["namespace"] == namespace
                && pod["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix))
        })
    }

    fn logs_matching(&self, wanted: impl Fn(&Value) -> bool) -> String {
        let Some(rt) = self.api.store.resource_type("", "v1", "pods") else {
            return String::new();
        };
        let (pods, _) = self.api.store.list(&rt, None);
        let mut all = String::new();
        for pod in pods.iter().filter(|p| wanted(p)) {
            let text = |p: &Value, pointer: &str| {
                p.pointer(pointer)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let statuses = pod["status"]["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for status in &statuses {
                let restarts = status["restartCount"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(0);
                for instance in 0..=restarts {
                    all.push_str(&self.log(
                        &text(pod, "/metadata/namespace"),
                        &text(pod, "/metadata/name"),
                        &text(status, "/name"),
                        instance,
                    ));
                }
            }
        }
        all
    }

    /// Every Pod's container statuses and first container's log, for a report.
    pub fn report(&self) -> String {
        let Some(rt) = self.api.store.resource_type("", "v1", "pods") else {
            return String::new();
        };
        let (pods, _) = self.api.store.list(&rt, None);
        let mut report = String::new();
        for pod in &pods {
            let text = |p: &str| pod.pointer(p).and_then(serde_json::Value::as_str).unwrap_or_default();
            let (namespace, name) = (text("/metadata/namespace"), text("/metadata/name"));
            let container = text("/spec/containers/0/name");
            let restarts = pod["status"]["containerStatuses"][0]["restartCount"]
                .as_u64()
                .unwrap_or(0);
            let instance = u32::try_from(restarts).unwrap_or(0);
            report.push_str(&format!(
                "\n{namespace}/{name}: {:#}\nlog: {}",
                pod["status"]["containerStatuses"],
                self.log(namespace, name, container, instance)
            ));
            // Why it restarted: the instance before, as `kubectl logs --previous` shows it.
            if let Some(previous) = instance.checked_sub(1) {
                report.push_str(&format!(
                    "\nprevious log: {}",
                    self.log(namespace, name, container, previous)
                ));
            }
        }
        report
    }

    /// The output of `container` of Pod `namespace/name`'s instance
    /// `instance` (0 first), from its CRI log file.
    pub fn log(&self, namespace: &str, name: &str, container: &str, instance: u32) -> String {
        let Some(rt) = self.api.store.resource_type("", "v1", "pods") else {
            return String::new();
        };
        let Ok(pod) = self.api.store.get(&rt, namespace, name) else {
            return String::new();
        };
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        let Some(node) = self.nodes.iter().find(|n| n.name == node) else {
            return String::new();
        };
        kubelet::read_log(&node.root, &pod, container, instance)
    }
}

/// Gives kubelets a way to request Pod-bound tokens.
impl TestApi {
    pub fn token_issuer(&self) -> kubelet::TokenIssuer {
        let state = self.state.clone();
        Arc::new(move |pod| {
            let text = |pointer: &str| {
                pod.pointer(pointer)
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
            };
            let reference = json!({"apiVersion": "v1", "kind": "Pod", "name": text("/metadata/name"), "uid": text("/metadata/uid")});
            let (namespace, account) = (text("/metadata/namespace"), text("/spec/serviceAccountName"));
            let (extra, bound) =
                crate::auth::bind(&state.store, namespace, account, &reference).map_err(|e| e.message)?;
            Ok(state.tokens.issue_bound(namespace, account, extra, bound))
        })
    }
}
