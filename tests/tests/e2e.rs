//! End to end on a local cluster (`prewarm_testapi::local_cluster`): the test
//! API server, the webhook, the controller and three node agents, each node
//! with its own containerd, and local registries. Everything is driven with
//! real kubectl; images are checked in each node's runtime through CRI.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Kubectl, repo};
use prewarm_nodeagent::cri::Cri;
use prewarm_testapi::local_cluster::{LocalCluster, PRIVATE_USER};
use serde_json::Value;

struct E2e {
    cluster: LocalCluster,
    kubectl: Kubectl,
    _dir: tempfile::TempDir,
}

fn binaries() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned()
}

async fn up(gate_on: bool) -> E2e {
    let dir = tempfile::tempdir().unwrap();
    let cluster = LocalCluster::start(dir.path(), &binaries(), 3, gate_on).await;
    let kubectl = Kubectl::new(&cluster.api);
    E2e {
        cluster,
        kubectl,
        _dir: dir,
    }
}

impl E2e {
    /// `kubectl apply` of `manifest` (YAML text); returns kubectl's result.
    fn apply(&self, manifest: &str) -> common::Ran {
        let file = self.cluster.dir.join(format!("manifest-{}.yaml", manifest.len()));
        std::fs::write(&file, manifest).unwrap();
        self.kubectl.apply(&file, &[])
    }

    /// A seed example, its images pointed at the local registry, renamed `name`.
    fn seed(&self, file: &str, name: &str) -> String {
        let text = std::fs::read_to_string(repo(&format!("api/tests/fixtures/seed/{file}"))).unwrap();
        let text = text.replace("name: job-with-always", &format!("name: {name}"));
        ["nginx:1.9.1", "busybox:1.29.2"].iter().fold(text, |text, image| {
            text.replace(&format!(" {image}"), &format!(" {}", self.cluster.image(image)))
        })
    }

    fn get(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl.ok(&all)).unwrap()
    }

    /// Waits until the job's status satisfies `done`; returns the status.
    fn wait_job(&self, kind: &str, name: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
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
                self.cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Which nodes' runtimes have `image`, asked through CRI.
    async fn nodes_with(&self, image: &str) -> Vec<String> {
        let mut with = Vec::new();
        for node in &self.cluster.nodes {
            let cri = Cri::connect(&node.socket).await.unwrap();
            if cri.image_id(image, Duration::from_secs(5)).await.unwrap().is_some() {
                with.push(node.name.clone());
            }
        }
        with
    }

    fn events_of(&self, name: &str) -> String {
        self.kubectl.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={name}"),
            "-o",
            "json",
        ])
    }
}

