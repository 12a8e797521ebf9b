//! Which keys each watch event queues.
use super::*;
use prewarm_api::node_image::MAX_IMAGES;
use serde_json::json;

fn job(completed: bool) -> ImagePullJob {
    let status = if completed {
        json!({"desired": 1, "completionTime": "2026-12-01T00:00:00Z"})
    } else {
        json!({"desired": 1})
    };
    serde_json::from_value(
        json!({"metadata": {"name": "job", "namespace": "default", "uid": "job-uid",
        "resourceVersion": "1"}, "spec": {"image": "nginx:1"}, "status": status}),
    )
    .unwrap_or_else(|e| unreachable!("{e}"))
}

#[test]
fn a_job_that_completes_wakes_the_node_images_holding_its_tags() {
    let (world, _writers) = World::new(std::time::Duration::ZERO);
    let node_image: CachedNodeImage = serde_json::from_value(json!({"metadata": {"name": "node-1"},
        "spec": {"images": {"nginx": {"tags": [{"tag": "1", "ownerReferences": [{"uid": "job-uid",
            "name": "job", "namespace": "default", "kind": "ImagePullJob", "apiVersion": "apps.kruise.io/v1beta1"}]}]}}}}))
    .unwrap_or_else(|e| unreachable!("{e}"));
    world.index().set_node_image("node-1", Some(&node_image));
    on_job(&world, Some(&job(false)), Some(&job(false)));
    assert!(
        world.node_queue.is_empty(),
        "a running job's progress wakes no NodeImage"
    );
    on_job(&world, Some(&job(false)), Some(&job(true)));
    assert_eq!(
        world.node_queue.len(),
        1,
        "completion starts the tags' TTLs: node-1 is looked at"
    );
}

