//! The end-to-end tests' cluster: prewarm installed with its chart from the
//! image built from the checkout, its Pods run by test kubelets through
//! containerd's CRI (`prewarm_testapi::installed`), driven with real kubectl,
//! with images checked in each node's runtime through CRI.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prewarm_nodeagent::cri::Cri;
use prewarm_testapi::installed::node_labels;
use prewarm_testapi::installed::{Install, InstalledCluster};
use prewarm_testapi::registries::SeedRegistries;
use serde_json::Value;

use super::{Kubectl, Ran, repo};

pub struct E2e {
    pub cluster: InstalledCluster,
    pub kubectl: Kubectl,
    _dir: tempfile::TempDir,
}

/// The controller's flags in these tests: NodeImages at once, a lease that
/// changes hands in seconds.
const CONTROLLER_ARGS: [&str; 3] = [
    "--nodeimage-creation-delay=0s",
    "--leader-elect-lease-duration=3s",
    "--leader-elect-retry-period=500ms",
];

/// Three nodes with the chart installed (one webhook and one controller
/// replica), up once the controller has made each node's NodeImage (tests
/// that read a node's NodeImage start from there).
pub async fn up(gate_on: bool) -> E2e {
    // Each cluster on a network of its own: past the bridges that exist
    // (another test process's clusters).
    static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
    let index = loop {
        let index = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        if !std::path::Path::new(&format!("/sys/class/net/prewarm-e{index}")).exists() {
            break index;
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let image = tokio::task::block_in_place(super::build_image).image;
    let install = Install {
        replicas: 1,
        sets: vec![
            // The nodes share this machine's disk, however full it is; the
            // check itself is tested with a disk the test controls.
            "daemon.maxImageFsUsage=100".to_owned(),
            "logFormat=text".to_owned(),
        ],
        controller_args: CONTROLLER_ARGS.map(str::to_owned).to_vec(),
        agent_args: vec!["--status-interval-ms=200".to_owned()],
        ..Install::seed(&image, &super::manifests::helm_python(), gate_on)
    };
    let network = (format!("10.{}.0.0/16", 230 + index), format!("prewarm-e{index}"));
    let cluster = InstalledCluster::start(dir.path(), 3, (&network.0, &network.1), node_labels, install)
        .await
        .unwrap();
    let kubectl = Kubectl::new(&cluster.pods.api);
    tokio::task::block_in_place(|| {
        wait_until("a NodeImage for each node", MINUTE, || {
            kubectl.run(&["get", "nodeimage", "node-1", "node-2", "node-3"]).ok
        })
    });
    E2e {
        cluster,
        kubectl,
        _dir: dir,
    }
}

impl E2e {
    pub fn registries(&self) -> &SeedRegistries {
        &self.cluster.pods.registries
    }

    /// `kubectl apply` of `manifest` (YAML text); returns kubectl's result.
    pub fn apply(&self, manifest: &str) -> Ran {
        let file = self.cluster.pods.dir.join(format!("manifest-{}.yaml", manifest.len()));
        std::fs::write(&file, manifest).unwrap();
        self.kubectl.apply(&file, &[])
    }

    /// A seed example, its images pointed at the local registry, renamed `name`.
    pub fn seed(&self, file: &str, name: &str) -> String {
        let text = std::fs::read_to_string(repo(&format!("api/tests/fixtures/seed/{file}"))).unwrap();
        let text = text.replace("name: job-with-always", &format!("name: {name}"));
        ["nginx:1.9.1", "busybox:1.29.2"].iter().fold(text, |text, image| {
            text.replace(&format!(" {image}"), &format!(" {}", self.registries().image(image)))
        })
    }

    pub fn get(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl.ok(&all)).unwrap()
    }

    /// Waits until the job's status satisfies `done`; returns the status.
    pub fn wait_job(&self, kind: &str, name: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let job = self.get(&[kind, name]);
            if done(&job["status"]) {
                return job["status"].clone();
            }
            assert!(
                started.elapsed() < within,
                "{kind} {name} not done after {within:?}: {:#}\nlogs:\n{}",
                job["status"],
                self.cluster.pods.report()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Which nodes' runtimes have `image`, asked through CRI.
    pub async fn nodes_with(&self, image: &str) -> Vec<String> {
        let mut with = Vec::new();
        for node in &self.cluster.pods.nodes {
            let cri = Cri::connect(&node.root.join("run/containerd/containerd.sock"))
                .await
                .unwrap();
            if cri.image_id(image, Duration::from_secs(5)).await.unwrap().is_some() {
                with.push(node.name.clone());
            }
        }
        with
    }

    /// `kubectl prewarm ARGS`, the plugin found on PATH as kubectl finds plugins.
    pub fn plugin(&self, args: &[&str]) -> Ran {
        let dir = super::manifests::binary("kubectl-prewarm").parent().unwrap().to_owned();
        let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default());
        let mut all = vec!["prewarm"];
        all.extend_from_slice(args);
        let output = self.kubectl.command(&all).env("PATH", path).output().unwrap();
        Ran {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn events_of(&self, name: &str) -> String {
        self.kubectl.ok(&[
            "get",
            "events",
            "--all-namespaces",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "json",
        ])
    }
}

/// Polls `check` every 200 ms until it holds; fails with `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn completed(status: &Value) -> bool {
    status["completionTime"].is_string()
}

pub const MINUTE: Duration = Duration::from_secs(60);

pub fn job(name: &str, image: &str, nodes: &[&str], extra: &str) -> String {
    format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: {name}\nspec:\n  image: {image}\n  parallelism: 3\n  selector:\n    names: [{}]\n  pullPolicy:\n    backoffLimit: 0\n    timeoutSeconds: 30\n  completionPolicy:\n    type: Always\n{extra}",
        nodes.join(", ")
    )
}

/// The owners of `image`'s tags on `node`.
pub fn tag_owners(e2e: &E2e, node: &str, image: &str) -> Vec<String> {
    let node_image = e2e.get(&["nodeimage", node]);
    let (repository, tag) = image.rsplit_once(':').unwrap();
    node_image["spec"]["images"][repository]["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["tag"] == tag)
        .flat_map(|t| t["ownerReferences"].as_array().cloned().unwrap_or_default())
        .filter_map(|o| o["name"].as_str().map(str::to_owned))
        .collect()
}
