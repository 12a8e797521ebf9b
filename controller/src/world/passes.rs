//! What each job's last pass knew of its targets, and what changed since: the
//! nodes whose NodeImage changed in a way that concerns the job (marked by the
//! watch for the owners of changed tags, so a job hears only of its own), and
//! whether the set of targets may have changed (epochs moved by Node,
//! NodeImage and Pod membership changes). A pass whose basis still holds looks
//! only at the nodes marked for it; any other pass looks at every target.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use prewarm_api::v1beta1::{ImagePullJob, ReferenceObject};

use crate::index::ObjectKey;
use crate::plan::image_pull_job::Unmatched;
use crate::plan::job_nodes::JobNodes;
use crate::plan::selection::{Selection, selection};

/// Where the world stands, read at the start of a pass, before the caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub node_epoch: u64,
    pub pod_epoch: u64,
}

/// What a pass's knowledge stays valid under: the same job, spec, targets and
/// secret references.
#[derive(Clone, Debug, PartialEq)]
pub struct Basis {
    uid: Option<String>,
    generation: Option<i64>,
    node_epoch: u64,
    /// Only for jobs that select nodes by pods.
    pod_epoch: u64,
    secrets: Vec<ReferenceObject>,
}

impl Basis {
    pub fn new(job: &ImagePullJob, at: Position, secrets: &[ReferenceObject]) -> Self {
        let by_pods = matches!(selection(&job.spec), Selection::Pods(_));
        Self {
            uid: job.metadata.uid.clone(),
            generation: job.metadata.generation,
            node_epoch: at.node_epoch,
            pod_epoch: if by_pods { at.pod_epoch } else { 0 },
            secrets: secrets.to_vec(),
        }
    }

    fn holds_for(&self, job: &ImagePullJob, at: Position) -> bool {
        let by_pods = matches!(selection(&job.spec), Selection::Pods(_));
        self.uid == job.metadata.uid
            && self.generation == job.metadata.generation
            && self.node_epoch == at.node_epoch
            && (!by_pods || self.pod_epoch == at.pod_epoch)
    }
}

/// A pass's knowledge, handed to the next pass of the same job.
#[derive(Debug)]
pub struct Memo {
    pub basis: Basis,
    pub nodes: JobNodes,
    pub unmatched: Unmatched,
    /// When a pass of this job last wrote its status.
    pub status_written: Option<tokio::time::Instant>,
}

#[derive(Debug, Default)]
pub struct Passes {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    node_epoch: u64,
    pod_epoch: u64,
    jobs: HashMap<ObjectKey, Slot>,
}

/// One job: the basis of its last pass, its memo unless a pass holds it, and
/// the nodes marked since that pass read them.
#[derive(Debug)]
struct Slot {
    basis: Basis,
    memo: Option<Memo>,
    dirty: HashSet<String>,
}

impl Passes {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// `node`'s NodeImage changed in a way that concerns `job` (after the
    /// cache shows it). Only jobs with a memo need to hear it: any other's
    /// next pass looks at every target.
    pub fn mark(&self, job: &ObjectKey, node: &str) {
        if let Some(slot) = self.lock().jobs.get_mut(job) {
            slot.dirty.insert(node.to_owned());
        }
    }

    /// Nodes or NodeImages came, went, were relabelled or changed readiness.
    pub fn nodes_moved(&self) {
        self.lock().node_epoch += 1;
    }

    /// A pod that a pod-selecting job matches came, went or moved.
    pub fn pods_moved(&self) {
        self.lock().pod_epoch += 1;
    }

    pub fn position(&self) -> Position {
        self.lock().position()
    }

    /// Starts a pass of `key`, before it reads the caches: the last pass's
    /// memo, if its basis still holds, with the targets to look at now;
    /// `None`: look at every target. Either way the marks so far are taken.
    pub fn take(&self, key: &ObjectKey, basis: &Basis) -> Option<(Memo, BTreeSet<String>)> {
        let mut state = self.lock();
        // From here on the job hears of changes, also during a first pass:
        // what it writes and what agents answer meanwhile must not be lost.
        let slot = state.jobs.entry(key.clone()).or_insert_with(|| Slot {
            basis: basis.clone(),
            memo: None,
            dirty: HashSet::new(),
        });
        let dirty = std::mem::take(&mut slot.dirty);
        let memo = slot.memo.take().filter(|memo| memo.basis == *basis)?;
        let to_look_at = memo.nodes.to_look_at(dirty.iter().map(String::as_str));
        Some((memo, to_look_at))
    }

