//! End to end on a local cluster: the test API server, the webhook, the
//! controller and three node agents, each node with its own containerd, and
//! local registries. Jobs as users write them: the seed's examples, selectors,
//! shared images, pull policies, TTLs and list jobs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::e2e::{E2e, MINUTE, completed, job, tag_owners, up};
use common::repo;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seed_jobs_pull_into_the_targeted_runtimes() {
    let e2e = up(true).await;
    let nginx = e2e.registries().image("nginx:1.9.1");

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
    let busybox = e2e.registries().image("busybox:1.36");
    let by_label = e2e
        .seed("03-imagepulljob-labels.yaml", "by-label")
        .replace(&nginx, &busybox);
    let status = tokio::task::block_in_place(|| {
        assert!(e2e.apply(&by_label).ok);
        e2e.wait_job("imagepulljob", "by-label", MINUTE, completed)
    });
    assert_eq!(status["succeeded"], 2, "{status:#}");
    assert_eq!(e2e.nodes_with(&busybox).await, ["node-1", "node-2"]);

    let redis = e2e.registries().image("redis:7");
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
    let ubuntu = e2e.registries().image("ubuntu:22.04");
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
    let missing = e2e.registries().image("nginx:0.0-missing");
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
async fn shared_images_ttl_list_jobs_and_pull_policies() {
    let e2e = up(true).await;
    let nginx = e2e.registries().image("nginx:1.25");

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
        e2e.registries().manifest_requests("nginx:1.25"),
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
        e2e.registries().manifest_requests("nginx:1.25"),
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
    let pinned = e2e.registries().pinned_image("busybox:1.36");
    tokio::task::block_in_place(|| {
        assert!(e2e.apply(&job("pinned", &pinned, &["node-2"], "")).ok);
        let status = e2e.wait_job("imagepulljob", "pinned", MINUTE, completed);
        assert_eq!(status["succeeded"], 1, "{status:#}");
    });
    assert_eq!(e2e.nodes_with(&pinned).await, ["node-2"]);

    // An ImageListPullJob: one child per image; an image added, another removed.
    let (busybox, redis, ubuntu) = (
        e2e.registries().image("busybox:1.29.2"),
        e2e.registries().image("redis:7"),
        e2e.registries().image("ubuntu:22.04"),
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
async fn every_seed_example_as_written() {
    let e2e = up(true).await;
    let seeds = repo("api/tests/fixtures/seed");
    let mut files: Vec<String> = std::fs::read_dir(&seeds)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".yaml"))
        .collect();
    files.sort();
    // The seed's ConfigMap lives in OpenKruise's namespace, the chart's.
    let mut jobs = Vec::new();
    for file in &files {
        let name = file.trim_end_matches(".yaml").to_lowercase();
        let manifest = e2e.seed(file, &name);
        let mut applied = tokio::task::block_in_place(|| e2e.apply(&manifest));
        // The seed's NodeImage `node-xxx` names no Node, so the controller deletes
        // it (as OpenKruise's does); an apply that read it just before is answered
        // NotFound. Applied again, it is created.
        if !applied.ok && manifest.contains("kind: NodeImage") && applied.stderr.contains("(NotFound)") {
            applied = tokio::task::block_in_place(|| e2e.apply(&manifest));
        }
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
    let nginx = e2e.registries().image("nginx:1.9.1");
    assert_eq!(e2e.nodes_with(&nginx).await, ["node-1", "node-2"]);
    // A job naming Secrets that do not exist pulls without them and says so.
    let events = tokio::task::block_in_place(|| e2e.events_of("job-with-secrets"));
    assert!(events.contains("PullSecretNotFound"), "{events}");

    // The seed's `kubectl patch nodeimage --type=merge`, on a real node and the local registry:
    // the webhook defaults the tag, the agent pulls it.
    let ubuntu = e2e.registries().image("ubuntu");
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
