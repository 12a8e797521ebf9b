//! Indexes over the caches, so that an event finds the work it causes without
//! listing every job or every NodeImage: which active jobs may target a node
//! (by selector kind), which NodeImages name a job as owner, which pods run on
//! a node, which jobs use a pull secret, and where the pull-secret copies are.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use prewarm_api::v1beta1::{ImageListPullJob, ImagePullJob};

use crate::cached_node_image::CachedNodeImage;
use crate::plan::selection::{Selection, selection};

/// A namespaced object's key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Self {
        Self::new(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default(),
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How an indexed job picks nodes, remembered to undo its entries.
#[derive(Clone, Debug, PartialEq)]
enum Membership {
    All,
    Names(Vec<String>),
    Labels,
    Pods,
}

#[derive(Debug, Default)]
pub struct Index {
    membership: HashMap<ObjectKey, Membership>,
    all_nodes: BTreeSet<ObjectKey>,
    by_node_name: HashMap<String, BTreeSet<ObjectKey>>,
    by_labels: BTreeSet<ObjectKey>,
    pod_jobs_by_namespace: HashMap<String, BTreeSet<ObjectKey>>,
    job_secrets: HashMap<ObjectKey, Vec<ObjectKey>>,
    jobs_by_secret: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Names of the Secrets that are pull-secret copies, by namespace: a pass
    /// reads these, not every Secret of the cluster.
    secret_copies: HashMap<String, BTreeSet<String>>,
    owners_of_node: HashMap<String, BTreeSet<String>>,
    nodes_by_owner: HashMap<String, BTreeSet<String>>,
    pod_node: HashMap<ObjectKey, String>,
    /// Nodes whose Ready condition is not True, with since when.
    not_ready: HashMap<String, Timestamp>,
    /// ImagePullJobs by the uid of the ImageListPullJob that controls them.
    children: HashMap<String, BTreeSet<ObjectKey>>,
    parent_of: HashMap<ObjectKey, String>,
    /// ImageListPullJobs by the uid of the AdvancedCronJob that controls them.
    cron_children: HashMap<String, BTreeSet<ObjectKey>>,
    cron_parent_of: HashMap<ObjectKey, String>,
    pods_by_node: HashMap<String, BTreeSet<ObjectKey>>,
    pods_by_namespace: HashMap<String, BTreeSet<String>>,
}

/// A job that still writes NodeImages: not completed, not being deleted.
pub fn is_active(job: &ImagePullJob) -> bool {
    job.metadata.deletion_timestamp.is_none() && job.status.as_ref().and_then(|s| s.completion_time.as_ref()).is_none()
}

/// The uid of the ImageListPullJob that controls a job, if one does.
pub fn list_owner_uid(job: &ImagePullJob) -> Option<String> {
    job.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| {
            o.controller == Some(true) && o.kind == "ImageListPullJob" && o.api_version.starts_with(prewarm_api::GROUP)
        })
        .map(|o| o.uid.clone())
}

