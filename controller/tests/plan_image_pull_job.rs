//! The ImagePullJob planner on OpenKruise's own unit cases (reference §7.1),
//! with prewarm's fixes: parallelism windows, deadline, versions, full NodeImages.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use k8s_openapi::jiff::Timestamp;
use prewarm_api::node_image::ImageTagPullPolicy;
use prewarm_api::v1beta1::{ImagePullJob, ReferenceObject};
use prewarm_controller::cached_node_image::CachedNodeImage;
use prewarm_controller::plan::image_pull_job::{Input, Lifecycle, Notice, Plan, Target, Unmatched, lifecycle, plan};
use serde_json::{Value, json};

const UID: &str = "job-uid";
const NOW: &str = "2026-11-29T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

fn job(spec: Value, status: Value) -> ImagePullJob {
    serde_json::from_value(json!({"metadata": {"name": "job", "namespace": "default", "uid": UID},
        "spec": spec, "status": status}))
    .unwrap()
}

fn owned(tag: &str, version: i64, uid: &str) -> Value {
    json!({"tag": tag, "version": version, "createdAt": "2026-11-29T11:00:00Z",
           "ownerReferences": [{"uid": uid, "name": "job", "namespace": "default",
                                "kind": "ImagePullJob", "apiVersion": "apps.kruise.io/v1beta1"}]})
}

fn node(name: &str, spec_tags: Value, status_tags: Value) -> CachedNodeImage {
    serde_json::from_value(json!({"metadata": {"name": name, "resourceVersion": "1"},
        "spec": {"images": {"nginx": {"tags": spec_tags}}},
        "status": {"desired": 1, "imageStatuses": {"nginx": {"tags": status_tags}}}}))
    .unwrap()
}

fn empty(name: &str) -> CachedNodeImage {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": {}})).unwrap()
}

fn run(job: &ImagePullJob, nodes: &[CachedNodeImage], secrets: &[ReferenceObject]) -> Plan {
    run_not_ready(job, nodes, secrets, &[])
}

/// `not_ready`: since when each of the first nodes has not been Ready.
fn run_not_ready(
    job: &ImagePullJob,
    nodes: &[CachedNodeImage],
    secrets: &[ReferenceObject],
    not_ready: &[Option<&str>],
) -> Plan {
    run_with(job, nodes, secrets, not_ready, &Unmatched::default())
}

fn run_with(
    job: &ImagePullJob,
    nodes: &[CachedNodeImage],
    secrets: &[ReferenceObject],
    not_ready: &[Option<&str>],
    unmatched: &Unmatched,
) -> Plan {
    let targets: Vec<Target<'_>> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| Target {
            node_image: n,
            not_ready_since: not_ready.get(i).copied().flatten().map(|t| t.parse().unwrap()),
        })
        .collect();
    plan(&Input {
        job,
        targets: &targets,
        secrets,
        tag_policy: &ImageTagPullPolicy {
            ttl_seconds_after_finished: Some(600),
            ..Default::default()
        },
        no_response_seconds: 600,
        unmatched,
        now: now(),
    })
}

fn started() -> Value {
    json!({"startTime": "2026-11-29T11:59:00Z", "desired": 0})
}

