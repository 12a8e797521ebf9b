//! The controller's view of the cluster: one cache per watched kind (Secrets
//! as metadata only), the indexes over them, the two work queues, and the
//! watch loops that keep the caches and indexes current and turn each change
//! into the work it causes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};

use crate::trim;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use prewarm_api::v1beta1::{ImageListPullJob, ImagePullJob, NodeImage};

use crate::index::{Index, ObjectKey};
use crate::plan::image_pull_job::Target;
use crate::plan::selection::{Selection, active_pod_node, selection};
use crate::queue::Queue;

pub type SecretMeta = PartialObjectMeta<Secret>;

#[derive(Debug)]
pub struct World {
    pub jobs: Store<ImagePullJob>,
    pub list_jobs: Store<ImageListPullJob>,
    pub node_images: Store<NodeImage>,
    pub nodes: Store<Node>,
    pub pods: Store<Pod>,
    pub secrets: Store<SecretMeta>,
    pub job_queue: Queue<ObjectKey>,
    pub list_queue: Queue<ObjectKey>,
    pub node_queue: Queue<String>,
    /// The resourceVersions this controller wrote and its caches must reach
    /// before it decides on that object again.
    pub expectations: Expectations,
    /// NodeImage writes each job made that the cache has not shown yet.
    pub pending_writes: PendingWrites,
    /// Job events that arrive within this window are handled in one pass.
    pub job_debounce: Duration,
    index: Mutex<Index>,
}

/// The writers that fill the caches, handed to `watch`.
#[derive(Debug)]
pub struct Writers {
    jobs: Writer<ImagePullJob>,
    list_jobs: Writer<ImageListPullJob>,
    node_images: Writer<NodeImage>,
    nodes: Writer<Node>,
    pods: Writer<Pod>,
    secrets: Writer<SecretMeta>,
}

impl World {
    pub fn new(job_debounce: Duration) -> (Arc<Self>, Writers) {
        let jobs = Writer::default();
        let list_jobs = Writer::default();
        let node_images = Writer::default();
        let nodes = Writer::default();
        let pods = Writer::default();
        let secrets = Writer::default();
        let world = Self {
            jobs: jobs.as_reader(),
            list_jobs: list_jobs.as_reader(),
            node_images: node_images.as_reader(),
            nodes: nodes.as_reader(),
            pods: pods.as_reader(),
            secrets: secrets.as_reader(),
            job_queue: Queue::default(),
            list_queue: Queue::default(),
            node_queue: Queue::default(),
            expectations: Expectations::default(),
            pending_writes: PendingWrites::default(),
            job_debounce,
            index: Mutex::default(),
        };
        (
            Arc::new(world),
            Writers {
                jobs,
                list_jobs,
                node_images,
                nodes,
                pods,
                secrets,
            },
        )
    }

    pub fn index(&self) -> MutexGuard<'_, Index> {
        match self.index.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Waits until every cache holds a first complete list.
    pub async fn synced(&self) {
        let _ = futures_util::join!(
            self.jobs.wait_until_ready(),
            self.list_jobs.wait_until_ready(),
            self.node_images.wait_until_ready(),
            self.nodes.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.secrets.wait_until_ready(),
        );
    }

