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
use prewarm_api::v1beta1::{AdvancedCronJob, ImageListPullJob, ImagePullJob};

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
        cron_jobs,
        node_images,
        nodes,
        pods,
        secrets,
    } = writers;
    vec![
        spawn_follow(client, world, jobs, on_job, trim::keep_all),
        spawn_follow(client, world, list_jobs, on_list_job, trim::keep_all),
        spawn_follow(client, world, cron_jobs, on_cron_job, trim::keep_all),
        spawn_follow(client, world, node_images, on_node_image, trim::trim_metadata),
        spawn_follow(client, world, nodes, on_node, trim::trim_node),
        spawn_follow(client, world, pods, on_pod, trim::trim_pod),
        spawn_follow(client, world, secrets, on_secret, trim::trim_secret),
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
    world.index().set_list_job(&key, new);
    // The cron job that controls it recounts its active runs and history.
    for list in [old, new].into_iter().flatten() {
        for owner in list.metadata.owner_references.iter().flatten() {
            if owner.controller == Some(true) && owner.kind == "AdvancedCronJob" {
                world.cron_queue.add(ObjectKey::new(&key.namespace, &owner.name));
            }
        }
    }
    world.list_queue.add(key);
}

fn on_cron_job(world: &World, old: Option<&AdvancedCronJob>, new: Option<&AdvancedCronJob>) {
    let Some(any) = new.or(old) else { return };
    let key = ObjectKey::of(&any.metadata);
    if new.is_none() {
        world.forget_cron_job(&key);
    }
    world.cron_queue.add(key);
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
    let mut index = world.index();
    index.set_secret_copy(&key, new.is_some_and(|s| crate::plan::secrets::is_copy(&s.metadata)));
    let mut jobs = index.jobs_using_secret(&key);
    drop(index);
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
mod tests;