#[test]
fn status_counts_nodes_by_the_phase_of_our_tag_at_its_version() {
    let spec = json!({"image": "nginx:1.20", "parallelism": 0});
    let nodes = [
        node(
            "node1",
            json!([owned("1.20", 1, UID)]),
            json!([{"tag": "1.20", "phase": "Succeeded", "version": 1}]),
        ),
        node(
            "node2",
            json!([owned("1.20", 1, UID)]),
            json!([{"tag": "1.20", "phase": "Pulling", "version": 1}]),
        ),
        node(
            "node3",
            json!([owned("1.20", 1, UID)]),
            json!([{"tag": "1.20", "phase": "Failed", "version": 1}]),
        ),
    ];
    let result = run(&job(spec.clone(), started()), &nodes, &[]);
    let status = serde_json::to_value(&result.status).unwrap();
    assert_eq!(
        (
            status["desired"].clone(),
            status["succeeded"].clone(),
            status["active"].clone(),
            status["failed"].clone()
        ),
        (json!(3), json!(1), json!(1), json!(1))
    );
    assert_eq!(status["failedNodes"], json!(["node3"]));
    assert_eq!(status["message"], "job is running, progress 66.7%");
    assert!(result.writes.is_empty());

    // Another tag, another version, or no status yet: active.
    for (spec_tag, status_tags) in [
        (
            owned("1.20", 0, UID),
            json!([{"tag": "1.19", "phase": "Succeeded", "version": 0}]),
        ),
        (
            owned("1.20", 1, UID),
            json!([{"tag": "1.20", "phase": "Succeeded", "version": 0}]),
        ),
        (owned("1.20", 0, UID), json!([])),
    ] {
        let result = run(
            &job(spec.clone(), started()),
            &[node("node1", json!([spec_tag]), status_tags)],
            &[],
        );
        assert_eq!(result.status.active, Some(1));
        assert_eq!(result.status.message.as_deref(), Some("job is running, progress 0.0%"));
    }
    // A tag owned by someone else is not ours: not active, not synced (paused job: no write).
    let other = run(
        &job(spec, started()),
        &[node("node1", json!([owned("1.20", 0, "other")]), json!([]))],
        &[],
    );
    assert_eq!(other.status.active, Some(0));
    assert!(other.writes.is_empty());
}

#[test]
fn all_succeeded_completes_and_always_with_no_nodes_completes_at_once() {
    let spec = json!({"image": "nginx:1.20", "completionPolicy": {"type": "Always"}});
    let node1 = node(
        "node1",
        json!([owned("1.20", 0, UID)]),
        json!([{"tag": "1.20", "phase": "Succeeded", "version": 0}]),
    );
    let result = run(&job(spec.clone(), started()), &[node1], &[]);
    assert_eq!(result.status.message.as_deref(), Some("job has completed"));
    assert_eq!(result.status.completion_time.as_ref().map(|t| t.0), Some(now()));
    assert!(result.notices.contains(&Notice::Completed {
        succeeded: 1,
        failed: 0
    }));
    assert!(run(&job(spec, started()), &[], &[]).status.completion_time.is_some());
    let never = run(
        &job(
            json!({"image": "nginx", "completionPolicy": {"type": "Never"}}),
            started(),
        ),
        &[],
        &[],
    );
    // OpenKruise's message, and why.
    assert_eq!(
        never.status.message.as_deref(),
        Some("job is running, no progress: no node has a NodeImage")
    );
    assert!(never.status.completion_time.is_none());
}