    pub fn job(&self, key: &ObjectKey) -> Option<Arc<ImagePullJob>> {
        self.jobs.get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

    pub fn list_job(&self, key: &ObjectKey) -> Option<Arc<ImageListPullJob>> {
        self.list_jobs.get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

    /// The ImagePullJobs a list job controls, not being deleted.
    pub fn children(&self, list: &ImageListPullJob) -> Vec<Arc<ImagePullJob>> {
        let uid = list.metadata.uid.as_deref().unwrap_or_default();
        let keys = self.index().children_of(uid);
        keys.iter()
            .filter_map(|k| self.job(k))
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .collect()
    }

    pub fn node_image(&self, name: &str) -> Option<Arc<NodeImage>> {
        self.node_images.get(&ObjectRef::new(name))
    }

    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&ObjectRef::new(name))
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<SecretMeta>> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))
    }

    /// Queues a job after its batch window: `--job-batch-window`, stretched
    /// by 100 µs per targeted node, so that a pass over N nodes runs at most
    /// about once per N × 100 µs and a job's CPU grows linearly with its nodes.
    pub fn enqueue_job(&self, key: ObjectKey) {
        let targeted = self
            .job(&key)
            .and_then(|j| j.status.as_ref().map(|s| s.desired))
            .and_then(|d| u32::try_from(d).ok())
            .unwrap_or(0);
        let window = self.job_debounce.max(Duration::from_micros(100) * targeted);
        self.job_queue.add_after(key, window);
    }

    /// Everything, as after a restart or on becoming leader.
    pub fn enqueue_all(&self) {
        for job in self.jobs.state() {
            self.job_queue.add(ObjectKey::of(&job.metadata));
        }
        for list in self.list_jobs.state() {
            self.list_queue.add(ObjectKey::of(&list.metadata));
        }
        let names: BTreeSet<String> = self
            .node_images
            .state()
            .iter()
            .map(|n| n.name_any())
            .chain(self.nodes.state().iter().map(|n| n.name_any()))
            .collect();
        for name in names {
            self.node_queue.add(name);
        }
    }

    /// The labels a node is selected by: the Node's, or for a NodeImage without
    /// a Node, the NodeImage's.
    fn node_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        match self.node(name) {
            Some(node) => node.metadata.labels.clone(),
            None => self.node_image(name).and_then(|n| n.metadata.labels.clone()),
        }
    }

    /// The NodeImages a job targets, sorted by name, with their readiness.
    pub fn targets(&self, job: &ImagePullJob) -> Vec<(Arc<NodeImage>, bool)> {
        let namespace = job.namespace().unwrap_or_default();
        let node_images: Vec<Arc<NodeImage>> = match selection(&job.spec) {
            Selection::All => self.node_images.state(),
            Selection::Names(names) => {
                let unique: BTreeSet<&String> = names.iter().collect();
                unique.into_iter().filter_map(|n| self.node_image(n)).collect()
            }
            Selection::Labels(selector) => self
                .node_images
                .state()
                .into_iter()
                .filter(|n| selector.matches(self.node_labels(&n.name_any()).as_ref()))
                .collect(),
            Selection::Pods(selector) => {
                let pods = self.index().pods_in_namespace(&namespace);
                let nodes: BTreeSet<String> = pods
                    .iter()
                    .filter_map(|p| self.pods.get(&ObjectRef::new(p).within(&namespace)))
                    .filter(|p| selector.matches(p.metadata.labels.as_ref()))
                    .filter_map(|p| active_pod_node(&p).map(str::to_owned))
                    .collect();
                nodes.iter().filter_map(|n| self.node_image(n)).collect()
            }
        };
        let index = self.index();
        let mut targets: Vec<(Arc<NodeImage>, bool)> = node_images
            .into_iter()
            .map(|n| {
                let ready = !index.is_not_ready(n.metadata.name.as_deref().unwrap_or_default());
                (n, ready)
            })
            .collect();
        drop(index);
        targets.sort_by(|a, b| a.0.metadata.name.cmp(&b.0.metadata.name));
        targets
    }

    /// Active jobs that target the node now (labels and pods checked).
    pub fn jobs_for_node(&self, node: &str) -> BTreeSet<ObjectKey> {
        let candidates = self.index().candidate_jobs(node);
        let mut jobs = candidates.certain;
        let labels = self.node_labels(node);
        for key in candidates.by_labels {
            if let Some(job) = self.job(&key)
                && let Selection::Labels(selector) = selection(&job.spec)
                && selector.matches(labels.as_ref())
            {
                jobs.insert(key);
            }
        }
        for key in candidates.pod_jobs {
            let Some(job) = self.job(&key) else { continue };
            let Selection::Pods(selector) = selection(&job.spec) else {
                continue;
            };
            let runs_here = candidates
                .pods
                .iter()
                .filter(|p| p.namespace == key.namespace)
                .filter_map(|p| self.pods.get(&ObjectRef::new(&p.name).within(&p.namespace)))
                .any(|p| active_pod_node(&p) == Some(node) && selector.matches(p.metadata.labels.as_ref()));
            if runs_here {
                jobs.insert(key);
            }
        }
        jobs
    }
}

/// Since when the Node's Ready condition has been True, `None` when it is not.
pub fn ready_since(node: &Node) -> Option<Timestamp> {
    let ready = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    (ready.status == "True").then(|| {
        ready
            .last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0)
    })
}