fn node(labels: serde_json::Value) -> Node {
    serde_json::from_value(
        json!({"metadata": {"name": "node-1", "labels": labels, "resourceVersion": "1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    )
    .unwrap_or_else(|e| unreachable!("{e}"))
}

#[tokio::test]
async fn relabelling_a_node_wakes_the_jobs_that_lose_it() {
    let (world, mut writers) = World::new(std::time::Duration::ZERO);
    let selecting: ImagePullJob = serde_json::from_value(json!({"metadata": {"name": "zone-a",
        "namespace": "default", "uid": "a", "resourceVersion": "1"},
        "spec": {"image": "nginx:1", "selector": {"matchLabels": {"zone": "a"}}}}))
    .unwrap_or_else(|e| unreachable!("{e}"));
    writers
        .jobs
        .apply_watcher_event(&watcher::Event::Apply(selecting.clone()));
    on_job(&world, None, Some(&selecting));
    let key = world.job_queue.next().await;
    world.job_queue.done(&key, crate::queue::Outcome::Success(None));
    assert!(world.job_queue.is_empty());

    let (before, after) = (node(json!({"zone": "a"})), node(json!({"zone": "b"})));
    writers.nodes.apply_watcher_event(&watcher::Event::Apply(after.clone()));
    on_node(&world, Some(&before), Some(&after));
    assert_eq!(world.job_queue.len(), 1, "zone-a's job lost node-1 and must recount");
}

fn with_images(count: usize) -> CachedNodeImage {
    let images: serde_json::Map<String, serde_json::Value> = (0..count)
        .map(|i| (format!("image-{i}"), json!({"tags": [{"tag": "1"}]})))
        .collect();
    serde_json::from_value(json!({"metadata": {"name": "node-1"}, "spec": {"images": images}}))
        .unwrap_or_else(|e| unreachable!("{e}"))
}

#[tokio::test]
async fn room_freed_on_a_full_node_image_wakes_its_jobs() {
    let (world, mut writers) = World::new(std::time::Duration::ZERO);
    let named: ImagePullJob = serde_json::from_value(json!({"metadata": {"name": "named",
        "namespace": "default", "uid": "n", "resourceVersion": "1"},
        "spec": {"image": "nginx:1", "selector": {"names": ["node-1"]}}}))
    .unwrap_or_else(|e| unreachable!("{e}"));
    writers.jobs.apply_watcher_event(&watcher::Event::Apply(named.clone()));
    on_job(&world, None, Some(&named));
    let key = world.job_queue.next().await;
    world.job_queue.done(&key, crate::queue::Outcome::Success(None));
    on_node_image(&world, Some(&with_images(MAX_IMAGES)), Some(&with_images(MAX_IMAGES)));
    assert!(world.job_queue.is_empty(), "nothing changed for the job");
    on_node_image(
        &world,
        Some(&with_images(MAX_IMAGES)),
        Some(&with_images(MAX_IMAGES - 1)),
    );
    assert_eq!(world.job_queue.len(), 1, "the job that found node-1 full tries again");
}

#[tokio::test]
async fn a_deleted_job_leaves_nothing_awaited_behind() {
    let (world, _writers) = World::new(std::time::Duration::ZERO);
    let gone = job(false);
    let key = ObjectKey::of(&gone.metadata);
    world
        .expectations
        .expect(crate::reconcile::image_pull_job::job_expectation(&key), Some("5"));
    world.pending_writes.expect(&key.to_string(), "node-1", Some("7"));
    on_job(&world, Some(&gone), None);
    assert!(world.expectations.is_empty() && world.pending_writes.is_empty());
    assert_eq!(
        world.job_queue.next().await,
        key,
        "queued, so a pass that was running is followed by one that forgets"
    );
}

/// What one watch event queued: job, NodeImage and list-job keys.
#[derive(Debug, PartialEq, Eq)]
struct Queued {
    jobs: Vec<String>,
    node_images: Vec<String>,
    lists: Vec<String>,
}

fn queued(world: &World) -> Queued {
    Queued {
        jobs: world.job_queue.take_all().iter().map(ToString::to_string).collect(),
        node_images: world.node_queue.take_all(),
        lists: world.list_queue.take_all().iter().map(ToString::to_string).collect(),
    }
}

fn expect(jobs: &[&str], node_images: &[&str], lists: &[&str]) -> Queued {
    let owned = |keys: &[&str]| keys.iter().map(|k| (*k).to_owned()).collect();
    Queued {
        jobs: owned(jobs),
        node_images: owned(node_images),
        lists: owned(lists),
    }
}

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).unwrap_or_else(|e| unreachable!("{e}"))
}

fn selecting_job(name: &str, uid: &str, selector: serde_json::Value, status: serde_json::Value) -> ImagePullJob {
    object(
        json!({"metadata": {"name": name, "namespace": "team", "uid": uid, "resourceVersion": "1"},
        "spec": {"image": "nginx:1", "selector": selector, "pullSecrets": ["regcred"]}, "status": status}),
    )
}

fn labelled_node(labels: serde_json::Value, resource_version: &str) -> Node {
    object(
        json!({"metadata": {"name": "node-1", "labels": labels, "resourceVersion": resource_version},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    )
}

fn holding(owner_uid: &str, phase: &str) -> CachedNodeImage {
    object(json!({"metadata": {"name": "node-1", "labels": {"zone": "a"}},
        "spec": {"images": {"nginx": {"tags": [{"tag": "1", "version": 0, "ownerReferences": [{"uid": owner_uid,
            "name": "by-zone", "namespace": "team", "kind": "ImagePullJob", "apiVersion": "apps.kruise.io/v1beta1"}]}]}}},
        "status": {"desired": 1, "imageStatuses": {"nginx": {"tags": [{"tag": "1", "phase": phase, "version": 0}]}}}}))
}

fn pod(node: &str, labels: serde_json::Value, namespace: &str) -> Pod {
    object(
        json!({"metadata": {"name": "web", "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
        "status": {"phase": "Running"}}),
    )
}

/// Which keys each kind of watch event queues, event by event, on one
/// world: what decides both correctness (nobody forgotten) and cost
/// (nobody woken for nothing).
#[tokio::test]
async fn each_event_queues_exactly_the_keys_it_concerns() {
    let (world, mut writers) = World::new(std::time::Duration::ZERO);
    let by_zone = selecting_job(
        "by-zone",
        "u1",
        json!({"matchLabels": {"zone": "a"}}),
        json!({"desired": 1}),
    );
    let by_pods: ImagePullJob = object(json!({"metadata": {"name": "by-pods", "namespace": "team", "uid": "u2",
        "resourceVersion": "1"}, "spec": {"image": "nginx:1", "podSelector": {"matchLabels": {"app": "web"}}}}));
    for job in [&by_zone, &by_pods] {
        writers.jobs.apply_watcher_event(&watcher::Event::Apply(job.clone()));
        on_job(&world, None, Some(job));
    }
    assert_eq!(
        queued(&world),
        expect(&["team/by-pods", "team/by-zone"], &[], &[]),
        "jobs created"
    );

    let node = labelled_node(json!({"zone": "a"}), "1");
    writers.nodes.apply_watcher_event(&watcher::Event::Apply(node.clone()));
    on_node(&world, None, Some(&node));
    assert_eq!(
        queued(&world),
        expect(&["team/by-zone"], &["node-1"], &[]),
        "a node joins zone a"
    );
    on_node(&world, Some(&node), Some(&labelled_node(json!({"zone": "a"}), "2")));
    assert_eq!(queued(&world), expect(&[], &[], &[]), "a node's heartbeat: nothing");
    let moved = labelled_node(json!({"zone": "b"}), "3");
    writers.nodes.apply_watcher_event(&watcher::Event::Apply(moved.clone()));
    on_node(&world, Some(&node), Some(&moved));
    assert_eq!(
        queued(&world),
        expect(&["team/by-zone"], &["node-1"], &[]),
        "relabelled out of zone a"
    );
    writers.nodes.apply_watcher_event(&watcher::Event::Apply(node.clone()));
    on_node(&world, Some(&moved), Some(&node));
    queued(&world);

    on_node_image(&world, None, Some(&holding("u1", "Pulling")));
    assert_eq!(
        queued(&world),
        expect(&["team/by-zone"], &["node-1"], &[]),
        "a NodeImage appears"
    );
    on_node_image(
        &world,
        Some(&holding("u1", "Pulling")),
        Some(&holding("u1", "Succeeded")),
    );
    assert_eq!(
        queued(&world),
        expect(&["team/by-zone"], &["node-1"], &[]),
        "its owner's tag succeeded"
    );
    on_node_image(
        &world,
        Some(&holding("u1", "Succeeded")),
        Some(&holding("u1", "Succeeded")),
    );
    assert_eq!(
        queued(&world),
        expect(&[], &["node-1"], &[]),
        "a resync: only the NodeImage itself"
    );

    let done = selecting_job(
        "by-zone",
        "u1",
        json!({"matchLabels": {"zone": "a"}}),
        json!({"desired": 1, "completionTime": "2026-12-01T00:00:00Z"}),
    );
    writers.jobs.apply_watcher_event(&watcher::Event::Apply(done.clone()));
    on_job(&world, Some(&by_zone), Some(&done));
    assert_eq!(
        queued(&world),
        expect(&["team/by-zone"], &["node-1"], &[]),
        "completion wakes its NodeImages"
    );
    let replaced = selecting_job(
        "by-zone",
        "u9",
        json!({"matchLabels": {"zone": "a"}}),
        json!({"desired": 1}),
    );
    on_job(&world, Some(&done), Some(&replaced));
    assert_eq!(
        queued(&world),
        expect(&["team/by-zone"], &["node-1"], &[]),
        "replaced under its name: pruned"
    );

    on_pod(&world, None, Some(&pod("node-1", json!({"app": "web"}), "team")));
    assert_eq!(
        queued(&world),
        expect(&["team/by-pods"], &[], &[]),
        "a matching pod lands on a node"
    );
    on_pod(&world, None, Some(&pod("node-1", json!({"app": "db"}), "team")));
    assert_eq!(
        queued(&world),
        expect(&[], &[], &[]),
        "a pod the selector does not match"
    );
    on_pod(&world, None, Some(&pod("node-1", json!({"app": "web"}), "elsewhere")));
    assert_eq!(
        queued(&world),
        expect(&[], &[], &[]),
        "a matching pod of another namespace"
    );

    let secret = |version: &str| -> SecretMeta {
        object(json!({"metadata": {"name": "regcred", "namespace": "team", "resourceVersion": version}}))
    };
    on_secret(&world, Some(&secret("1")), Some(&secret("1")));
    assert_eq!(queued(&world), expect(&[], &[], &[]), "a secret resync");
    on_secret(&world, Some(&secret("1")), Some(&secret("2")));
    assert_eq!(
        queued(&world),
        expect(&["team/by-zone"], &[], &[]),
        "a pull secret a job names changed"
    );

    let child: ImagePullJob = object(
        json!({"metadata": {"name": "list-abc12", "namespace": "team", "uid": "c1",
        "resourceVersion": "1", "ownerReferences": [{"apiVersion": "apps.kruise.io/v1beta1", "kind": "ImageListPullJob",
        "name": "list", "uid": "l1", "controller": true}]}, "spec": {"image": "busybox:1"}}),
    );
    on_job(&world, None, Some(&child));
    assert_eq!(
        queued(&world),
        expect(&["team/list-abc12"], &[], &["team/list"]),
        "a list's child changes"
    );
    on_job(&world, Some(&child), None);
    assert_eq!(
        queued(&world),
        expect(&["team/list-abc12"], &[], &["team/list"]),
        "a list's child goes"
    );
}

#[test]
fn pull_secret_copies_are_indexed_by_namespace() {
    use crate::plan::secrets::SOURCE_KEY;
    let (world, _writers) = World::new(std::time::Duration::ZERO);
    let secret = |namespace: &str, name: &str, version: &str, source: Option<&str>| -> SecretMeta {
        let mut metadata = json!({"name": name, "namespace": namespace, "resourceVersion": version});
        if let Some(source) = source {
            metadata["annotations"][SOURCE_KEY] = json!(source);
        }
        object(json!({ "metadata": metadata }))
    };
    let copies = |namespace: &str| world.index().secret_copies_in(namespace);
    let agents = "kruise-daemon-config";

    on_secret(&world, None, Some(&secret(agents, "copy-a", "1", Some("team/regcred"))));
    on_secret(&world, None, Some(&secret(agents, "copy-b", "1", Some("dev/regcred"))));
    on_secret(&world, None, Some(&secret(agents, "plain", "1", None)));
    on_secret(&world, None, Some(&secret("team", "regcred", "1", None)));
    assert_eq!(copies(agents), ["copy-a", "copy-b"], "only Secrets naming a source");
    assert!(copies("team").is_empty(), "a source is no copy");

    on_secret(
        &world,
        Some(&secret(agents, "copy-a", "1", Some("team/regcred"))),
        Some(&secret(agents, "copy-a", "2", None)),
    );
    assert_eq!(copies(agents), ["copy-b"], "a Secret that stops naming a source");
    on_secret(
        &world,
        Some(&secret(agents, "plain", "1", None)),
        Some(&secret(agents, "plain", "2", Some("team/regcred"))),
    );
    assert_eq!(copies(agents), ["copy-b", "plain"], "a Secret that starts naming one");
    on_secret(&world, Some(&secret(agents, "copy-b", "1", Some("dev/regcred"))), None);
    assert_eq!(copies(agents), ["plain"], "a copy deleted");
}
