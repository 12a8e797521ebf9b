#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! prewarm installed as users install it: the chart, through the real Helm
//! library, from the image built from the checkout, on a [`PodCluster`]
//! whose kubelets run every Pod through containerd's CRI. What the local
//! cluster runs by default and what the end-to-end tests run on; their
//! faults are what happens to Pods on a node: a container's process killed
//! or hung, a Deployment scaled to zero, a node's runtime stopped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::pod_cluster::PodCluster;

/// Where the chart puts prewarm (OpenKruise's namespace) and its agents.
pub const NAMESPACE: &str = "kruise-system";
pub const AGENT_NAMESPACE: &str = "prewarm-nodeagent";
const RELEASE: &str = "kruise";

/// Polls `done` every 100 ms; fails with `failure()` after `within`.
fn until(within: Duration, done: impl Fn() -> bool, failure: impl Fn() -> String) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{}", failure());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The nodes' labels: the hostname, a zone (`a` for odd nodes, `b` for even
/// ones), and the seed's `node-type: xxx` on the first two.
pub fn node_labels(index: usize) -> Value {
    let name = format!("node-{index}");
    let zone = if index % 2 == 1 { "a" } else { "b" };
    let mut labels = json!({"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone});
    if index <= 2 {
        labels["node-type"] = json!("xxx");
    }
    labels
}

/// How the chart is installed.
#[derive(Debug, Clone)]
pub struct Install {
    /// The image scripts/build-images.sh left in buildah's store.
    pub image: String,
    /// The Python of the Helm library's venv.
    pub helm_python: PathBuf,
    pub gate_on: bool,
    /// Webhook and controller replicas (the chart's default is 2).
    pub replicas: usize,
    /// `--set` values beyond the feature gate and the replicas.
    pub sets: Vec<String>,
    /// The controller's and the agent's `extraArgs`.
    pub controller_args: Vec<String>,
    pub agent_args: Vec<String>,
}

impl Install {
    /// As the seed installs it: the chart's defaults and the gate.
    pub fn seed(image: &str, helm_python: &Path, gate_on: bool) -> Self {
        Self {
            image: image.to_owned(),
            helm_python: helm_python.to_owned(),
            gate_on,
            replicas: 2,
            sets: Vec::new(),
            controller_args: Vec::new(),
            agent_args: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct InstalledCluster {
    pub pods: PodCluster,
    install: Install,
    /// The controller's flags after the install's (a later one of a name wins).
    controller_extra: Vec<String>,
}

impl InstalledCluster {
    /// A cluster of `nodes` nodes on `network` (subnet and bridge name, see
    /// [`PodCluster::start`]) with the chart installed as `install` says;
    /// returns once every prewarm Pod is Ready.
    pub async fn start(
        dir: &Path,
        nodes: usize,
        network: (&str, &str),
        labels: impl Fn(usize) -> Value,
        install: Install,
    ) -> Result<Self, String> {
        let pods = PodCluster::start(dir, nodes, network.0, network.1, labels).await;
        pods.push_from_buildah(&install.image)?;
        let cluster = Self {
            pods,
            install,
            controller_extra: Vec::new(),
        };
        tokio::task::block_in_place(|| {
            cluster.helm("install")?;
            cluster.wait_ready(Duration::from_secs(180))
        })?;
        Ok(cluster)
    }

    /// `helm install|upgrade` of the chart with the current values.
    fn helm(&self, action: &str) -> Result<String, String> {
        let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/prewarm");
        let install = &self.install;
        let (repository, tag) = install
            .image
            .rsplit_once(':')
            .ok_or_else(|| format!("{}: no tag", install.image))?;
        let mut sets = vec![
            format!("featureGates=ImagePullJobGate={}", install.gate_on),
            format!("image.repository={repository}"),
            format!("image.tag={tag}"),
            format!("webhook.replicas={}", install.replicas),
            format!("controller.replicas={}", install.replicas),
        ];
        sets.extend(install.sets.iter().cloned());
        let controller_args = [&install.controller_args[..], &self.controller_extra[..]].concat();
        let controller_args = format!("controller.extraArgs={}", json!(controller_args));
        let agent_args = format!("daemon.extraArgs={}", json!(install.agent_args));
        let chart = chart.to_str().ok_or("the chart's path is not UTF-8")?;
        let mut args = vec![
            action,
            RELEASE,
            chart,
            "--set-json",
            &controller_args,
            "--set-json",
            &agent_args,
        ];
        for set in &sets {
            args.extend(["--set", set]);
        }
        self.pods.helm(&install.helm_python, &args)
    }

    /// prewarm's Pods: namespace, name prefix and how many.
    fn expected(&self) -> [(&'static str, &'static str, usize); 3] {
        [
            (NAMESPACE, "prewarm-webhook-", self.install.replicas),
            (NAMESPACE, "prewarm-controller-", self.install.replicas),
            (AGENT_NAMESPACE, "prewarm-nodeagent-", self.pods.nodes.len()),
        ]
    }

    /// Waits until every prewarm Pod is there and Ready.
    pub fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let missing = self.pods.not_ready(&self.expected());
            if missing.is_empty() {
                return Ok(());
            }
            if started.elapsed() > within {
                return Err(format!(
                    "not Ready within {within:?}: {missing:?}{}",
                    self.pods.report()
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn pods_in(&self, namespace: &str) -> Vec<Value> {
        let Some(rt) = self.pods.api.store.resource_type("", "v1", "pods") else {
            return Vec::new();
        };
        let (pods, _) = self.pods.api.store.list(&rt, Some(namespace));
        pods
    }

    /// The Pods of `namespace` whose name starts with `prefix`.
    pub fn pods_named(&self, namespace: &str, prefix: &str) -> Vec<Value> {
        self.pods_in(namespace)
            .into_iter()
            .filter(|p| p["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
            .collect()
    }

    /// The agent Pod on node `index` (0-based).
    fn agent_pod(&self, index: usize) -> Value {
        let node = &self.pods.nodes[index].name;
        self.pods_named(AGENT_NAMESPACE, "prewarm-nodeagent-")
            .into_iter()
            .find(|p| p["spec"]["nodeName"] == json!(node))
            .unwrap_or_else(|| panic!("no agent Pod on {node}"))
    }

    /// Signals the process of the agent container on node `index`.
    fn signal_agent(&self, index: usize, signal: &str) {
        let pod = self.agent_pod(index);
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let pid = tokio::runtime::Handle::current()
            .block_on(self.pods.container_pid(AGENT_NAMESPACE, name))
            .unwrap();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// The agent on node `index` crashes (SIGKILL); its kubelet restarts it
    /// (at once the first time, then after kubelet's back-off).
    /// Returns once the kubelet has seen the container end.
    pub fn crash_agent(&self, index: usize) {
        let status = |cluster: &Self| cluster.agent_pod(index)["status"]["containerStatuses"][0].clone();
        let before = status(self)["containerID"].clone();
        tokio::task::block_in_place(|| self.signal_agent(index, "KILL"));
        until(
            Duration::from_secs(30),
            || {
                let now = status(self);
                now["containerID"] != before || now["state"]["running"].is_null()
            },
            || format!("the kubelet saw no crash: {:#}", status(self)),
        );
    }

    /// The agent on node `index` hangs (SIGSTOP): it neither pulls nor reports.
    pub fn hang_agent(&self, index: usize) {
        tokio::task::block_in_place(|| self.signal_agent(index, "STOP"));
    }

    /// The controller goes away as `kubectl scale --replicas=0` takes it:
    /// its Pods are deleted and their containers stopped.
    pub fn stop_controller(&self) {
        tokio::task::block_in_place(|| {
            let rt = self.pods.api.store.resource_type("apps", "v1", "deployments").unwrap();
            let mut deployment = self.pods.api.store.get(&rt, NAMESPACE, "prewarm-controller").unwrap();
            deployment["spec"]["replicas"] = json!(0);
            self.pods.api.put(&deployment).unwrap();
            until(
                Duration::from_secs(30),
                || self.pods_named(NAMESPACE, "prewarm-controller-").is_empty(),
                || "controller Pods still there".to_owned(),
            );
        });
    }

    /// `helm upgrade` with `args` after the controller's flags (which brings
    /// a stopped controller back); returns once its Pods are Ready.
    pub fn start_controller(&mut self, args: &[&str]) {
        self.controller_extra = args.iter().map(|a| (*a).to_owned()).collect();
        let wanted: Vec<String> = self.controller_extra.clone();
        self.upgrade(&["prewarm-controller-"], |given| {
            wanted.iter().all(|a| given.contains(a))
        });
    }

    /// `helm upgrade` with `--set openkruise.allow=…`; returns once the
    /// webhook and controller Pods run with the new flag and are Ready.
    pub fn allow_openkruise(&mut self, allow: bool) {
        self.install.sets.retain(|set| !set.starts_with("openkruise.allow="));
        self.install.sets.push(format!("openkruise.allow={allow}"));
        let flag = "--allow-openkruise".to_owned();
        self.upgrade(&["prewarm-webhook-", "prewarm-controller-"], |given| {
            given.contains(&flag) == allow
        });
    }

    /// `helm upgrade` adding `sets` (helm's `--set` pairs) to the install's values.
    pub fn upgrade_with(&mut self, sets: &[&str]) {
        self.install.sets.extend(sets.iter().map(|s| (*s).to_owned()));
        self.upgrade(&[], |_| true);
    }

    /// `helm upgrade` with the current values; returns once the Pods named
    /// by `prefixes` are as many as the install asks, each Ready and with
    /// arguments that `run_with` accepts (the Deployments replace Pods of an
    /// older template: only the new ones count).
    fn upgrade(&self, prefixes: &[&str], run_with: impl Fn(&[String]) -> bool) {
        tokio::task::block_in_place(|| {
            self.helm("upgrade").unwrap();
            let rolled_out = |prefix: &&str| {
                let pods = self.pods_named(NAMESPACE, prefix);
                pods.len() == self.install.replicas
                    && pods.iter().all(|pod| {
                        let given: Vec<String> =
                            serde_json::from_value(pod["spec"]["containers"][0]["args"].clone()).unwrap_or_default();
                        crate::workloads::pod_ready(pod) && run_with(&given)
                    })
            };
            until(
                Duration::from_secs(120),
                || prefixes.iter().all(rolled_out),
                || format!("{prefixes:?} not rolled out:{}", self.pods.report()),
            );
        });
    }

    /// Stops node `index`'s containerd (its containers go on; the agent
    /// cannot reach the runtime).
    pub fn stop_containerd(&mut self, index: usize) {
        self.pods.stop_containerd(index);
    }

    /// Turns ImagePullJobGate on or off in the feature gate ConfigMap as an
    /// admin does (nothing restarts); returns once every webhook and
    /// controller Pod reports the new value.
    pub fn set_gate(&mut self, on: bool) {
        self.install.gate_on = on;
        self.pods
            .api
            .put(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "prewarm-feature-gates", "namespace": NAMESPACE},
                "data": {"featureGates": format!("ImagePullJobGate={on}")}}))
            .unwrap();
        let reported = format!(
            "prewarm_feature_gate_enabled{{gate=\"ImagePullJobGate\"}} {}",
            u8::from(on)
        );
        tokio::task::block_in_place(|| {
            for (prefix, port) in [("prewarm-webhook-", 8081), ("prewarm-controller-", 8082)] {
                for pod in self.pods_named(NAMESPACE, prefix) {
                    let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
                    let address = SocketAddr::new(ip.parse().unwrap(), port);
                    until(
                        Duration::from_secs(10),
                        || crate::infra::http_get(address, "/metrics").is_some_and(|m| m.contains(&reported)),
                        || format!("{address} kept the old gate"),
                    );
                }
            }
        });
    }

    /// A kubeconfig with the token the kubelet gave the agent Pod on node
    /// `index` (bound to that Pod and its node), read from its volume.
    pub fn agent_kubeconfig(&self, index: usize) -> PathBuf {
        let pod = self.agent_pod(index);
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        let node = &self.pods.nodes[index];
        let projected = node
            .root
            .join("var/lib/kubelet/pods")
            .join(uid)
            .join("volumes/kubernetes.io~projected");
        let token = std::fs::read_dir(&projected)
            .unwrap()
            .flatten()
            .find_map(|volume| std::fs::read_to_string(volume.path().join("token")).ok())
            .unwrap_or_else(|| panic!("no token under {}", projected.display()));
        let path = self.pods.dir.join(format!("kubeconfig-nodeagent-{}", node.name));
        std::fs::write(
            &path,
            self.pods
                .api
                .kubeconfig_with_token(AGENT_NAMESPACE, "prewarm-nodeagent", &token),
        )
        .unwrap();
        path
    }

    /// What the local cluster prints: where everything is, and how to reach it.
    pub fn summary(&self) -> String {
        let nodes: Vec<&str> = self.pods.nodes.iter().map(|n| n.name.as_str()).collect();
        format!(
            "kubeconfig: {}\nnodes: {}\n{}install: chart charts/prewarm as release {RELEASE} ({}), Pods in {NAMESPACE} and {AGENT_NAMESPACE}\n",
            self.pods.kubeconfig.display(),
            nodes.join(", "),
            self.pods.registries.summary(),
            self.install.image,
        )
    }
}