/// Written resourceVersions the caches have not shown yet.
#[derive(Debug, Default)]
pub struct Expectations {
    pending: Mutex<HashMap<String, u64>>,
}

impl Expectations {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        match self.pending.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// After a write that returned `resource_version`. resourceVersions are
    /// opaque; where they are not numbers, nothing is awaited.
    pub fn expect(&self, key: String, resource_version: Option<&str>) {
        if let Some(version) = resource_version.and_then(|v| v.parse::<u64>().ok()) {
            self.lock().insert(key, version);
        }
    }

    /// Whether the cached copy (at `cached`) already shows our last write.
    pub fn satisfied(&self, key: &str, cached: Option<&str>) -> bool {
        let mut pending = self.lock();
        let Some(expected) = pending.get(key).copied() else {
            return true;
        };
        let reached = cached.and_then(|c| c.parse::<u64>().ok()).is_none_or(|c| c >= expected);
        if reached {
            pending.remove(key);
        }
        reached
    }
}

/// The NodeImage writes of each job, by NodeImage, until the cache shows
/// them: a job plans again only on a cache that holds its own writes, and
/// never waits for other jobs' writes.
#[derive(Debug, Default)]
pub struct PendingWrites {
    by_job: Mutex<HashMap<String, HashMap<String, u64>>>,
}

impl PendingWrites {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, HashMap<String, u64>>> {
        match self.by_job.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    pub fn expect(&self, job: &str, node: &str, resource_version: Option<&str>) {
        if let Some(version) = resource_version.and_then(|v| v.parse::<u64>().ok()) {
            self.lock()
                .entry(job.to_owned())
                .or_default()
                .insert(node.to_owned(), version);
        }
    }

    /// Whether the cache (`cached(node)`) shows every write of `job`; the
    /// writes it shows are forgotten.
    pub fn settled(&self, job: &str, cached: impl Fn(&str) -> Option<u64>) -> bool {
        let mut pending = self.lock();
        let Some(nodes) = pending.get_mut(job) else {
            return true;
        };
        // A NodeImage gone from the cache will not show the write either.
        nodes.retain(|node, expected| cached(node).is_some_and(|c| c < *expected));
        let settled = nodes.is_empty();
        if settled {
            pending.remove(job);
        }
        settled
    }
}

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
    if new.is_some() {
        world.enqueue_job(key);
    }
    // A job that is going, or was replaced by one of the same name, leaves
    // owner references behind: its NodeImages are pruned.
    let old_uid = old.and_then(|j| j.metadata.uid.clone());
    let going = new.is_none_or(|j| j.metadata.deletion_timestamp.is_some() || j.metadata.uid != old_uid);
    if going {
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

fn on_list_job(world: &World, _old: Option<&ImageListPullJob>, new: Option<&ImageListPullJob>) {
    if let Some(list) = new {
        world.list_queue.add(ObjectKey::of(&list.metadata));
    }
}

fn on_node_image(world: &World, old: Option<&NodeImage>, new: Option<&NodeImage>) {
    let Some(any) = new.or(old) else { return };
    let name = any.name_any();
    world.index().set_node_image(&name, new);
    world.node_queue.add(name.clone());
    let membership_changed = match (old, new) {
        (Some(old), Some(new)) => old.metadata.labels != new.metadata.labels,
        _ => true,
    };
    let mut jobs = if membership_changed {
        world.jobs_for_node(&name)
    } else {
        BTreeSet::new()
    };
    jobs.extend(crate::changes::owners_of_changed_tags(old, new));
    for job in jobs {
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
                ready_since(n).is_some(),
                n.metadata.deletion_timestamp.is_some(),
            )
        })
    };
    world
        .index()
        .set_not_ready(&name, new.is_some_and(|n| ready_since(n).is_none()));
    if facts(old) == facts(new) {
        return;
    }
    world.node_queue.add(name.clone());
    for job in world.jobs_for_node(&name) {
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

/// A NodeImage target for the planner, borrowed from the cache.
pub fn as_targets(targets: &[(Arc<NodeImage>, bool)]) -> Vec<Target<'_>> {
    targets
        .iter()
        .map(|(node_image, ready)| Target {
            node_image,
            ready: *ready,
        })
        .collect()
}