    /// Keeps a pass's knowledge for the next pass (with what was marked meanwhile).
    pub fn keep(&self, key: ObjectKey, memo: Memo) {
        let mut state = self.lock();
        let dirty = state.jobs.remove(&key).map(|slot| slot.dirty).unwrap_or_default();
        let slot = Slot {
            basis: memo.basis.clone(),
            memo: Some(memo),
            dirty,
        };
        state.jobs.insert(key, slot);
    }

    pub fn forget(&self, key: &ObjectKey) {
        self.lock().jobs.remove(key);
    }

    /// Whether the next pass of `job` may look only at what changed.
    pub fn is_current(&self, key: &ObjectKey, job: &ImagePullJob) -> bool {
        let state = self.lock();
        let at = state.position();
        state.jobs.get(key).is_some_and(|slot| slot.basis.holds_for(job, at))
    }

    /// Jobs remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn position(&self) -> Position {
        Position {
            node_epoch: self.node_epoch,
            pod_epoch: self.pod_epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::job_nodes::NodeState;

    fn job(generation: i64) -> ImagePullJob {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j", "namespace": "default", "uid": "u", "generation": generation},
            "spec": {"image": "nginx"}}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn memo(passes: &Passes, job: &ImagePullJob, nodes: &[&str]) -> Memo {
        let mut known = JobNodes::default();
        for node in nodes {
            known.set(node, NodeState::Active, None);
        }
        Memo {
            basis: Basis::new(job, passes.position(), &[]),
            nodes: known,
            unmatched: Unmatched::default(),
            status_written: None,
        }
    }

    #[test]
    #[allow(clippy::panic)]
    fn a_memo_serves_while_its_basis_holds_with_the_nodes_marked_for_it() {
        let passes = Passes::default();
        let key = ObjectKey::new("default", "j");
        let other = ObjectKey::new("default", "other");
        let job1 = job(1);
        passes.mark(&key, "a");
        assert!(passes.is_empty(), "a job no pass has started hears nothing");
        passes.keep(key.clone(), memo(&passes, &job1, &["a", "b"]));
        passes.mark(&key, "b");
        passes.mark(&key, "not-a-target");
        passes.mark(&other, "a");
        let basis = Basis::new(&job1, passes.position(), &[]);
        let (taken, look) = passes.take(&key, &basis).unwrap_or_else(|| panic!("memo"));
        assert_eq!(
            look,
            BTreeSet::from(["b".to_owned()]),
            "marked since the memo, and targets only"
        );
        assert!(passes.take(&key, &basis).is_none(), "a pass holds it");
        assert!(passes.is_current(&key, &job1), "held, still current");
        passes.mark(&key, "a");
        passes.keep(key.clone(), taken);
        let (taken, look) = passes.take(&key, &basis).unwrap_or_else(|| panic!("memo"));
        assert_eq!(look, BTreeSet::from(["a".to_owned()]), "marked during the pass");
        passes.keep(key.clone(), taken);
        assert_eq!(passes.len(), 1);

        // A new spec, a membership change, other secrets: every target again.
        assert!(!passes.is_current(&key, &job(2)));
        let secrets = [ReferenceObject {
            namespace: Some("default".into()),
            name: Some("s".into()),
            ..Default::default()
        }];
        assert!(
            passes
                .take(&key, &Basis::new(&job1, passes.position(), &secrets))
                .is_none()
        );
        passes.keep(key.clone(), memo(&passes, &job1, &["a"]));
        passes.nodes_moved();
        assert!(!passes.is_current(&key, &job1));
        assert!(passes.take(&key, &Basis::new(&job1, passes.position(), &[])).is_none());
        passes.forget(&key);
        assert!(passes.is_empty());

        // A first pass (no memo yet) hears what happens while it runs.
        let basis = Basis::new(&job1, passes.position(), &[]);
        assert!(passes.take(&key, &basis).is_none());
        passes.mark(&key, "a");
        passes.keep(key.clone(), memo(&passes, &job1, &["a"]));
        let (_, look) = passes.take(&key, &basis).unwrap_or_else(|| panic!("memo"));
        assert_eq!(look, BTreeSet::from(["a".to_owned()]));
    }
}
