//! The watch loops: one per cached kind, each applying events to its cache
//! and telling the world what changed, so the right keys are queued.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use prewarm_api::v1beta1::{ImageListPullJob, ImagePullJob};

use super::{SecretMeta, World, Writers, not_ready_since};
use crate::cached_node_image::CachedNodeImage;
use crate::index::ObjectKey;
use crate::plan::selection::{Selection, active_pod_node, selection};
use crate::trim;

/// Starts the watch loops. Each returns only when its stream ends.
pub fn watch(client: &Client, world: &Arc<World>, writers: Writers) -> Vec<tokio::task::JoinHandle<()>> {
    let Writers {
        jobs,
        list_jobs,
        node_images,
        nodes,
        pods,
        secrets,
    } = writers;
    vec![
        spawn_follow(client, world, jobs, on_job, trim::keep_all),
        spawn_follow(client, world, list_jobs, on_list_job, trim::keep_all),
        spawn_follow(client, world, node_images, on_node_image, trim::trim_metadata),
        spawn_follow(client, world, nodes, on_node, trim::trim_node),
        spawn_follow(client, world, pods, on_pod, trim::trim_pod),
        spawn_follow(client, world, secrets, on_secret, trim::keep_all),
    ]
}

/// Watches every `K` of the cluster into `writer`, reporting changes to
/// `on_change`; `trim` drops what the controller never reads before caching.
fn spawn_follow<K>(
    client: &Client,
    world: &Arc<World>,
    writer: Writer<K>,
    on_change: OnChange<K>,
    trim: fn(&mut K),
) -> tokio::task::JoinHandle<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default().any_semantic()).modify(trim);
    tokio::spawn(follow(stream, writer, world.clone(), on_change))
}

type OnChange<K> = fn(&World, Option<&K>, Option<&K>);

/// Applies each watch event to the cache, then reports (old, new) to
/// `on_change`. A relist is applied as a whole, and objects that vanished
/// during it are reported as deleted.
/// An object of a relist: what the cache held before, and its reference.
type Listed<K> = (Option<Arc<K>>, ObjectRef<K>);

async fn follow<K>(
    stream: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    mut writer: Writer<K>,
    world: Arc<World>,
    on_change: OnChange<K>,
) where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    let reader = writer.as_reader();
    // During a relist the writer buffers the listed objects; only references
    // are kept here, so a relist holds one extra copy of the cache, not two.
    let mut relist: Option<Vec<Listed<K>>> = None;
    let stream = stream.default_backoff();
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying with backoff");
                continue;
            }
        };
        match &event {
            watcher::Event::Init => relist = Some(Vec::new()),
            watcher::Event::InitApply(object) => {
                let key = ObjectRef::from_obj(object);
                let old = reader.get(&key);
                relist.get_or_insert_default().push((old, key));
            }
            watcher::Event::InitDone => {
                let changes = relist.take().unwrap_or_default();
                let before = reader.state();
                writer.apply_watcher_event(&event);
                let listed: HashSet<&ObjectRef<K>> = changes.iter().map(|(_, key)| key).collect();
                for gone in before
                    .iter()
                    .filter(|k| !listed.contains(&ObjectRef::from_obj(k.as_ref())))
                {
                    on_change(&world, Some(gone), None);
                }
                for (old, key) in &changes {
                    if let Some(new) = reader.get(key) {
                        on_change(&world, old.as_deref(), Some(&new));
                    }
                }
                continue;
            }
            watcher::Event::Apply(object) => {
                let old = reader.get(&ObjectRef::from_obj(object));
                writer.apply_watcher_event(&event);
                on_change(&world, old.as_deref(), Some(object));
                continue;
            }
            watcher::Event::Delete(object) => {
                writer.apply_watcher_event(&event);
                on_change(&world, Some(object), None);
                continue;
            }
        }
        writer.apply_watcher_event(&event);
    }
}

fn on_job(world: &World, old: Option<&ImagePullJob>, new: Option<&ImagePullJob>) {
    let Some(any) = new.or(old) else { return };
    let key = ObjectKey::of(&any.metadata);
    world.index().set_job(&key, new);
    // The list job that controls it recounts (and remakes a child deleted under it).
    for job in [old, new].into_iter().flatten() {
        for owner in job.metadata.owner_references.iter().flatten() {
            if owner.controller == Some(true) && owner.kind == "ImageListPullJob" {
                world.list_queue.add(ObjectKey::new(&key.namespace, &owner.name));
            }
        }
    }
    // A deleted job too: its pass finds it gone and forgets what was awaited
    // for it, also what a pass running at the deletion still recorded.
    if new.is_some() {
        world.enqueue_job(key.clone());
    } else {
        world.forget_job(&key);
        world.job_queue.add(key.clone());
    }
    // A job that is going, or was replaced by one of the same name, leaves
    // owner references behind: its NodeImages are pruned. One that completed
    // starts its tags' TTLs, which nothing else would wake a quiet node for.
    let old_uid = old.and_then(|j| j.metadata.uid.clone());
    let going = new.is_none_or(|j| j.metadata.deletion_timestamp.is_some() || j.metadata.uid != old_uid);
    let completed = |j: Option<&ImagePullJob>| {
        j.and_then(|j| j.status.as_ref())
            .is_some_and(|s| s.completion_time.is_some())
    };
    if going || completed(new) != completed(old) {
        let uids = [old_uid, new.and_then(|j| j.metadata.uid.clone())];
        let nodes: BTreeSet<String> = {
            let index = world.index();
            uids.iter()
                .flatten()
                .flat_map(|uid| index.nodes_owned_by(uid))
                .collect()
        };
        for node in nodes {
            world.node_queue.add(node);
        }
    }
}