#[test]
fn the_deadline_fails_every_unfinished_node_once_sorted() {
    let spec = json!({"image": "nginx:1.20", "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 300}});
    let status = json!({"startTime": "2026-11-29T11:50:00Z", "desired": 3});
    let nodes = [
        node(
            "node1",
            json!([owned("1.20", 0, UID)]),
            json!([{"tag": "1.20", "phase": "Pulling", "version": 0}]),
        ),
        node(
            "node2",
            json!([owned("1.20", 0, UID)]),
            json!([{"tag": "1.20", "phase": "Succeeded", "version": 0}]),
        ),
        empty("node0"),
    ];
    let secrets = [ReferenceObject {
        namespace: Some("kruise-daemon-config".into()),
        name: Some("copy".into()),
        mode: Some("batch".into()),
    }];
    let mut sorted = nodes.to_vec();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let result = run(&job(spec.clone(), status), &sorted, &secrets);
    let written = serde_json::to_value(&result.status).unwrap();
    assert_eq!(written["message"], "job exceeds activeDeadlineSeconds");
    assert_eq!(written["failedNodes"], json!(["node0", "node1"]), "sorted, each once");
    assert_eq!(
        (
            written["failed"].clone(),
            written["active"].clone(),
            written["succeeded"].clone()
        ),
        (json!(2), json!(0), json!(1))
    );
    assert!(result.writes.is_empty());
    // Before the deadline: requeue at it.
    let early = run(
        &job(spec, json!({"startTime": "2026-11-29T11:58:00Z", "desired": 0})),
        &[],
        &[],
    );
    assert!(early.status.completion_time.is_some(), "no nodes: completed");
}

#[test]
fn parallelism_is_a_sliding_window_in_name_order_and_new_nodes_count_as_active() {
    let spec = json!({"image": "nginx:1.20", "parallelism": 2, "imagePullPolicy": "Always",
                      "sandboxConfig": {"labels": {"a": "b"}}});
    let nodes = [
        node(
            "a",
            json!([owned("1.20", 0, UID)]),
            json!([{"tag": "1.20", "phase": "Pulling", "version": 0}]),
        ),
        empty("b"),
        empty("c"),
        empty("d"),
    ];
    let result = run(&job(spec, started()), &nodes, &[]);
    assert_eq!(result.writes.len(), 1, "one slot left: {:?}", result.writes);
    let write = &result.writes[0];
    assert_eq!((write.node.as_str(), write.image.as_str()), ("b", "nginx"));
    let tag = &write.entry.tags[0];
    assert_eq!(
        (tag.tag.as_str(), tag.version, tag.image_pull_policy.as_deref()),
        ("1.20", Some(0), Some("Always"))
    );
    assert_eq!(tag.owner_references.as_ref().unwrap()[0].uid.as_deref(), Some(UID));
    assert_eq!(tag.created_at.as_ref().map(|t| t.0), Some(now()));
    assert_eq!(
        write.entry.sandbox_config.as_ref().unwrap().labels.as_ref().unwrap()["a"],
        "b"
    );
    assert_eq!(result.status.active, Some(2), "the node written now is active now");

    let percent = json!({"image": "nginx:1.20", "parallelism": "50%"});
    let result = run(&job(percent, started()), &[empty("a"), empty("b"), empty("c")], &[]);
    assert_eq!(result.writes.len(), 2, "50% of 3 rounds up to 2");
    let paused = run(
        &job(json!({"image": "nginx", "parallelism": 0}), started()),
        &[empty("a")],
        &[],
    );
    assert!(paused.writes.is_empty());
}

#[test]
fn versions_new_tags_pass_old_status_and_joining_bumps_and_keeps_the_policy() {
    let spec = json!({"image": "nginx:1.20", "parallelism": 5});
    let stale = node(
        "n1",
        json!([]),
        json!([{"tag": "1.20", "phase": "Succeeded", "version": 5}]),
    );
    let result = run(&job(spec.clone(), started()), &[stale], &[]);
    assert_eq!(result.writes[0].entry.tags[0].version, Some(6), "status version 5 → 6");

    let mut theirs = owned("1.20", 3, "other");
    theirs["pullPolicy"] = json!({"ttlSecondsAfterFinished": 42});
    let shared = node("n1", json!([theirs]), json!([]));
    let result = run(&job(spec.clone(), started()), &[shared], &[]);
    let tag = &result.writes[0].entry.tags[0];
    assert_eq!(tag.version, Some(4));
    assert_eq!(tag.owner_references.as_ref().unwrap().len(), 2);
    assert_eq!(tag.pull_policy.as_ref().unwrap().ttl_seconds_after_finished, Some(42));

    // Ours, secrets present: nothing to write. A missing secret ref is added
    // without a new version.
    let secret = ReferenceObject {
        namespace: Some("kruise-daemon-config".into()),
        name: Some("a".into()),
        mode: Some("batch".into()),
    };
    let synced = node("n1", json!([owned("1.20", 1, UID)]), json!([]));
    assert!(
        run(&job(spec.clone(), started()), std::slice::from_ref(&synced), &[])
            .writes
            .is_empty()
    );
    let result = run(&job(spec, started()), &[synced], std::slice::from_ref(&secret));
    assert_eq!(result.writes[0].entry.pull_secrets, Some(vec![secret]));
    assert_eq!(result.writes[0].entry.tags[0].version, Some(1));
}

#[test]
fn digests_a_full_node_image_and_a_bad_image_reference() {
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let spec = json!({"image": format!("docker.io/library/nginx:1.2@{digest}")});
    let result = run(&job(spec, started()), &[empty("n1")], &[]);
    assert_eq!(result.writes[0].image, "nginx");
    assert_eq!(result.writes[0].entry.tags[0].tag, digest);

    let images: serde_json::Map<String, Value> = (0..256)
        .map(|i| (format!("image{i}"), json!({"tags": [{"tag": "1"}]})))
        .collect();
    let full: CachedNodeImage =
        serde_json::from_value(json!({"metadata": {"name": "full"}, "spec": {"images": images}})).unwrap();
    let result = run(&job(json!({"image": "nginx"}), started()), &[full], &[]);
    assert!(result.writes.is_empty());
    assert_eq!(result.status.failed_nodes, Some(vec!["full".to_owned()]));
    assert!(result.notices.contains(&Notice::NodeImageFull { node: "full".into() }));

    let bad = run(
        &job(json!({"image": "Redis:6.0:latest"}), started()),
        &[empty("n1")],
        &[],
    );
    assert!(bad.writes.is_empty());
    let message = bad.status.message.unwrap();
    assert!(
        message.starts_with("invalid image reference \"Redis:6.0:latest\""),
        "{message}"
    );
}

#[test]
fn lifecycle_deletes_after_the_ttl() {
    let spec = json!({"image": "nginx", "completionPolicy": {"type": "Always", "ttlSecondsAfterFinished": 60}});
    let done = |at: &str| job(spec.clone(), json!({"desired": 1, "completionTime": at}));
    assert_eq!(
        lifecycle(&done("2026-11-29T11:59:30Z"), now()),
        Lifecycle::Finished {
            delete_now: false,
            requeue_after: Some(30)
        }
    );
    assert_eq!(
        lifecycle(&done("2026-11-29T11:58:00Z"), now()),
        Lifecycle::Finished {
            delete_now: true,
            requeue_after: None
        }
    );
    assert_eq!(lifecycle(&job(spec, started()), now()), Lifecycle::Running);
}

/// A node NotReady for the no-response window with the job's tag unfinished
/// there counts as failed, so an Always job without a deadline completes
/// (its TTL then deletes it and releases its secrets and tags).
#[test]
fn a_node_not_ready_for_the_no_response_window_counts_as_failed() {
    let spec = json!({"image": "nginx:1.20", "parallelism": 3, "completionPolicy": {"type": "Always"}});
    let done = json!([{"tag": "1.20", "phase": "Succeeded", "version": 1}]);
    let nodes = [
        empty("node1"),
        node(
            "node2",
            json!([owned("1.20", 1, UID)]),
            json!([{"tag": "1.20", "phase": "Pulling", "version": 1}]),
        ),
        node("node3", json!([owned("1.20", 1, UID)]), done.clone()),
        node("node4", json!([owned("1.20", 1, UID)]), done),
    ];
    let job = job(spec, started());
    // 599 s NotReady: still waiting, looked at again when the window ends.
    let recent = "2026-11-29T11:50:01Z";
    let waiting = run_not_ready(&job, &nodes, &[], &[Some(recent), Some(recent), Some(recent)]);
    assert!(waiting.status.completion_time.is_none());
    assert_eq!(waiting.requeue_after, Some(1));
    assert!(waiting.writes.is_empty(), "no new tag on a NotReady node");

    let long = "2026-11-29T11:50:00Z";
    let lost = run_not_ready(&job, &nodes, &[], &[Some(long), Some(long), Some(long)]);
    let status = serde_json::to_value(&lost.status).unwrap();
    assert_eq!(status["failedNodes"], json!(["node1", "node2"]), "{status}");
    assert_eq!(
        (status["succeeded"].clone(), status["failed"].clone()),
        (json!(2), json!(2)),
        "node3 kept its success"
    );
    assert_eq!(status["message"], "job has completed");
    assert!(lost.notices.contains(&Notice::NodesNotReady {
        nodes: vec!["node1".into(), "node2".into()],
        seconds: 600
    }));
    assert_eq!(lost.requeue_after, None);
}

/// A job that reaches fewer nodes than it names, or none, says why; nodes
/// about to get their NodeImage are waited for, up to the deadline.
#[test]
fn what_a_job_cannot_reach_is_said_and_nodes_to_come_are_awaited() {
    let names = json!({"image": "nginx:1.20", "selector": {"names": ["node1", "node2"]}, "completionPolicy": {"type": "Always"}});
    let done = [node(
        "node1",
        json!([owned("1.20", 1, UID)]),
        json!([{"tag": "1.20", "phase": "Succeeded", "version": 1}]),
    )];
    let missing = Unmatched {
        missing_nodes: vec!["node2".into()],
        ..Unmatched::default()
    };
    let some = run_with(&job(names.clone(), started()), &done, &[], &[], &missing);
    assert_eq!(some.status.message.as_deref(), Some("job has completed"));
    assert!(
        some.notices.contains(&Notice::Unmatched {
            nothing: false,
            message: "node \"node2\" does not exist".into()
        }),
        "{:?}",
        some.notices
    );

    let none = run_with(&job(names.clone(), started()), &[], &[], &[], &missing);
    assert_eq!(
        none.status.message.as_deref(),
        Some("job has completed, no node targeted: node \"node2\" does not exist")
    );
    assert!(
        none.notices
            .iter()
            .any(|n| matches!(n, Notice::Unmatched { nothing: true, .. }))
    );

    let coming = Unmatched {
        awaited_nodes: vec!["node2".into()],
        ..Unmatched::default()
    };
    let waits = run_with(&job(names.clone(), started()), &done, &[], &[], &coming);
    assert!(
        waits.status.completion_time.is_none(),
        "node2's NodeImage is about to be made"
    );
    assert_eq!(
        waits.status.message.as_deref(),
        Some("job is running, progress 100.0%, 1 targeted node has no NodeImage yet")
    );
    let with_deadline = json!({"image": "nginx:1.20", "selector": {"names": ["node1", "node2"]},
        "completionPolicy": {"type": "Always", "activeDeadlineSeconds": 30}});
    let late = run_with(&job(with_deadline, started()), &done, &[], &[], &coming);
    assert_eq!(
        late.status.message.as_deref(),
        Some("job exceeds activeDeadlineSeconds"),
        "the deadline bounds the wait"
    );

    let pods = json!({"image": "nginx:1.20", "podSelector": {"matchLabels": {"app": "web"}}, "completionPolicy": {"type": "Never"}});
    let no_pods = Unmatched {
        no_pods_in: Some("default".into()),
        ..Unmatched::default()
    };
    let idle = run_with(&job(pods, started()), &[], &[], &[], &no_pods);
    assert_eq!(
        idle.status.message.as_deref(),
        Some("job is running, no progress: no running pod matches podSelector in namespace default")
    );
}

#[test]
fn only_progress_is_held_back_never_a_start_a_failure_or_the_end() {
    use prewarm_api::job::ImagePullJobStatus;
    use prewarm_controller::plan::image_pull_job::only_progress;
    let status = |v: Value| -> ImagePullJobStatus { serde_json::from_value(v).unwrap() };
    let running = status(json!({"startTime": "2026-11-29T11:59:00Z", "desired": 4, "active": 2,
        "succeeded": 1, "failed": 0, "failedNodes": [], "message": "job is running, progress 25.0%"}));
    let further = status(json!({"startTime": "2026-11-29T11:59:00Z", "desired": 4, "active": 2,
        "succeeded": 2, "failed": 0, "failedNodes": [], "message": "job is running, progress 50.0%"}));
    assert!(only_progress(&running, &further));
    let mut failing = further.clone();
    failing.failed_nodes = Some(vec!["n1".into()]);
    let mut done = further.clone();
    done.completion_time = further.start_time.clone();
    let mut grown = further.clone();
    grown.desired = 5;
    for other in [failing, done, grown] {
        assert!(!only_progress(&running, &other), "{other:?}");
    }
    assert!(
        !only_progress(&ImagePullJobStatus::default(), &running),
        "the first status"
    );
}

/// The result a completing status write is counted under; none for a
/// status that was complete already or is not yet.
#[test]
fn a_completion_is_counted_once_by_how_it_ended() {
    use prewarm_api::job::ImagePullJobStatus;
    use prewarm_controller::plan::image_pull_job::{MESSAGE_DEADLINE, completion_result};
    let status = |v: Value| -> ImagePullJobStatus { serde_json::from_value(v).unwrap() };
    let running = status(json!({"desired": 2, "active": 1, "succeeded": 1}));
    let done = status(json!({"desired": 2, "succeeded": 2, "completionTime": NOW}));
    let failed = status(json!({"desired": 2, "succeeded": 1, "failed": 1, "completionTime": NOW}));
    let late = status(json!({"desired": 2, "failed": 2, "completionTime": NOW, "message": MESSAGE_DEADLINE}));
    assert_eq!(completion_result(Some(&running), &done), Some("succeeded"));
    assert_eq!(completion_result(None, &failed), Some("failed"));
    assert_eq!(completion_result(Some(&running), &late), Some("deadline_exceeded"));
    assert_eq!(completion_result(Some(&done), &done), None, "complete already");
    assert_eq!(completion_result(Some(&running), &running), None, "not complete");
}