fn completed(status: &Value) -> bool {
    status["completionTime"].is_string()
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_jobs_pull_into_the_targeted_runtimes() {
    let e2e = up(true).await;
    let nginx = e2e.cluster.image("nginx:1.9.1");

    // The seed's names-and-labels example is refused, with the webhook's message.
    let refused = tokio::task::block_in_place(|| e2e.apply(&e2e.seed("01-imagepulljob-names-and-labels.yaml", "both")));
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(refused.stderr.contains("spec.selector"), "{}", refused.stderr);

    // By names: exactly the named nodes.
    let status = tokio::task::block_in_place(|| {
        let applied = e2e.apply(&e2e.seed("02-imagepulljob-names.yaml", "by-names"));
        assert!(applied.ok, "{}", applied.stderr);
        e2e.wait_job("imagepulljob", "by-names", MINUTE, completed)
    });
    assert_eq!(
        (status["desired"].as_i64(), status["succeeded"].as_i64()),
        (Some(2), Some(2)),
        "{status:#}"
    );
    assert_eq!(e2e.nodes_with(&nginx).await, ["node-1", "node-2"]);
    let table = tokio::task::block_in_place(|| {
        e2e.kubectl
            .ok(&["get", "imagepulljobs.v1alpha1.apps.kruise.io", "by-names"])
    });
    assert!(table.contains("TOTAL") && table.contains("SUCCEED"), "{table}");

    // By label (node-type: xxx is on node-1 and node-2), and by pod selector (a pod on node-3).
    let busybox = e2e.cluster.image("busybox:1.36");
    let by_label = e2e
        .seed("03-imagepulljob-labels.yaml", "by-label")
        .replace(&nginx, &busybox);
    let status = tokio::task::block_in_place(|| {
        assert!(e2e.apply(&by_label).ok);
        e2e.wait_job("imagepulljob", "by-label", MINUTE, completed)
    });
    assert_eq!(status["succeeded"], 2, "{status:#}");
    assert_eq!(e2e.nodes_with(&busybox).await, ["node-1", "node-2"]);

    let redis = e2e.cluster.image("redis:7");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels:\n    pod-label: xxx\nspec:\n  nodeName: node-3\n  containers:\n  - name: web\n    image: nginx\n";
    let by_pods = e2e
        .seed("04-imagepulljob-pod-selector.yaml", "by-pods")
        .replace(&nginx, &redis);
    let status = tokio::task::block_in_place(|| {
        assert!(e2e.apply(pod).ok);
        assert!(e2e.apply(&by_pods).ok);
        e2e.wait_job("imagepulljob", "by-pods", MINUTE, completed)
    });
    assert_eq!(status["succeeded"], 1, "{status:#}");
    assert_eq!(e2e.nodes_with(&redis).await, ["node-3"]);

    // A Never job on every node keeps running; a digest-pinned image works too.
    let ubuntu = e2e.cluster.image("ubuntu:22.04");
    let never = format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: never\nspec:\n  image: {ubuntu}\n  parallelism: 3\n  completionPolicy:\n    type: Never\n"
    );
    let status = tokio::task::block_in_place(|| {
        assert!(e2e.apply(&never).ok);
        e2e.wait_job("imagepulljob", "never", MINUTE, |s| s["succeeded"] == 3)
    });
    assert!(
        status["completionTime"].is_null(),
        "a Never job does not complete: {status:#}"
    );
    assert_eq!(e2e.nodes_with(&ubuntu).await, ["node-1", "node-2", "node-3"]);

    // An image that does not exist: the nodes are listed as failed, and the job says so in events.
    let missing = e2e.cluster.image("nginx:0.0-missing");
    let job = format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: missing\nspec:\n  image: {missing}\n  parallelism: 2\n  selector:\n    names: [node-2, node-1]\n  pullPolicy:\n    backoffLimit: 0\n    timeoutSeconds: 30\n  completionPolicy:\n    type: Always\n"
    );
    let status = tokio::task::block_in_place(|| {
        assert!(e2e.apply(&job).ok);
        e2e.wait_job("imagepulljob", "missing", MINUTE, completed)
    });
    assert_eq!(status["failed"], 2, "{status:#}");
    assert_eq!(
        status["failedNodes"],
        serde_json::json!(["node-1", "node-2"]),
        "sorted: {status:#}"
    );
    let events = tokio::task::block_in_place(|| e2e.events_of("missing"));
    assert!(events.contains("node-1") && events.contains("\"Warning\""), "{events}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_images_pull_with_the_right_secret_and_a_wrong_password_leaks_nowhere() {
    let e2e = up(true).await;
    let private = e2e.cluster.private_image();
    let registry = format!("127.0.0.1:{}", e2e.cluster.private_registry_port);
    let dockerconfig = |password: &str| {
        base64::engine::general_purpose::STANDARD.encode(
            serde_json::json!({"auths": {&registry: {"username": PRIVATE_USER.0, "password": password}}}).to_string(),
        )
    };
    let wrong_password = "wr0ng-Pa55-do-not-print";
    let secrets = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: right\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: wrong\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {}\n",
        dockerconfig(PRIVATE_USER.1),
        dockerconfig(wrong_password)
    );
    let job = |name: &str, secret: &str, node: &str| {
        format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: {name}\nspec:\n  image: {private}\n  pullSecrets: [{secret}]\n  selector:\n    names: [{node}]\n  pullPolicy:\n    backoffLimit: 1\n    timeoutSeconds: 30\n  completionPolicy:\n    type: Always\n"
        )
    };
    let (right, wrong) = tokio::task::block_in_place(|| {
        assert!(e2e.apply(&secrets).ok);
        assert!(e2e.apply(&job("with-right", "right", "node-1")).ok);
        assert!(e2e.apply(&job("with-wrong", "wrong", "node-2")).ok);
        (
            e2e.wait_job("imagepulljob", "with-right", MINUTE, completed),
            e2e.wait_job("imagepulljob", "with-wrong", MINUTE, completed),
        )
    });
    assert_eq!(right["succeeded"], 1, "{right:#}");
    assert_eq!(wrong["failed"], 1, "{wrong:#}");
    assert_eq!(e2e.nodes_with(&private).await, ["node-1"]);
    // The copies the node agents read from are released once the jobs are done.
    let copies = tokio::task::block_in_place(|| e2e.get(&["secrets", "-n", "kruise-daemon-config"]));
    assert_eq!(copies["items"], serde_json::json!([]), "{copies:#}");
    // A Never job keeps its copy: it follows the source Secret, and goes with the job.
    let copied_password = |e2e: &E2e| -> Option<String> {
        let copies = e2e.get(&["secrets", "-n", "kruise-daemon-config"]);
        let copy = copies["items"].as_array()?.first()?.clone();
        let config = base64::engine::general_purpose::STANDARD
            .decode(copy["data"][".dockerconfigjson"].as_str()?)
            .ok()?;
        let config: Value = serde_json::from_slice(&config).ok()?;
        config["auths"][&registry]["password"].as_str().map(str::to_owned)
    };
    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        let started = Instant::now();
        while !check() {
            assert!(started.elapsed() < MINUTE, "{what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    tokio::task::block_in_place(|| {
        let never = job("kept", "right", "node-3").replace("type: Always", "type: Never");
        assert!(e2e.apply(&never).ok);
        wait_for("the copy made", &|| {
            copied_password(&e2e).as_deref() == Some(PRIVATE_USER.1)
        });
        let rotated = secrets.replace(&dockerconfig(PRIVATE_USER.1), &dockerconfig("rotated-pw"));
        assert!(e2e.apply(&rotated).ok);
        wait_for("the copy following its source", &|| {
            copied_password(&e2e).as_deref() == Some("rotated-pw")
        });
        e2e.kubectl.ok(&["delete", "imagepulljob", "kept"]);
        wait_for("the copy released", &|| {
            e2e.get(&["secrets", "-n", "kruise-daemon-config"])["items"] == serde_json::json!([])
        });
    });
    let (events, node_images) = tokio::task::block_in_place(|| {
        (
            e2e.kubectl.ok(&["get", "events", "-A", "-o", "json"]),
            e2e.kubectl.ok(&["get", "nodeimages", "-o", "json"]),
        )
    });
    let encoded = base64::engine::general_purpose::STANDARD.encode(wrong_password);
    for (place, text) in [
        ("logs", e2e.cluster.logs()),
        ("events", events),
        ("statuses", wrong.to_string()),
        ("node images", node_images),
    ] {
        assert!(
            !text.contains(wrong_password) && !text.contains(&encoded),
            "the password is in the {place}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gate_refuses_new_jobs_lets_old_ones_go_and_turns_on_with_a_restart() {
    let mut e2e = up(true).await;
    let nginx = e2e.cluster.image("nginx:1.9.1");
    tokio::task::block_in_place(|| {
        assert!(e2e.apply(&e2e.seed("02-imagepulljob-names.yaml", "before")).ok);
        e2e.wait_job("imagepulljob", "before", MINUTE, completed);
    });
    tokio::task::block_in_place(|| e2e.cluster.set_gate(false));
    let refused = tokio::task::block_in_place(|| e2e.apply(&e2e.seed("02-imagepulljob-names.yaml", "after")));
    assert!(
        !refused.ok && refused.stderr.contains("ImagePullJobGate"),
        "{}",
        refused.stderr
    );
    tokio::task::block_in_place(|| e2e.kubectl.ok(&["delete", "imagepulljob", "before", "--wait=false"]));
    tokio::task::block_in_place(|| e2e.cluster.set_gate(true));
    let status = tokio::task::block_in_place(|| {
        let applied = e2e.apply(&e2e.seed("02-imagepulljob-names.yaml", "after"));
        assert!(applied.ok, "{}", applied.stderr);
        e2e.wait_job("imagepulljob", "after", MINUTE, completed)
    });
    assert_eq!(status["succeeded"], 2);
    assert_eq!(e2e.nodes_with(&nginx).await, ["node-1", "node-2"]);
}

fn job(name: &str, image: &str, nodes: &[&str], extra: &str) -> String {
    format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: {name}\nspec:\n  image: {image}\n  parallelism: 3\n  selector:\n    names: [{}]\n  pullPolicy:\n    backoffLimit: 0\n    timeoutSeconds: 30\n  completionPolicy:\n    type: Always\n{extra}",
        nodes.join(", ")
    )
}

