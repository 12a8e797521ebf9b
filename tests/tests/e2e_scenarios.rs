//! End to end on a local cluster: the scenarios of OpenKruise's e2e suite and
//! bug reports (#1386, #1528, #1656, #2071, #2221), with NodeImages labelled
//! `apps.kruise.io/fake-nodeimage` standing in for nodes that never answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::e2e::{E2e, MINUTE, completed, job, up, wait_until};
use prewarm_testapi::registries::PRIVATE_USER;
use serde_json::{Value, json};

/// A NodeImage with no Node that the controller keeps: a node that never answers.
fn fake_node(e2e: &E2e, name: &str) {
    let manifest = format!(
        "apiVersion: apps.kruise.io/v1beta1\nkind: NodeImage\nmetadata:\n  name: {name}\n  labels:\n    apps.kruise.io/fake-nodeimage: \"true\"\nspec: {{}}\n"
    );
    let applied = e2e.apply(&manifest);
    assert!(applied.ok, "{}", applied.stderr);
}

/// A `helm upgrade` adding `flags` to the controller's: its Pods are replaced.
fn restart_controller(e2e: &mut E2e, flags: &[&str]) {
    tokio::task::block_in_place(|| e2e.cluster.start_controller(flags));
}

/// `image` split as NodeImages key it: repository and tag.
fn split(image: &str) -> (&str, &str) {
    image.rsplit_once(':').unwrap()
}

/// The tag of `image` on each NodeImage that lists `job_uid` among its owners:
/// (node, spec tag, status tag at the spec's version if any).
fn tags_of(e2e: &E2e, image: &str, job_uid: &str) -> Vec<(String, Value, Option<Value>)> {
    let (repository, tag) = split(image);
    let node_images = e2e.get(&["nodeimages"]);
    let mut found = Vec::new();
    for node_image in node_images["items"].as_array().unwrap() {
        let spec_tags = node_image["spec"]["images"][repository]["tags"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(spec_tag) = spec_tags.into_iter().find(|t| {
            t["tag"] == tag
                && t["ownerReferences"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|o| o["uid"] == job_uid))
        }) else {
            continue;
        };
        let status = node_image["status"]["imageStatuses"][repository]["tags"]
            .as_array()
            .and_then(|tags| {
                tags.iter().find(|t| {
                    t["tag"] == tag && t["version"].as_i64().unwrap_or(0) == spec_tag["version"].as_i64().unwrap_or(0)
                })
            })
            .cloned();
        found.push((
            node_image["metadata"]["name"].as_str().unwrap().to_owned(),
            spec_tag,
            status,
        ));
    }
    found
}

fn unfinished(tags: &[(String, Value, Option<Value>)]) -> Vec<String> {
    tags.iter()
        .filter(|(_, _, status)| {
            !status
                .as_ref()
                .is_some_and(|s| s["phase"] == "Succeeded" || s["phase"] == "Failed")
        })
        .map(|(node, ..)| node.clone())
        .collect()
}

