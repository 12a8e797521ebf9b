//! A kubelet for the test cluster: it runs the Pods bound to its node through
//! containerd's CRI, as kubelet does, and writes their status. Test
//! infrastructure, not product. It reads and writes the test API server's
//! store in process (the API path, admission and RBAC, is the API server's
//! business, tested on its own); what it does with a Pod follows kubelet's
//! source, cited in each module.

pub mod backoff;
mod container_inputs;
pub mod cri;
mod pod_volumes;
pub mod probes;
pub mod spec;
pub mod status;
pub mod volumes;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::store::{Store, Subresource};

/// How often each Pod is synced: kubelet reacts to watch events and resyncs
/// every second or so; the test kubelet polls its in-process store instead.
const SYNC_PERIOD: Duration = Duration::from_millis(300);

pub(crate) fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// Issues a token bound to a Pod (TokenRequest with its `boundObjectRef`).
pub type TokenIssuer = Arc<dyn Fn(&Value) -> Result<String, String> + Send + Sync>;

/// One node: its name, its files, its runtime and the API it reports to.
#[derive(Clone)]
pub struct Node {
    pub name: String,
    /// The node's filesystem root: hostPath `/x` is `<root>/x`; Pods live
    /// under `<root>/var/lib/kubelet/pods` and their logs under `<root>/var/log/pods`.
    pub root: PathBuf,
    /// containerd's CRI socket.
    pub socket: PathBuf,
    /// The node's address (`status.hostIP`, and the Pod IP of hostNetwork Pods).
    pub host_ip: String,
    /// Where Pods reach the API server (`KUBERNETES_SERVICE_HOST`/`_PORT`).
    pub api_host: String,
    pub api_port: u16,
    /// The cluster CA (`ca.crt` of service-account volumes).
    pub ca_pem: String,
    pub backoff: backoff::Limits,
    pub store: Arc<Store>,
    pub tokens: TokenIssuer,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.name)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Node {
    fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let rt = self.store.resource_type("", "v1", plural)?;
        self.store.get(&rt, namespace, name).ok()
    }

    fn token_for(&self, pod: &Value) -> Result<String, String> {
        (self.tokens)(pod)
    }

    fn pods(&self) -> Vec<Value> {
        let Some(rt) = self.store.resource_type("", "v1", "pods") else {
            return Vec::new();
        };
        let (pods, _) = self.store.list(&rt, None);
        pods.into_iter()
            .filter(|p| text(p, "/spec/nodeName") == self.name)
            .collect()
    }

    /// Writes `status` to the Pod unless it is already there.
    fn write_status(&self, pod: &Value, status: Value) {
        if pod.get("status") == Some(&status) {
            return;
        }
        let Some(rt) = self.store.resource_type("", "v1", "pods") else {
            return;
        };
        let mut updated = pod.clone();
        updated["status"] = status;
        // Unconditional, as kubelet's status manager patches.
        if let Some(metadata) = updated["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
        }
        let (namespace, name) = (text(pod, "/metadata/namespace"), text(pod, "/metadata/name"));
        if let Err(e) = self
            .store
            .update(&rt, namespace, name, updated, Subresource::Status, false)
        {
            tracing::debug!(pod = name, error = e.message, "pod status not written");
        }
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("var/lib/kubelet/pods").join(uid)
    }

    fn log_dir(&self, pod: &Value) -> PathBuf {
        self.root.join("var/log/pods").join(format!(
            "{}_{}_{}",
            text(pod, "/metadata/namespace"),
            text(pod, "/metadata/name"),
            text(pod, "/metadata/uid")
        ))
    }
}

/// The output of instance `instance` (0 first) of `container` of `pod` on
/// the node whose root is `root`, from its CRI log file (lines
/// `<time> <stream> <P|F> <text>`; `P` marks a line continued by the next).
pub fn read_log(root: &std::path::Path, pod: &Value, container: &str, instance: u32) -> String {
    let dir = root.join("var/log/pods").join(format!(
        "{}_{}_{}",
        text(pod, "/metadata/namespace"),
        text(pod, "/metadata/name"),
        text(pod, "/metadata/uid")
    ));
    let file = std::fs::read_to_string(dir.join(container).join(format!("{instance}.log"))).unwrap_or_default();
    let mut out = String::new();
    for line in file.lines() {
        let mut fields = line.splitn(4, ' ');
        let (_, _, tag, content) = (fields.next(), fields.next(), fields.next(), fields.next());
        out.push_str(content.unwrap_or_default());
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

/// A Pod's worker task, stopped with the kubelet that started it (as the
/// kubelet process takes its goroutines along when it stops).
struct Worker(tokio::task::JoinHandle<()>);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the kubelet of `node` until the task is dropped: one worker per Pod
/// bound to the node, stopped (containers and sandbox torn down) when its
/// Pod is gone.
pub async fn run(node: Node) {
    let cri = loop {
        match cri::Cri::connect(&node.socket).await {
            Ok(cri) => break cri,
            Err(e) => {
                tracing::warn!(node = node.name, error = e, "CRI not reachable yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut workers: HashMap<String, Worker> = HashMap::new();
    loop {
        let pods = node.pods();
        let live: Vec<String> = pods.iter().map(|p| text(p, "/metadata/uid").to_owned()).collect();
        for pod in &pods {
            let uid = text(pod, "/metadata/uid").to_owned();
            workers
                .entry(uid.clone())
                .or_insert_with(|| Worker(tokio::spawn(worker::run(node.clone(), cri.clone(), uid))));
        }
        // A worker ends itself once its Pod is gone and torn down.
        workers.retain(|uid, worker| live.contains(uid) || !worker.0.is_finished());
        tokio::time::sleep(SYNC_PERIOD).await;
    }
}