/// The owners of `image`'s tags on `node`.
fn tag_owners(e2e: &E2e, node: &str, image: &str) -> Vec<String> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_images_ttl_list_jobs_and_pull_policies() {
    let e2e = up(true).await;
    let nginx = e2e.cluster.image("nginx:1.25");

    // Two jobs for one image on one node: one pull, both owners on the tag.
    tokio::task::block_in_place(|| {
        assert!(e2e.apply(&job("first", &nginx, &["node-1"], "")).ok);
        e2e.wait_job("imagepulljob", "first", MINUTE, completed);
        assert!(e2e.apply(&job("second", &nginx, &["node-1"], "")).ok);
        e2e.wait_job("imagepulljob", "second", MINUTE, completed);
        let mut owners = tag_owners(&e2e, "node-1", &nginx);
        owners.sort();
        assert_eq!(owners, ["first", "second"]);
    });
    assert_eq!(
        e2e.cluster.manifest_requests("nginx:1.25"),
        1,
        "IfNotPresent: the second job did not pull again"
    );

    // imagePullPolicy Always pulls again; IfNotPresent does not.
    tokio::task::block_in_place(|| {
        let always = job("always", &nginx, &["node-1"], "  imagePullPolicy: Always\n");
        assert!(e2e.apply(&always).ok);
        e2e.wait_job("imagepulljob", "always", MINUTE, completed);
    });
    assert_eq!(
        e2e.cluster.manifest_requests("nginx:1.25"),
        2,
        "Always asked the registry again"
    );

    // TTL: a finished job is deleted, and its ownership leaves the tag.
    tokio::task::block_in_place(|| {
        let ttl = job(
            "short-lived",
            &nginx,
            &["node-1"],
            "    ttlSecondsAfterFinished: 1\n    activeDeadlineSeconds: 60\n",
        );
        assert!(e2e.apply(&ttl).ok, "{ttl}");
        let started = Instant::now();
        while e2e.kubectl.run(&["get", "imagepulljob", "short-lived"]).ok {
            assert!(started.elapsed() < MINUTE, "short-lived was not deleted after its TTL");
            std::thread::sleep(Duration::from_millis(200));
        }
        let started = Instant::now();
        while tag_owners(&e2e, "node-1", &nginx).contains(&"short-lived".to_owned()) {
            assert!(started.elapsed() < MINUTE, "the deleted job still owns the tag");
            std::thread::sleep(Duration::from_millis(200));
        }
    });

    // A digest-pinned image.
    let pinned = e2e.cluster.pinned_image("busybox:1.36");
    tokio::task::block_in_place(|| {
        assert!(e2e.apply(&job("pinned", &pinned, &["node-2"], "")).ok);
        let status = e2e.wait_job("imagepulljob", "pinned", MINUTE, completed);
        assert_eq!(status["succeeded"], 1, "{status:#}");
    });
    assert_eq!(e2e.nodes_with(&pinned).await, ["node-2"]);

    // An ImageListPullJob: one child per image; an image added, another removed.
    let (busybox, redis, ubuntu) = (
        e2e.cluster.image("busybox:1.29.2"),
        e2e.cluster.image("redis:7"),
        e2e.cluster.image("ubuntu:22.04"),
    );
    let list = |images: &[&str]| {
        format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImageListPullJob\nmetadata:\n  name: list\nspec:\n  images: [{}]\n  parallelism: 3\n  selector:\n    names: [node-3]\n  completionPolicy:\n    type: Never\n",
            images.join(", ")
        )
    };
    let children = |e2e: &E2e| {
        let jobs = e2e.get(&["imagepulljobs"]);
        let mut images: Vec<String> = jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == "list")
            .map(|j| j["spec"]["image"].as_str().unwrap().to_owned())
            .collect();
        images.sort();
        images
    };
    tokio::task::block_in_place(|| {
        assert!(e2e.apply(&list(&[&busybox, &redis])).ok);
        e2e.wait_job("imagelistpulljob", "list", MINUTE, |s| s["succeeded"] == 2);
        assert!(e2e.apply(&list(&[&busybox, &ubuntu])).ok);
        e2e.wait_job("imagelistpulljob", "list", MINUTE, |s| {
            s["succeeded"] == 2 && s["desired"] == 2
        });
        let started = Instant::now();
        let mut expected = vec![busybox.clone(), ubuntu.clone()];
        expected.sort();
        while children(&e2e) != expected {
            assert!(started.elapsed() < MINUTE, "children: {:?}", children(&e2e));
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    for image in [&busybox, &ubuntu] {
        assert_eq!(e2e.nodes_with(image).await, ["node-3"], "{image}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_controllers_runtimes_and_api_writes_failing() {
    let mut e2e = up(true).await;
    let nginx = e2e.cluster.image("nginx:1.9.1");

    // A node agent killed in the middle of a pull (a throttled registry makes it
    // last seconds) and started again: it pulls what was cut short, once more.
    let slow = e2e.cluster.slow_image();
    let (repository, _) = slow.rsplit_once(':').unwrap();
    tokio::task::block_in_place(|| {
        assert!(e2e.apply(&job("mid-pull", &slow, &["node-1", "node-2"], "")).ok);
        let started = Instant::now();
        while e2e.get(&["nodeimage", "node-1"])["status"]["imageStatuses"][repository]["tags"][0]["phase"] != "Pulling"
        {
            assert!(started.elapsed() < MINUTE, "node-1 never started pulling");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    e2e.cluster.kill_agent(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    e2e.cluster.start_agent(0);
    let status = tokio::task::block_in_place(|| e2e.wait_job("imagepulljob", "mid-pull", MINUTE, completed));
    assert_eq!(status["succeeded"], 2, "{status:#}");
    assert_eq!(e2e.nodes_with(&slow).await, ["node-1", "node-2"]);
    assert_eq!(
        e2e.cluster.manifest_requests("slow:1.0"),
        3,
        "node-2 once, node-1 cut short and once more"
    );

    // A node agent down when the job arrives, back later: it pulls once, and the job completes.
    e2e.cluster.kill_agent(0);
    tokio::task::block_in_place(|| assert!(e2e.apply(&job("agent-down", &nginx, &["node-1", "node-2"], "")).ok));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = tokio::task::block_in_place(|| e2e.get(&["imagepulljob", "agent-down"]));
    assert!(waiting["status"]["completionTime"].is_null(), "{:#}", waiting["status"]);
    e2e.cluster.start_agent(0);
    let status = tokio::task::block_in_place(|| e2e.wait_job("imagepulljob", "agent-down", MINUTE, completed));
    assert_eq!(status["succeeded"], 2, "{status:#}");
    assert_eq!(
        e2e.cluster.manifest_requests("nginx:1.9.1"),
        2,
        "one pull per node, none repeated"
    );

    // The controller restarted while a job waits: the job completes after it.
    let busybox = e2e.cluster.image("busybox:1.36");
    e2e.cluster.stop_controller();
    tokio::task::block_in_place(|| {
        assert!(
            e2e.apply(&job("controller-down", &busybox, &["node-2", "node-3"], ""))
                .ok
        )
    });
    e2e.cluster.start_controller();
    let status = tokio::task::block_in_place(|| e2e.wait_job("imagepulljob", "controller-down", MINUTE, completed));
    assert_eq!(status["succeeded"], 2, "{status:#}");

    // One in twenty API writes failing: jobs still converge.
    e2e.cluster.api.store.inject_write_fault_every(Some(20));
    let redis = e2e.cluster.image("redis:7");
    let status = tokio::task::block_in_place(|| {
        let mut applied = e2e.apply(&job("flaky-api", &redis, &["node-1", "node-2", "node-3"], ""));
        // kubectl's own write may be the one that fails; a user would run it again.
        if !applied.ok {
            applied = e2e.apply(&job("flaky-api", &redis, &["node-1", "node-2", "node-3"], ""));
        }
        assert!(applied.ok, "{}", applied.stderr);
        e2e.wait_job("imagepulljob", "flaky-api", MINUTE, completed)
    });
    e2e.cluster.api.store.inject_write_fault_every(None);
    assert_eq!(status["succeeded"], 3, "{status:#}");
    assert_eq!(e2e.nodes_with(&redis).await.len(), 3);

    // A node whose runtime is down fails, with a message; the others complete.
    e2e.cluster.stop_containerd(2);
    let ubuntu = e2e.cluster.image("ubuntu:22.04");
    let status = tokio::task::block_in_place(|| {
        assert!(
            e2e.apply(&job("runtime-down", &ubuntu, &["node-1", "node-2", "node-3"], ""))
                .ok
        );
        e2e.wait_job("imagepulljob", "runtime-down", MINUTE * 2, completed)
    });
    assert_eq!(
        (status["succeeded"].as_i64(), status["failed"].as_i64()),
        (Some(2), Some(1)),
        "{status:#}"
    );
    assert_eq!(status["failedNodes"], serde_json::json!(["node-3"]), "{status:#}");
    let node_image = tokio::task::block_in_place(|| e2e.get(&["nodeimage", "node-3"]));
    let (repository, _) = ubuntu.rsplit_once(':').unwrap();
    let message = node_image["status"]["imageStatuses"][repository]["tags"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!message.is_empty(), "{node_image:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_seed_example_as_written() {
    let e2e = up(true).await;
    let seeds = repo("api/tests/fixtures/seed");
    let mut files: Vec<String> = std::fs::read_dir(&seeds)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    // The seed's ConfigMap lives in OpenKruise's namespace.
    tokio::task::block_in_place(|| e2e.kubectl.ok(&["create", "namespace", "kruise-system"]));
    let mut jobs = Vec::new();
    for file in &files {
        let name = file.trim_end_matches(".yaml").to_lowercase();
        let manifest = e2e.seed(file, &name);
        let applied = tokio::task::block_in_place(|| e2e.apply(&manifest));
        let refused = file.starts_with("01-") || file.starts_with("09-");
        if refused {
            assert!(!applied.ok, "{file} was accepted");
            assert!(applied.stderr.contains("spec.selector"), "{file}: {}", applied.stderr);
            continue;
        }
        assert!(applied.ok, "{file}: {}", applied.stderr);
        let kind = manifest
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .unwrap()
            .trim()
            .to_owned();
        let applied_name = applied
            .stdout
            .split_whitespace()
            .next()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        if kind.ends_with("PullJob") {
            jobs.push((kind.to_lowercase(), applied_name));
        }
    }
    assert_eq!(jobs.len(), 10, "{jobs:?}");
    for (kind, name) in &jobs {
        let status = tokio::task::block_in_place(|| e2e.wait_job(kind, name, MINUTE, completed));
        assert_eq!(status["failed"].as_i64().unwrap_or(0), 0, "{kind} {name}: {status:#}");
    }
    let nginx = e2e.cluster.image("nginx:1.9.1");
    assert_eq!(e2e.nodes_with(&nginx).await, ["node-1", "node-2"]);
    // A job naming Secrets that do not exist pulls without them and says so.
    let events = tokio::task::block_in_place(|| e2e.events_of("job-with-secrets"));
    assert!(events.contains("PullSecretNotFound"), "{events}");

    // The seed's `kubectl patch nodeimage --type=merge`, on a real node and the local registry:
    // the webhook defaults the tag, the agent pulls it.
    let ubuntu = e2e.cluster.image("ubuntu");
    let patch = std::fs::read_to_string(seeds.join("16-nodeimage-merge-patch.json"))
        .unwrap()
        .replace("\"ubuntu\"", &format!("\"{ubuntu}\""));
    tokio::task::block_in_place(|| {
        e2e.kubectl
            .ok(&["patch", "nodeimage", "node-3", "--type=merge", "-p", &patch]);
        let node_image = e2e.get(&["nodeimage", "node-3"]);
        let tag = &node_image["spec"]["images"][&ubuntu]["tags"][0];
        assert!(
            tag["createdAt"].is_string() && tag["pullPolicy"]["timeoutSeconds"] == 600,
            "{tag:#}"
        );
        let started = Instant::now();
        loop {
            let node_image = e2e.get(&["nodeimage", "node-3"]);
            if node_image["status"]["imageStatuses"][&ubuntu]["tags"][0]["phase"] == "Succeeded" {
                break;
            }
            assert!(started.elapsed() < MINUTE, "{:#}", node_image["status"]);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    assert_eq!(e2e.nodes_with(&format!("{ubuntu}:latest")).await, ["node-3"]);
}