/// Answers as a node agent would for the fake node `node`: `image` pulled at
/// the version the spec asks for.
fn answer_for(e2e: &E2e, node: &str, image: &str, version: i64) {
    let (repository, tag) = split(image);
    // Now, as an agent reports it: a tag's TTL runs from its completion.
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let status = json!({"status": {"desired": 1, "succeeded": 1, "pulling": 0, "failed": 0, "waiting": 0,
        "imageStatuses": {repository: {"tags": [{"tag": tag, "phase": "Succeeded", "version": version,
            "progress": 100, "startTime": now, "completionTime": now}]}}}});
    e2e.kubectl.ok(&[
        "patch",
        "nodeimage",
        node,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

fn uid_of(e2e: &E2e, kind: &str, name: &str) -> String {
    e2e.get(&[kind, name])["metadata"]["uid"].as_str().unwrap().to_owned()
}

fn patch_job(e2e: &E2e, name: &str, patch: Value) {
    e2e.kubectl
        .ok(&["patch", "imagepulljob", name, "--type=merge", "-p", &patch.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_nodes_list_jobs_and_their_progress() {
    let mut e2e = up(true).await;
    // OpenKruise's ten minutes, shortened.
    restart_controller(&mut e2e, &["--node-no-response-timeout=15s"]);
    let busybox = e2e.registries().image("busybox:1.36");
    tokio::task::block_in_place(|| {
        fake_node(&e2e, "fake-1");
        // A Never job with no selector targets the fake node too: the real
        // nodes succeed, the job never completes, and the silent node's tag
        // fails once the window passes, with an event.
        let never = format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: forever\nspec:\n  image: {busybox}\n  parallelism: 4\n  completionPolicy:\n    type: Never\n"
        );
        assert!(e2e.apply(&never).ok);
        let status = e2e.wait_job("imagepulljob", "forever", MINUTE, |s| s["succeeded"] == 3);
        assert!(status["completionTime"].is_null(), "{status:#}");
        assert_eq!(status["desired"], 4, "{status:#}");
        let uid = uid_of(&e2e, "imagepulljob", "forever");
        wait_until("the fake node's tag failed as silent", MINUTE, || {
            tags_of(&e2e, &busybox, &uid).iter().any(|(node, _, status)| {
                node == "fake-1"
                    && status.as_ref().is_some_and(|s| {
                        s["phase"] == "Failed"
                            && s["message"]
                                .as_str()
                                .unwrap_or_default()
                                .contains("node has not responded")
                    })
            })
        });
        let status = e2e.wait_job("imagepulljob", "forever", MINUTE, |s| s["failed"] == 1);
        assert!(
            status["completionTime"].is_null(),
            "a Never job does not complete: {status:#}"
        );
        assert_eq!(status["failedNodes"], json!(["fake-1"]), "{status:#}");
        let events = e2e.events_of("forever");
        assert!(
            events.contains("PullImageFailed") && events.contains("fake-1"),
            "{events}"
        );

        // A list job whose fake node fails: it completes, with one failed image
        // naming the child job.
        let redis = e2e.registries().image("redis:7");
        let list = format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImageListPullJob\nmetadata:\n  name: with-silent\nspec:\n  images: [{redis}]\n  selector:\n    names: [node-2, fake-1]\n  completionPolicy:\n    type: Always\n"
        );
        assert!(e2e.apply(&list).ok);
        let status = e2e.wait_job("imagelistpulljob", "with-silent", MINUTE, completed);
        let failed = status["failedImageStatuses"].as_array().unwrap();
        assert_eq!(failed.len(), 1, "{status:#}");
        assert_eq!(failed[0]["name"], redis.as_str(), "{status:#}");
        let child = failed[0]["imagePullJob"].as_str().unwrap();
        let child = e2e.get(&["imagepulljob", child]);
        assert_eq!(child["metadata"]["ownerReferences"][0]["name"], "with-silent");
        assert_eq!(child["status"]["failedNodes"], json!(["fake-1"]));

        // #1656 and #1528: a two-image list job with parallelism 4 shows its
        // progress as images finish (a fast one, and one that takes seconds),
        // and completes without a stall.
        let (nginx, slow) = (e2e.registries().image("nginx:1.25"), e2e.registries().slow_image());
        let list = format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImageListPullJob\nmetadata:\n  name: progress\nspec:\n  images: [{nginx}, {slow}]\n  parallelism: 4\n  selector:\n    names: [node-1, node-2, node-3]\n  completionPolicy:\n    type: Always\n    activeDeadlineSeconds: 600\n"
        );
        let started = Instant::now();
        assert!(e2e.apply(&list).ok);
        let midway = e2e.wait_job("imagelistpulljob", "progress", MINUTE, |s| {
            s["completed"] == 1 || completed(s)
        });
        assert!(
            midway["completionTime"].is_null() && midway["active"] == 1,
            "one image done while the other pulls: {midway:#}"
        );
        let status = e2e.wait_job("imagelistpulljob", "progress", MINUTE, completed);
        assert_eq!(
            (status["succeeded"].as_i64(), status["completed"].as_i64()),
            (Some(2), Some(2)),
            "{status:#}"
        );
        assert!(started.elapsed() < MINUTE, "{:?}", started.elapsed());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallelism_edits_deadlines_and_tag_policies() {
    let e2e = up(true).await;
    let nginx = e2e.registries().image("nginx:1.25");
    tokio::task::block_in_place(|| {
        for fake in ["fake-a", "fake-b", "fake-c", "fake-d", "fake-e"] {
            fake_node(&e2e, fake);
        }
        // parallelism 0 pauses: nothing is written.
        let window = format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: window\nspec:\n  image: {nginx}\n  parallelism: 0\n  completionPolicy:\n    type: Always\n"
        );
        assert!(e2e.apply(&window).ok);
        let uid = uid_of(&e2e, "imagepulljob", "window");
        e2e.wait_job("imagepulljob", "window", MINUTE, |s| s["desired"] == 8);
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(tags_of(&e2e, &nginx, &uid), [], "paused, yet written");

        // "25%" of 8 nodes: two at a time. The fake nodes come first by name and
        // do not answer, so the window stays at those two.
        patch_job(&e2e, "window", json!({"spec": {"parallelism": "25%"}}));
        wait_until("two tags written", MINUTE, || tags_of(&e2e, &nginx, &uid).len() == 2);
        for _ in 0..10 {
            let tags = tags_of(&e2e, &nginx, &uid);
            assert_eq!(unfinished(&tags), ["fake-a", "fake-b"], "{tags:#?}");
            std::thread::sleep(Duration::from_millis(300));
        }
        // Answered, the window moves on, never holding more than two unfinished.
        let started = Instant::now();
        loop {
            let tags = tags_of(&e2e, &nginx, &uid);
            let open = unfinished(&tags);
            assert!(open.len() <= 2, "more than two unfinished: {open:?}");
            if tags.len() == 8 && open.is_empty() {
                break;
            }
            for (node, spec, _) in &tags {
                if node.starts_with("fake-") && open.contains(node) {
                    answer_for(&e2e, node, &nginx, spec["version"].as_i64().unwrap_or(0));
                }
            }
            assert!(
                started.elapsed() < MINUTE,
                "not all eight nodes succeeded two at a time: {tags:#?}\n{:#}",
                e2e.get(&["imagepulljob", "window"])["status"]
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let status = e2e.wait_job("imagepulljob", "window", MINUTE, completed);
        assert_eq!(status["succeeded"], 8, "{status:#}");

        // Raising parallelism resumes a job held by silent nodes.
        let busybox = e2e.registries().image("busybox:1.36");
        let held = window
            .replace("name: window", "name: held")
            .replace(&nginx, &busybox)
            .replace("parallelism: 0", "parallelism: 2");
        assert!(e2e.apply(&held).ok);
        let held_uid = uid_of(&e2e, "imagepulljob", "held");
        wait_until("two tags written", MINUTE, || {
            tags_of(&e2e, &busybox, &held_uid).len() == 2
        });
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(tags_of(&e2e, &busybox, &held_uid).len(), 2);
        patch_job(&e2e, "held", json!({"spec": {"parallelism": 8}}));
        let status = e2e.wait_job("imagepulljob", "held", MINUTE, |s| s["succeeded"] == 3);
        assert_eq!(tags_of(&e2e, &busybox, &held_uid).len(), 8, "{status:#}");

        // #1386: editing the selector of a completed job changes nothing.
        assert!(e2e.apply(&job("done", &nginx, &["node-1"], "")).ok);
        let before = e2e.wait_job("imagepulljob", "done", MINUTE, completed);
        let done_uid = uid_of(&e2e, "imagepulljob", "done");
        assert!(e2e.apply(&job("done", &nginx, &["node-1", "node-2"], "")).ok);
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(e2e.get(&["imagepulljob", "done"])["status"], before);
        let nodes: Vec<String> = tags_of(&e2e, &nginx, &done_uid).into_iter().map(|t| t.0).collect();
        assert_eq!(nodes, ["node-1"]);

        // #2221: a new timeoutSeconds applies to the tags written after the edit.
        let slow = e2e.registries().slow_image();
        let edited = job("edited", &slow, &["node-2", "node-3"], "").replace("parallelism: 3", "parallelism: 1");
        assert!(e2e.apply(&edited).ok);
        let edited_uid = uid_of(&e2e, "imagepulljob", "edited");
        wait_until("the first tag written", MINUTE, || {
            !tags_of(&e2e, &slow, &edited_uid).is_empty()
        });
        patch_job(&e2e, "edited", json!({"spec": {"pullPolicy": {"timeoutSeconds": 45}}}));
        e2e.wait_job("imagepulljob", "edited", MINUTE, completed);
        let timeouts: Vec<(String, Value)> = tags_of(&e2e, &slow, &edited_uid)
            .into_iter()
            .map(|(node, spec, _)| (node, spec["pullPolicy"]["timeoutSeconds"].clone()))
            .collect();
        assert_eq!(
            timeouts,
            [("node-2".to_owned(), json!(30)), ("node-3".to_owned(), json!(45))]
        );

        // #2071: a Never job's tag gets max(1800, timeoutSeconds) for all its
        // attempts, as OpenKruise computes it, and a day's TTL spread by ten minutes.
        for (name, image, timeout, deadline) in [
            ("never-long", e2e.registries().image("ubuntu:22.04"), 3600, 3600),
            ("never-short", e2e.registries().image("redis:7"), 50, 1800),
        ] {
            let never = format!(
                "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: {name}\nspec:\n  image: {image}\n  selector:\n    names: [node-1]\n  pullPolicy:\n    timeoutSeconds: {timeout}\n    backoffLimit: 3\n  completionPolicy:\n    type: Never\n"
            );
            assert!(e2e.apply(&never).ok);
            let uid = uid_of(&e2e, "imagepulljob", name);
            wait_until("the tag written", MINUTE, || !tags_of(&e2e, &image, &uid).is_empty());
            let (_, spec, _) = tags_of(&e2e, &image, &uid).remove(0);
            let policy = &spec["pullPolicy"];
            assert_eq!(
                (
                    policy["timeoutSeconds"].as_i64(),
                    policy["backoffLimit"].as_i64(),
                    policy["activeDeadlineSeconds"].as_i64()
                ),
                (Some(timeout), Some(3), Some(deadline)),
                "{spec:#}"
            );
            let ttl = policy["ttlSecondsAfterFinished"].as_i64().unwrap();
            assert!((85_800..87_000).contains(&ttl), "{ttl}");
        }

        // The deadline: an Always job with nodes that cannot pull ends at it,
        // every unfinished node failed once, sorted.
        let late = job("late", &nginx, &["fake-e", "node-3", "fake-c"], "")
            .replace("timeoutSeconds: 30", "timeoutSeconds: 10")
            .replace("type: Always\n", "type: Always\n    activeDeadlineSeconds: 10\n");
        assert!(e2e.apply(&late).ok, "{late}");
        let status = e2e.wait_job("imagepulljob", "late", MINUTE, completed);
        assert_eq!(status["message"], "job exceeds activeDeadlineSeconds", "{status:#}");
        assert_eq!(status["active"], 0, "{status:#}");
        assert_eq!(status["failedNodes"], json!(["fake-c", "fake-e"]), "{status:#}");
        assert_eq!(
            (status["desired"].as_i64(), status["succeeded"].as_i64()),
            (Some(3), Some(1))
        );
        let events = e2e.events_of("late");
        assert!(events.contains("DeadlineExceeded"), "{events}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_lifecycle_and_a_secret_using_job_with_a_ttl() {
    let mut e2e = up(true).await;
    restart_controller(&mut e2e, &["--nodeimage-creation-delay=3s"]);
    tokio::task::block_in_place(|| {
        fake_node(&e2e, "fake-1");
        // A new Ready node gets its NodeImage once it has been Ready for the delay.
        let node = json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "node-9", "labels": {"kubernetes.io/hostname": "node-9"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "",
                "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}]}});
        let created = Instant::now();
        assert!(e2e.apply(&node.to_string()).ok);
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            !e2e.kubectl.run(&["get", "nodeimage", "node-9"]).ok,
            "made before the delay"
        );
        wait_until("node-9's NodeImage", MINUTE, || {
            e2e.kubectl.run(&["get", "nodeimage", "node-9"]).ok
        });
        assert!(created.elapsed() >= Duration::from_secs(2), "{:?}", created.elapsed());
        // Relabelling the Node relabels its NodeImage.
        e2e.kubectl.ok(&["label", "node", "node-9", "pool=gpu"]);
        wait_until("the label on the NodeImage", MINUTE, || {
            e2e.get(&["nodeimage", "node-9"])["metadata"]["labels"]["pool"] == "gpu"
        });
        // A deleted Node's NodeImage goes at once; the fake one stays.
        e2e.kubectl.ok(&["delete", "node", "node-9"]);
        let deleted = Instant::now();
        wait_until("node-9's NodeImage deleted", MINUTE, || {
            !e2e.kubectl.run(&["get", "nodeimage", "node-9"]).ok
        });
        assert!(deleted.elapsed() < Duration::from_secs(10), "{:?}", deleted.elapsed());
        assert!(
            e2e.kubectl.run(&["get", "nodeimage", "fake-1"]).ok,
            "the fake NodeImage went too"
        );

        // A secret-using Always job with a deadline and a TTL: one copy that
        // names the job and holds the source's data while it runs; then the
        // job, its tags and the copy go.
        let private = e2e.registries().private_image();
        let registry = format!("127.0.0.1:{}", e2e.registries().private_port);
        let config = base64::engine::general_purpose::STANDARD.encode(
            json!({"auths": {&registry: {"username": PRIVATE_USER.0, "password": PRIVATE_USER.1}}}).to_string(),
        );
        let secret = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: registry\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {config}\n"
        );
        assert!(e2e.apply(&secret).ok);
        let with_secret = format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: with-secret\nspec:\n  image: {private}\n  pullSecrets: [registry]\n  parallelism: 2\n  selector:\n    names: [node-1, fake-1]\n  pullPolicy:\n    timeoutSeconds: 10\n  completionPolicy:\n    type: Always\n    activeDeadlineSeconds: 15\n    ttlSecondsAfterFinished: 10\n"
        );
        assert!(e2e.apply(&with_secret).ok);
        let uid = uid_of(&e2e, "imagepulljob", "with-secret");
        wait_until("node-1 pulled with the copy", MINUTE, || {
            e2e.get(&["imagepulljob", "with-secret"])["status"]["succeeded"] == 1
        });
        let copies = e2e.get(&["secrets", "-n", "kruise-daemon-config"]);
        let copies = copies["items"].as_array().unwrap();
        assert_eq!(copies.len(), 1, "{copies:#?}");
        assert_eq!(
            copies[0]["metadata"]["annotations"]["imagepulljobs.kruise.io/references"],
            "default/with-secret"
        );
        assert_eq!(copies[0]["data"][".dockerconfigjson"], config.as_str());
        let status = e2e.wait_job("imagepulljob", "with-secret", MINUTE, completed);
        assert_eq!(status["failedNodes"], json!(["fake-1"]), "{status:#}");
        wait_until("the job deleted after its TTL", MINUTE, || {
            !e2e.kubectl.run(&["get", "imagepulljob", "with-secret"]).ok
        });
        wait_until("its tags gone", MINUTE, || tags_of(&e2e, &private, &uid).is_empty());
        wait_until("no copies left", MINUTE, || {
            e2e.get(&["secrets", "-n", "kruise-daemon-config"])["items"] == json!([])
        });

        // The same with a Never job: while it runs, a change to the source
        // reaches the copy; deleted, it leaves no copy.
        let never = format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: never-secret\nspec:\n  image: {private}\n  pullSecrets: [registry]\n  selector:\n    names: [node-1]\n  completionPolicy:\n    type: Never\n"
        );
        assert!(e2e.apply(&never).ok);
        wait_until("node-1 pulled with the Never job's copy", MINUTE, || {
            e2e.get(&["imagepulljob", "never-secret"])["status"]["succeeded"] == 1
        });
        let copy_data = || -> Vec<Value> {
            let copies = e2e.get(&["secrets", "-n", "kruise-daemon-config"]);
            copies["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    json!([
                        c["metadata"]["annotations"]["imagepulljobs.kruise.io/references"],
                        c["data"][".dockerconfigjson"]
                    ])
                })
                .collect()
        };
        assert_eq!(copy_data(), [json!(["default/never-secret", config])]);
        let updated = base64::engine::general_purpose::STANDARD.encode(
            json!({"auths": {&registry: {"username": PRIVATE_USER.0, "password": PRIVATE_USER.1},
                "mirror.example": {"auth": ""}}})
            .to_string(),
        );
        assert!(e2e.apply(&secret.replace(&config, &updated)).ok);
        wait_until("the copy follows its source", MINUTE, || {
            copy_data() == [json!(["default/never-secret", updated])]
        });
        assert!(e2e.kubectl.run(&["delete", "imagepulljob", "never-secret"]).ok);
        wait_until("the Never job's copy released", MINUTE, || copy_data().is_empty());
    });
}
