//! The controller's view of the cluster: one cache per watched kind (Secrets
//! as metadata only), the indexes over them and the two work queues. The
//! watch loops that keep them current and turn each change into the work it
//! causes are in `watch`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Secret};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store};
use prewarm_api::v1beta1::{AdvancedCronJob, ImageListPullJob, ImagePullJob};

use crate::cached_node_image::CachedNodeImage;
use crate::index::{Index, ObjectKey};
use crate::plan::excluded::ExcludedNodes;
use crate::plan::image_pull_job::{Target, Unmatched};
use crate::plan::node_image::is_virtual_kubelet;
use crate::plan::selection::{Selection, active_pod_node, selection};
use crate::queue::Queue;

mod passes;
mod watch;
pub use passes::{Basis, Memo, Passes, Position};
pub use watch::watch;

pub type SecretMeta = PartialObjectMeta<Secret>;

#[derive(Debug)]
pub struct World {
    pub jobs: Store<ImagePullJob>,
    pub list_jobs: Store<ImageListPullJob>,
    pub cron_jobs: Store<AdvancedCronJob>,
    pub node_images: Store<CachedNodeImage>,
    pub nodes: Store<Node>,
    pub pods: Store<Pod>,
    pub secrets: Store<SecretMeta>,
    pub job_queue: Queue<ObjectKey>,
    pub list_queue: Queue<ObjectKey>,
    pub cron_queue: Queue<ObjectKey>,
    pub node_queue: Queue<String>,
    /// The resourceVersions this controller wrote and its caches must reach
    /// before it decides on that object again.
    pub expectations: Expectations,
    /// NodeImage writes each job made that the cache has not shown yet.
    pub pending_writes: PendingWrites,
    /// Job events that arrive within this window are handled in one pass.
    pub job_debounce: Duration,
    /// What each job's last pass knew, and the NodeImage changes since.
    pub passes: Passes,
    index: Mutex<Index>,
}

/// The writers that fill the caches, handed to `watch`.
#[derive(Debug)]
pub struct Writers {
    jobs: Writer<ImagePullJob>,
    list_jobs: Writer<ImageListPullJob>,
    cron_jobs: Writer<AdvancedCronJob>,
    node_images: Writer<CachedNodeImage>,
    nodes: Writer<Node>,
    pods: Writer<Pod>,
    secrets: Writer<SecretMeta>,
}

