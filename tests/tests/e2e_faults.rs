//! End to end on a local cluster: private registries and their secrets, the
//! feature gate, and faults (agents, the controller, a runtime, the API).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::e2e::{E2e, MINUTE, completed, job, up, wait_until};
use prewarm_testapi::installed::NAMESPACE;
use prewarm_testapi::registries::PRIVATE_USER;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_images_pull_with_the_right_secret_and_a_wrong_password_leaks_nowhere() {
    let e2e = up(true).await;
    let private = e2e.registries().private_image();
    let registry = format!("127.0.0.1:{}", e2e.registries().private_port);
    // `up` prints the credentials the right Secret below is made of.
    let summary = e2e.cluster.summary();
    assert!(
        summary.contains(&format!(
            "private registry: {registry} (user {}, password {}",
            PRIVATE_USER.0, PRIVATE_USER.1
        )),
        "{summary}"
    );
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
    let copied_password = |e2e: &E2e| -> Option<String> {
        let copies = e2e.get(&["secrets", "-n", "kruise-daemon-config"]);
        let copy = copies["items"].as_array()?.first()?.clone();
        let config = base64::engine::general_purpose::STANDARD
            .decode(copy["data"][".dockerconfigjson"].as_str()?)
            .ok()?;
        let config: Value = serde_json::from_slice(&config).ok()?;
        config["auths"][&registry]["password"].as_str().map(str::to_owned)
    };
    let no_copies = || e2e.get(&["secrets", "-n", "kruise-daemon-config"])["items"] == serde_json::json!([]);
    tokio::task::block_in_place(|| {
        // The copies the node agents read from are released once the jobs are done.
        wait_until("the finished jobs' copies released", MINUTE, no_copies);
        // A Never job keeps its copy: it follows the source Secret, and goes with the job.
        let never = job("kept", "right", "node-3").replace("type: Always", "type: Never");
        assert!(e2e.apply(&never).ok);
        wait_until("the copy made", MINUTE, || {
            copied_password(&e2e).as_deref() == Some(PRIVATE_USER.1)
        });
        let rotated = secrets.replace(&dockerconfig(PRIVATE_USER.1), &dockerconfig("rotated-pw"));
        assert!(e2e.apply(&rotated).ok);
        wait_until("the copy following its source", MINUTE, || {
            copied_password(&e2e).as_deref() == Some("rotated-pw")
        });
        e2e.kubectl.ok(&["delete", "imagepulljob", "kept"]);
        wait_until("the copy released", MINUTE, no_copies);
    });
    let (events, node_images) = tokio::task::block_in_place(|| {
        (
            e2e.kubectl.ok(&["get", "events", "-A", "-o", "json"]),
            e2e.kubectl.ok(&["get", "nodeimages", "-o", "json"]),
        )
    });
    // The failure names the Secret it was tried with (the user's, not the copy), never its content.
    assert!(
        node_images.contains("with pull secret default/wrong: "),
        "{node_images}"
    );
    assert!(events.contains("with pull secret default/wrong: "), "{events}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(wrong_password);
    for (place, text) in [
        ("logs", e2e.cluster.pods.all_logs()),
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

/// The gate is live: the webhook refuses new jobs and the controller idles
/// (a deleted job keeps its finalizer) while it is off, both resume when it
/// is on, nothing restarts, and a misspelt value changes nothing but is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_gate_refuses_new_jobs_idles_the_controller_and_turns_on_without_a_restart() {
    let mut e2e = up(true).await;
    let nginx = e2e.registries().image("nginx:1.9.1");
    tokio::task::block_in_place(|| {
        assert!(e2e.apply(&e2e.seed("02-imagepulljob-names.yaml", "before")).ok);
        e2e.wait_job("imagepulljob", "before", MINUTE, completed);
        // A job that never finishes holds its finalizer until reconcile releases it.
        let running = job("running", &nginx, &["node-1"], "").replace("type: Always", "type: Never");
        assert!(e2e.apply(&running).ok);
        wait_until("the running job's finalizer", MINUTE, || {
            e2e.get(&["imagepulljob", "running"])["metadata"]["finalizers"].is_array()
        });
    });
    tokio::task::block_in_place(|| e2e.cluster.set_gate(false));
    let refused = tokio::task::block_in_place(|| e2e.apply(&e2e.seed("02-imagepulljob-names.yaml", "after")));
    assert!(
        !refused.ok && refused.stderr.contains("ImagePullJobGate"),
        "{}",
        refused.stderr
    );
    tokio::task::block_in_place(|| {
        e2e.kubectl.ok(&["delete", "imagepulljob", "running", "--wait=false"]);
        // Job reconcile idles: nobody removes the finalizer while the gate is off.
        std::thread::sleep(Duration::from_secs(2));
        let waiting = e2e.get(&["imagepulljob", "running"]);
        assert!(waiting["metadata"]["deletionTimestamp"].is_string(), "{waiting:#}");
        // A misspelt value keeps the gates in force (off), and says so on the ConfigMap.
        let typo = r#"{"data":{"featureGates":"ImagePullJobGate=ture"}}"#;
        e2e.kubectl.ok(&[
            "-n",
            NAMESPACE,
            "patch",
            "configmap",
            "prewarm-feature-gates",
            "--type=merge",
            "-p",
            typo,
        ]);
        wait_until("the Warning event on the ConfigMap", MINUTE, || {
            e2e.events_of("prewarm-feature-gates").contains("FeatureGatesRefused")
        });
        let events = e2e.events_of("prewarm-feature-gates");
        assert!(
            events.contains(
                "for feature gate ImagePullJobGate: use true or false; the gates stay ImagePullJobGate=false"
            ),
            "{events}"
        );
        let still = e2e.apply(&e2e.seed("02-imagepulljob-names.yaml", "after"));
        assert!(
            !still.ok && still.stderr.contains("ImagePullJobGate"),
            "{}",
            still.stderr
        );
        e2e.cluster.set_gate(true);
        // The idle controller resumes: the deleted job goes.
        wait_until("the deleted job to go", MINUTE, || {
            !e2e.kubectl.run(&["get", "imagepulljob", "running"]).ok
        });
        let events = e2e.events_of("prewarm-feature-gates");
        assert!(events.contains("ImagePullJobGate turned on"), "{events}");
    });
    let controller_log = e2e.cluster.pods.logs_of(NAMESPACE, "prewarm-controller-");
    assert!(
        controller_log
            .contains("ImagePullJobGate off: ImagePullJob, ImageListPullJob and AdvancedCronJob reconcile idle")
    );
    assert_eq!(
        controller_log.matches("waiting for the caches").count(),
        1,
        "the controller restarted"
    );
    let status = tokio::task::block_in_place(|| {
        let applied = e2e.apply(&e2e.seed("02-imagepulljob-names.yaml", "after"));
        assert!(applied.ok, "{}", applied.stderr);
        e2e.wait_job("imagepulljob", "after", MINUTE, completed)
    });
    assert_eq!(status["succeeded"], 2);
    assert_eq!(e2e.nodes_with(&nginx).await, ["node-1", "node-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_controllers_runtimes_and_api_writes_failing() {
    let mut e2e = up(true).await;
    let nginx = e2e.registries().image("nginx:1.9.1");

    // A node agent killed in the middle of a pull (a throttled registry makes it
    // last seconds) and started again: it pulls what was cut short, once more.
    let slow = e2e.registries().slow_image();
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
    tokio::task::block_in_place(|| e2e.cluster.crash_agent(0));
    let status = tokio::task::block_in_place(|| e2e.wait_job("imagepulljob", "mid-pull", MINUTE, completed));
    assert_eq!(status["succeeded"], 2, "{status:#}");
    assert_eq!(e2e.nodes_with(&slow).await, ["node-1", "node-2"]);
    assert_eq!(
        e2e.registries().manifest_requests("slow:1.0"),
        3,
        "node-2 once, node-1 cut short and once more"
    );

    // A node agent hung when the job arrives, killed and restarted later: it
    // pulls once, and the job completes.
    tokio::task::block_in_place(|| e2e.cluster.hang_agent(0));
    tokio::task::block_in_place(|| assert!(e2e.apply(&job("agent-down", &nginx, &["node-1", "node-2"], "")).ok));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = tokio::task::block_in_place(|| e2e.get(&["imagepulljob", "agent-down"]));
    assert!(waiting["status"]["completionTime"].is_null(), "{:#}", waiting["status"]);
    tokio::task::block_in_place(|| e2e.cluster.crash_agent(0));
    let status = tokio::task::block_in_place(|| e2e.wait_job("imagepulljob", "agent-down", MINUTE, completed));
    assert_eq!(status["succeeded"], 2, "{status:#}");
    assert_eq!(
        e2e.registries().manifest_requests("nginx:1.9.1"),
        2,
        "one pull per node, none repeated"
    );

    // The controller restarted while a job waits: the job completes after it.
    let busybox = e2e.registries().image("busybox:1.36");
    e2e.cluster.stop_controller();
    tokio::task::block_in_place(|| {
        assert!(
            e2e.apply(&job("controller-down", &busybox, &["node-2", "node-3"], ""))
                .ok
        )
    });
    e2e.cluster.start_controller(&[]);
    let status = tokio::task::block_in_place(|| e2e.wait_job("imagepulljob", "controller-down", MINUTE, completed));
    assert_eq!(status["succeeded"], 2, "{status:#}");

    // One in twenty API writes failing: jobs still converge.
    e2e.cluster.pods.api.store.inject_write_fault_every(Some(20));
    let redis = e2e.registries().image("redis:7");
    let status = tokio::task::block_in_place(|| {
        let mut applied = e2e.apply(&job("flaky-api", &redis, &["node-1", "node-2", "node-3"], ""));
        // kubectl's own write may be the one that fails; a user would run it again.
        if !applied.ok {
            applied = e2e.apply(&job("flaky-api", &redis, &["node-1", "node-2", "node-3"], ""));
        }
        assert!(applied.ok, "{}", applied.stderr);
        e2e.wait_job("imagepulljob", "flaky-api", MINUTE, completed)
    });
    e2e.cluster.pods.api.store.inject_write_fault_every(None);
    assert_eq!(status["succeeded"], 3, "{status:#}");
    assert_eq!(e2e.nodes_with(&redis).await.len(), 3);

    // A node whose runtime is down fails, with a message; the others complete.
    e2e.cluster.stop_containerd(2);
    let ubuntu = e2e.registries().image("ubuntu:22.04");
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
async fn a_node_agent_s_token_writes_only_its_own_node_s_status() {
    let e2e = up(true).await;
    let as_agent_of = |node: &str, args: &[&str]| {
        let index: usize = node.trim_start_matches("node-").parse().unwrap();
        let kubeconfig = e2e.cluster.agent_kubeconfig(index - 1);
        let mut all = vec!["--kubeconfig", kubeconfig.to_str().unwrap()];
        all.extend_from_slice(args);
        e2e.kubectl.run(&all)
    };
    // A status PUT, as the agent writes it (its role may not read nodeimages/status, which `kubectl patch` would).
    let patch_status = |node: &str, node_image: &str, status: &str| {
        let mut object = e2e.get(&["nodeimage", node_image]);
        for (key, value) in serde_json::from_str::<serde_json::Map<String, Value>>(status).unwrap() {
            object["status"][key] = value;
        }
        let file = e2e.cluster.pods.dir.join(format!("status-{node}-{node_image}.json"));
        std::fs::write(&file, object.to_string()).unwrap();
        as_agent_of(node, &["replace", "--subresource=status", "-f", file.to_str().unwrap()])
    };
    tokio::task::block_in_place(|| {
        let image = e2e.registries().image("nginx:1.9.1");
        assert!(e2e.apply(&job("on-node-2", &image, &["node-2"], "")).ok);
        e2e.wait_job("imagepulljob", "on-node-2", MINUTE, completed);
        // Node-1's agent cannot say node-2 has nothing, nor claim images on its own node no job asked for.
        let refused = patch_status("node-1", "node-2", r#"{"desired": 0, "imageStatuses": null}"#);
        assert!(!refused.ok);
        assert!(
            refused
                .stderr
                .contains("on node \"node-1\" may not write the status of NodeImage \"node-2\""),
            "{}",
            refused.stderr
        );
        let invented = patch_status(
            "node-1",
            "node-1",
            r#"{"imageStatuses": {"evil.example/all": {"tags": [{"tag": "x", "phase": "Succeeded"}]}}}"#,
        );
        assert!(!invented.ok);
        assert!(
            invented
                .stderr
                .contains("status.imageStatuses[evil.example/all]: Invalid value"),
            "{}",
            invented.stderr
        );
        // Its own node's status it may write (the agents' own writes, which completed the job, passed too).
        let own = patch_status("node-1", "node-1", r#"{"desired": 0}"#);
        assert!(own.ok, "{}", own.stderr);
        let reported = e2e.get(&["nodeimage", "node-2"]);
        assert_eq!(reported["status"]["succeeded"], 1, "{reported:#}");
    });
}