fn on_list_job(world: &World, old: Option<&ImageListPullJob>, new: Option<&ImageListPullJob>) {
    let Some(any) = new.or(old) else { return };
    let key = ObjectKey::of(&any.metadata);
    if new.is_none() {
        world.forget_list_job(&key);
    }
    world.list_queue.add(key);
}

fn on_node_image(world: &World, old: Option<&CachedNodeImage>, new: Option<&CachedNodeImage>) {
    let Some(any) = new.or(old) else { return };
    let name = any.name_any();
    world.index().set_node_image(&name, new);
    world.node_queue.add(name.clone());
    let membership_changed = match (old, new) {
        (Some(old), Some(new)) => old.metadata.labels != new.metadata.labels,
        _ => true,
    };
    if membership_changed {
        world.passes.nodes_moved();
    }
    // A NodeImage filling up or freeing room: the jobs that target it look again.
    let mut jobs = if membership_changed || crate::changes::room_changed(old, new) {
        let mut jobs = world.jobs_for_node(&name);
        // A NodeImage without a Node is selected by its own labels: the jobs of
        // the labels it had lose it.
        if world.node(&name).is_none() {
            jobs.extend(world.jobs_for_node_labelled(&name, old.and_then(|o| o.metadata.labels.as_ref())));
        }
        jobs
    } else {
        BTreeSet::new()
    };
    jobs.extend(crate::changes::owners_of_changed_tags(old, new));
    for job in jobs {
        world.passes.mark(&job, &name);
        world.enqueue_job(job);
    }
}

fn on_node(world: &World, old: Option<&Node>, new: Option<&Node>) {
    let Some(any) = new.or(old) else { return };
    let name = any.name_any();
    let facts = |n: Option<&Node>| {
        n.map(|n| {
            (
                n.metadata.labels.clone(),
                not_ready_since(n),
                n.metadata.deletion_timestamp.is_some(),
            )
        })
    };
    world.index().set_not_ready(&name, new.and_then(not_ready_since));
    if facts(old) == facts(new) {
        return;
    }
    world.passes.nodes_moved();
    world.node_queue.add(name.clone());
    // The jobs that select the node now, and those that selected it by the
    // labels it had: a relabelled node may have left a job's selection.
    let mut jobs = world.jobs_for_node(&name);
    jobs.extend(world.jobs_for_node_labelled(&name, old.and_then(|o| o.metadata.labels.as_ref())));
    for job in jobs {
        world.enqueue_job(job);
    }
}

fn on_pod(world: &World, old: Option<&Pod>, new: Option<&Pod>) {
    let Some(any) = new.or(old) else { return };
    let key = ObjectKey::of(&any.metadata);
    world.index().set_pod(&key, new);
    let placement =
        |p: Option<&Pod>| p.and_then(|p| active_pod_node(p).map(|n| (n.to_owned(), p.metadata.labels.clone())));
    let (before, after) = (placement(old), placement(new));
    if before == after {
        return;
    }
    let candidates = world.index().pod_jobs_in(&key.namespace);
    for job_key in candidates {
        let Some(job) = world.job(&job_key) else { continue };
        let Selection::Pods(selector) = selection(&job.spec) else {
            continue;
        };
        let matched = |p: &Option<(String, Option<BTreeMap<String, String>>)>| {
            p.as_ref().is_some_and(|(_, labels)| selector.matches(labels.as_ref()))
        };
        if matched(&before) || matched(&after) {
            world.passes.pods_moved();
            world.enqueue_job(job_key);
        }
    }
}

fn on_secret(world: &World, old: Option<&SecretMeta>, new: Option<&SecretMeta>) {
    let Some(any) = new.or(old) else { return };
    let key = ObjectKey::of(&any.metadata);
    let version = |s: Option<&SecretMeta>| s.and_then(|s| s.metadata.resource_version.clone());
    if version(old) == version(new) {
        return;
    }
    let mut jobs = world.index().jobs_using_secret(&key);
    // A copy deleted under a job is made again.
    if new.is_none()
        && let Some(old) = old
    {
        jobs.extend(
            crate::plan::secrets::references(&old.metadata)
                .iter()
                .filter_map(|r| r.split_once('/'))
                .map(|(ns, name)| ObjectKey::new(ns, name)),
        );
    }
    for job in jobs {
        world.enqueue_job(job);
    }
}

#[cfg(test)]
mod tests {
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
}