fn remove_from<K: Eq + std::hash::Hash, V: Ord>(map: &mut HashMap<K, BTreeSet<V>>, key: &K, value: &V) {
    if let Some(set) = map.get_mut(key) {
        set.remove(value);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

impl Index {
    /// Records the job's current state (`None` once deleted).
    pub fn set_job(&mut self, key: &ObjectKey, job: Option<&ImagePullJob>) {
        match self.membership.remove(key) {
            Some(Membership::All) => {
                self.all_nodes.remove(key);
            }
            Some(Membership::Names(names)) => {
                for name in names {
                    remove_from(&mut self.by_node_name, &name, key);
                }
            }
            Some(Membership::Labels) => {
                self.by_labels.remove(key);
            }
            Some(Membership::Pods) => remove_from(&mut self.pod_jobs_by_namespace, &key.namespace, key),
            None => {}
        }
        for secret in self.job_secrets.remove(key).unwrap_or_default() {
            remove_from(&mut self.jobs_by_secret, &secret, key);
        }
        if let Some(parent) = self.parent_of.remove(key) {
            remove_from(&mut self.children, &parent, key);
        }
        if let Some(parent) = job.and_then(list_owner_uid) {
            self.children.entry(parent.clone()).or_default().insert(key.clone());
            self.parent_of.insert(key.clone(), parent);
        }
        let Some(job) = job.filter(|j| is_active(j)) else {
            return;
        };
        let membership = match selection(&job.spec) {
            Selection::All => {
                self.all_nodes.insert(key.clone());
                Membership::All
            }
            Selection::Names(names) => {
                for name in names {
                    self.by_node_name.entry(name.clone()).or_default().insert(key.clone());
                }
                Membership::Names(names.to_vec())
            }
            Selection::Labels(_) => {
                self.by_labels.insert(key.clone());
                Membership::Labels
            }
            Selection::Pods(_) => {
                self.pod_jobs_by_namespace
                    .entry(key.namespace.clone())
                    .or_default()
                    .insert(key.clone());
                Membership::Pods
            }
        };
        self.membership.insert(key.clone(), membership);
        let secrets: Vec<ObjectKey> = job
            .spec
            .pull_secrets
            .iter()
            .flatten()
            .map(|s| ObjectKey::new(&key.namespace, s))
            .collect();
        for secret in &secrets {
            self.jobs_by_secret
                .entry(secret.clone())
                .or_default()
                .insert(key.clone());
        }
        self.job_secrets.insert(key.clone(), secrets);
    }

    /// Records which jobs (by uid) a NodeImage's tags name as owners.
    pub fn set_node_image(&mut self, name: &str, node_image: Option<&CachedNodeImage>) {
        let uids: BTreeSet<&str> = node_image
            .and_then(|n| n.spec.images.as_ref())
            .into_iter()
            .flat_map(|images| images.values())
            .flat_map(|image| image.tags.iter())
            .flat_map(|tag| tag.owner_references.iter().flatten())
            .filter_map(|o| o.uid.as_deref())
            .collect();
        // Most events (an agent's status, another tag) leave the owners as
        // they are: nothing is copied for them.
        let unchanged = match self.owners_of_node.get(name) {
            Some(before) => before.iter().map(String::as_str).eq(uids.iter().copied()),
            None => uids.is_empty(),
        };
        if unchanged {
            return;
        }
        let owners: BTreeSet<String> = uids.into_iter().map(str::to_owned).collect();
        // Only the owners that came or went touch the per-owner sets.
        let before = self.owners_of_node.remove(name).unwrap_or_default();
        for uid in before.difference(&owners) {
            remove_from(&mut self.nodes_by_owner, uid, &name.to_owned());
        }
        for uid in owners.difference(&before) {
            self.nodes_by_owner
                .entry(uid.clone())
                .or_default()
                .insert(name.to_owned());
        }
        if !owners.is_empty() {
            self.owners_of_node.insert(name.to_owned(), owners);
        }
    }

    pub fn set_pod(&mut self, key: &ObjectKey, pod: Option<&Pod>) {
        if let Some(node) = self.pod_node.remove(key) {
            remove_from(&mut self.pods_by_node, &node, key);
        }
        match pod {
            Some(pod) => {
                self.pods_by_namespace
                    .entry(key.namespace.clone())
                    .or_default()
                    .insert(key.name.clone());
                if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                    self.pods_by_node
                        .entry(node.to_owned())
                        .or_default()
                        .insert(key.clone());
                    self.pod_node.insert(key.clone(), node.to_owned());
                }
            }
            None => remove_from(&mut self.pods_by_namespace, &key.namespace, &key.name),
        }
    }

    pub fn set_not_ready(&mut self, node: &str, since: Option<Timestamp>) {
        match since {
            Some(since) => {
                self.not_ready.insert(node.to_owned(), since);
            }
            None => {
                self.not_ready.remove(node);
            }
        }
    }

    /// Since when a Node has not been Ready; `None` when it is Ready (a
    /// NodeImage without a Node counts as ready).
    pub fn not_ready_since(&self, node: &str) -> Option<Timestamp> {
        self.not_ready.get(node).copied()
    }

    /// Files a list job under the cron job that controls it, if any.
    pub fn set_list_job(&mut self, key: &ObjectKey, list: Option<&ImageListPullJob>) {
        if let Some(parent) = self.cron_parent_of.remove(key) {
            remove_from(&mut self.cron_children, &parent, key);
        }
        let owner = list
            .and_then(|l| l.metadata.owner_references.as_ref())
            .and_then(|owners| {
                owners
                    .iter()
                    .find(|o| o.controller == Some(true) && o.kind == "AdvancedCronJob")
            });
        if let Some(owner) = owner {
            self.cron_children
                .entry(owner.uid.clone())
                .or_default()
                .insert(key.clone());
            self.cron_parent_of.insert(key.clone(), owner.uid.clone());
        }
    }

    pub fn cron_children_of(&self, cron_uid: &str) -> Vec<ObjectKey> {
        self.cron_children
            .get(cron_uid)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The ImagePullJobs controlled by the ImageListPullJob with this uid.
    pub fn children_of(&self, list_uid: &str) -> Vec<ObjectKey> {
        self.children.get(list_uid).into_iter().flatten().cloned().collect()
    }

    /// NodeImages whose tags name the job with this uid.
    pub fn nodes_owned_by(&self, uid: &str) -> Vec<String> {
        self.nodes_by_owner.get(uid).into_iter().flatten().cloned().collect()
    }

    pub fn jobs_using_secret(&self, secret: &ObjectKey) -> Vec<ObjectKey> {
        self.jobs_by_secret.get(secret).into_iter().flatten().cloned().collect()
    }

    /// Records whether a Secret is a pull-secret copy (`false` once deleted).
    pub fn set_secret_copy(&mut self, key: &ObjectKey, is_copy: bool) {
        if is_copy {
            self.secret_copies
                .entry(key.namespace.clone())
                .or_default()
                .insert(key.name.clone());
        } else {
            remove_from(&mut self.secret_copies, &key.namespace, &key.name);
        }
    }

    pub fn secret_copies_in(&self, namespace: &str) -> Vec<String> {
        self.secret_copies
            .get(namespace)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    pub fn pods_in_namespace(&self, namespace: &str) -> Vec<String> {
        self.pods_by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Active jobs that may target `node`: every all-nodes job, the jobs that
    /// name it, and the candidates among label and pod selector jobs (the
    /// caller checks those against labels and pods).
    pub fn candidate_jobs(&self, node: &str) -> Candidates {
        let mut certain: BTreeSet<ObjectKey> = self.all_nodes.clone();
        certain.extend(self.by_node_name.get(node).into_iter().flatten().cloned());
        let pods: Vec<ObjectKey> = self.pods_by_node.get(node).into_iter().flatten().cloned().collect();
        let mut pod_jobs = BTreeSet::new();
        for pod in &pods {
            pod_jobs.extend(self.pod_jobs_in(&pod.namespace));
        }
        Candidates {
            certain,
            by_labels: self.by_labels.iter().cloned().collect(),
            pods,
            pod_jobs: pod_jobs.into_iter().collect(),
        }
    }

    pub fn pod_jobs_in(&self, namespace: &str) -> Vec<ObjectKey> {
        self.pod_jobs_by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct Candidates {
    pub certain: BTreeSet<ObjectKey>,
    pub by_labels: Vec<ObjectKey>,
    pub pods: Vec<ObjectKey>,
    pub pod_jobs: Vec<ObjectKey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned_by(uids: &[&str]) -> CachedNodeImage {
        let tags: Vec<serde_json::Value> = uids
            .iter()
            .map(|uid| serde_json::json!({"tag": *uid, "ownerReferences": [{"uid": uid, "name": uid}]}))
            .collect();
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "n"}, "spec": {"images": {"nginx": {"tags": tags}}}}),
        )
        .unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn owners_follow_each_change_of_a_node_image() {
        let mut index = Index::default();
        index.set_node_image("n", Some(&owned_by(&["a", "b"])));
        index.set_node_image("m", Some(&owned_by(&["a"])));
        assert_eq!(index.nodes_owned_by("a"), ["m", "n"]);
        index.set_node_image("n", Some(&owned_by(&["b", "c"])));
        assert_eq!(
            (
                index.nodes_owned_by("a"),
                index.nodes_owned_by("b"),
                index.nodes_owned_by("c")
            ),
            (vec!["m".to_owned()], vec!["n".to_owned()], vec!["n".to_owned()])
        );
        index.set_node_image("n", None);
        assert!(index.nodes_owned_by("b").is_empty() && index.nodes_owned_by("c").is_empty());
        assert_eq!(index.nodes_owned_by("a"), ["m"]);
    }
}