impl World {
    pub fn new(job_debounce: Duration) -> (Arc<Self>, Writers) {
        let jobs = Writer::default();
        let list_jobs = Writer::default();
        let cron_jobs = Writer::default();
        let node_images = Writer::default();
        let nodes = Writer::default();
        let pods = Writer::default();
        let secrets = Writer::default();
        let world = Self {
            jobs: jobs.as_reader(),
            list_jobs: list_jobs.as_reader(),
            cron_jobs: cron_jobs.as_reader(),
            node_images: node_images.as_reader(),
            nodes: nodes.as_reader(),
            pods: pods.as_reader(),
            secrets: secrets.as_reader(),
            job_queue: Queue::default(),
            list_queue: Queue::default(),
            cron_queue: Queue::default(),
            node_queue: Queue::default(),
            expectations: Expectations::default(),
            pending_writes: PendingWrites::default(),
            job_debounce,
            passes: Passes::default(),
            index: Mutex::default(),
        };
        (
            Arc::new(world),
            Writers {
                jobs,
                list_jobs,
                cron_jobs,
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
            self.cron_jobs.wait_until_ready(),
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

    pub fn cron_job(&self, key: &ObjectKey) -> Option<Arc<AdvancedCronJob>> {
        self.cron_jobs.get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

    /// The ImageListPullJobs a cron job controls, not being deleted.
    pub fn cron_children(&self, cron: &AdvancedCronJob) -> Vec<Arc<ImageListPullJob>> {
        let uid = cron.metadata.uid.as_deref().unwrap_or_default();
        let keys = self.index().cron_children_of(uid);
        keys.iter()
            .filter_map(|k| self.list_job(k))
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .collect()
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

    pub fn node_image(&self, name: &str) -> Option<Arc<CachedNodeImage>> {
        self.node_images.get(&ObjectRef::new(name))
    }

    pub fn node(&self, name: &str) -> Option<Arc<Node>> {
        self.nodes.get(&ObjectRef::new(name))
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<SecretMeta>> {
        self.secrets.get(&ObjectRef::new(name).within(namespace))
    }

    /// Queues a job after its batch window (`--job-batch-window`). A pass
    /// that must look at every target (the first, or after the targets may
    /// have changed) waits at least 100 µs per targeted node, so that such
    /// passes over N nodes run at most about once per N × 100 µs.
    pub fn enqueue_job(&self, key: ObjectKey) {
        let job = self.job(&key);
        let current = job.as_ref().is_some_and(|j| self.passes.is_current(&key, j));
        let targeted = job
            .and_then(|j| j.status.as_ref().map(|s| s.desired))
            .and_then(|d| u32::try_from(d).ok())
            .filter(|_| !current)
            .unwrap_or(0);
        let window = self.job_debounce.max(Duration::from_micros(100) * targeted);
        self.job_queue.add_after(key, window);
    }

    /// Drops what this controller remembers of a job that is gone: the
    /// expectation of its last write and its NodeImage writes not yet seen.
    pub fn forget_job(&self, key: &ObjectKey) {
        self.expectations
            .forget(&crate::reconcile::image_pull_job::job_expectation(key));
        self.pending_writes.forget(&key.to_string());
        self.passes.forget(key);
    }

    /// Drops the expectation of a cron job that is gone.
    pub fn forget_cron_job(&self, key: &ObjectKey) {
        self.expectations
            .forget(&crate::reconcile::advanced_cron_job::expectation(key));
    }

    /// Drops the expectation of a list job that is gone.
    pub fn forget_list_job(&self, key: &ObjectKey) {
        self.expectations
            .forget(&crate::reconcile::image_list_pull_job::expectation(key));
    }

    /// Everything, as after a restart or on becoming leader.
    pub fn enqueue_all(&self) {
        for job in self.jobs.state() {
            self.job_queue.add(ObjectKey::of(&job.metadata));
        }
        for list in self.list_jobs.state() {
            self.list_queue.add(ObjectKey::of(&list.metadata));
        }
        for cron in self.cron_jobs.state() {
            self.cron_queue.add(ObjectKey::of(&cron.metadata));
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

    /// Whether `excluded` names the node (by its Node's labels, or a lone NodeImage's),
    /// without copying the labels: it runs for every target on every pass.
    fn is_excluded(&self, name: &str, excluded: &ExcludedNodes) -> bool {
        if excluded.is_empty() {
            return false;
        }
        match self.node(name) {
            Some(node) => excluded.excludes(node.metadata.labels.as_ref()),
            None => self
                .node_image(name)
                .is_some_and(|n| excluded.excludes(n.metadata.labels.as_ref())),
        }
    }

    /// The NodeImages a job targets (none of `excluded`), sorted by name, with their readiness.
    pub fn targets(
        &self,
        job: &ImagePullJob,
        excluded: &ExcludedNodes,
    ) -> Vec<(Arc<CachedNodeImage>, Option<Timestamp>)> {
        let namespace = job.namespace().unwrap_or_default();
        let node_images: Vec<Arc<CachedNodeImage>> = match selection(&job.spec) {
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
        let node_images: Vec<Arc<CachedNodeImage>> = node_images
            .into_iter()
            .filter(|n| !self.is_excluded(n.metadata.name.as_deref().unwrap_or_default(), excluded))
            .collect();
        let index = self.index();
        let mut targets: Vec<(Arc<CachedNodeImage>, Option<Timestamp>)> = node_images
            .into_iter()
            .map(|n| {
                let not_ready_since = index.not_ready_since(n.metadata.name.as_deref().unwrap_or_default());
                (n, not_ready_since)
            })
            .collect();
        drop(index);
        targets.sort_by(|a, b| a.0.metadata.name.cmp(&b.0.metadata.name));
        targets
    }

    /// What `job` selects that has no NodeImage: named nodes that do not
    /// exist, Ready nodes whose NodeImage is not made yet, or no pod at all.
    pub fn unmatched(&self, job: &ImagePullJob, excluded: &ExcludedNodes) -> Unmatched {
        let awaited = |name: &str| {
            self.node_image(name).is_none()
                && !self.is_excluded(name, excluded)
                && self.node(name).is_some_and(|n| {
                    n.metadata.deletion_timestamp.is_none()
                        && ready_since(&n).is_some()
                        && !is_virtual_kubelet(n.metadata.labels.as_ref())
                })
        };
        let mut unmatched = Unmatched::default();
        match selection(&job.spec) {
            Selection::All => {
                unmatched.awaited_nodes = self
                    .nodes
                    .state()
                    .iter()
                    .filter_map(|n| n.metadata.name.as_deref().filter(|n| awaited(n)).map(str::to_owned))
                    .collect();
            }
            Selection::Names(names) => {
                let unique: BTreeSet<&String> = names.iter().collect();
                for name in unique {
                    if awaited(name) {
                        unmatched.awaited_nodes.push(name.clone());
                    } else if self.node(name).is_none() && self.node_image(name).is_none() {
                        unmatched.missing_nodes.push(name.clone());
                    }
                }
            }
            Selection::Labels(selector) => {
                unmatched.awaited_nodes = self
                    .nodes
                    .state()
                    .iter()
                    .filter(|n| selector.matches(n.metadata.labels.as_ref()))
                    .filter_map(|n| n.metadata.name.as_deref().filter(|n| awaited(n)).map(str::to_owned))
                    .collect();
            }
            Selection::Pods(selector) => {
                let namespace = job.namespace().unwrap_or_default();
                let pods = self.index().pods_in_namespace(&namespace);
                let nodes: BTreeSet<String> = pods
                    .iter()
                    .filter_map(|p| self.pods.get(&ObjectRef::new(p).within(&namespace)))
                    .filter(|p| selector.matches(p.metadata.labels.as_ref()))
                    .filter_map(|p| active_pod_node(&p).map(str::to_owned))
                    .collect();
                if nodes.is_empty() {
                    unmatched.no_pods_in = Some(namespace);
                }
                unmatched.awaited_nodes = nodes.into_iter().filter(|n| awaited(n)).collect();
            }
        }
        unmatched
    }

    /// Active jobs that target the node now (labels and pods checked).
    pub fn jobs_for_node(&self, node: &str) -> BTreeSet<ObjectKey> {
        self.jobs_for_node_labelled(node, self.node_labels(node).as_ref())
    }

    /// Active jobs that target the node were it labelled `labels`: with the
    /// labels a change replaced, the jobs that lose the node.
    pub fn jobs_for_node_labelled(&self, node: &str, labels: Option<&BTreeMap<String, String>>) -> BTreeSet<ObjectKey> {
        let candidates = self.index().candidate_jobs(node);
        let mut jobs = candidates.certain;
        for key in candidates.by_labels {
            if let Some(job) = self.job(&key)
                && let Selection::Labels(selector) = selection(&job.spec)
                && selector.matches(labels)
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

/// Since when the Node has not been Ready (its Ready condition's last
/// transition, or its creation when it has reported none); `None` when Ready.
pub fn not_ready_since(node: &Node) -> Option<Timestamp> {
    if ready_since(node).is_some() {
        return None;
    }
    let transition = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref());
    Some(
        transition
            .or(node.metadata.creation_timestamp.as_ref())
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
    )
}

/// A resourceVersion as a number to order writes by, where it is one:
/// resourceVersions are opaque (kube-apiserver's are etcd revisions), and
/// where they are not numbers nothing is awaited.
pub fn revision(resource_version: Option<&str>) -> Option<u64> {
    resource_version?.parse().ok()
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

    /// After a write that returned `resource_version`.
    pub fn expect(&self, key: String, resource_version: Option<&str>) {
        if let Some(version) = revision(resource_version) {
            self.lock().insert(key, version);
        }
    }

    /// Whether the cached copy (at `cached`) already shows our last write.
    pub fn satisfied(&self, key: &str, cached: Option<&str>) -> bool {
        let mut pending = self.lock();
        let Some(expected) = pending.get(key).copied() else {
            return true;
        };
        let reached = revision(cached).is_none_or(|c| c >= expected);
        if reached {
            pending.remove(key);
        }
        reached
    }

    /// Forgets `key` (its object is gone).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        if let Some(version) = revision(resource_version) {
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

    /// Forgets the writes of `job` (it is gone).
    pub fn forget(&self, job: &str) {
        self.lock().remove(job);
    }

    /// Jobs with writes the cache has not shown.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A NodeImage target for the planner, borrowed from the cache.
pub fn as_targets(targets: &[(Arc<CachedNodeImage>, Option<Timestamp>)]) -> Vec<Target<'_>> {
    targets
        .iter()
        .map(|(node_image, not_ready_since)| Target {
            node_image,
            not_ready_since: *not_ready_since,
        })
        .collect()
}
