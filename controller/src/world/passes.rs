//! What each job's last pass knew of its targets, and what changed since: the
//! NodeImages changed (a bounded log of names), and whether the set of targets
//! may have changed (epochs moved by Node, NodeImage and Pod membership
//! changes). A pass whose basis still holds looks only at the NodeImages the
//! log names; any other pass looks at every target.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use prewarm_api::v1beta1::{ImagePullJob, ReferenceObject};

use crate::index::ObjectKey;
use crate::plan::image_pull_job::Unmatched;
use crate::plan::job_nodes::JobNodes;
use crate::plan::selection::{Selection, selection};

/// NodeImage changes remembered; a pass that fell further behind looks at
/// every target (about 2 MB of names at most).
const LOG_CAPACITY: usize = 1 << 16;

/// Where the world stands, read at the start of a pass, before the caches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Changes logged so far.
    pub seq: u64,
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
    /// The log position the pass read the caches at.
    pub seq: u64,
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
    /// The sequence number of `log`'s first name.
    log_start: u64,
    log: VecDeque<String>,
    node_epoch: u64,
    pod_epoch: u64,
    /// Per job: the basis of its last pass, and its memo unless a pass holds it.
    jobs: HashMap<ObjectKey, (Basis, Option<Memo>)>,
}

impl Passes {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A NodeImage changed (after the cache shows it).
    pub fn node_image_changed(&self, name: &str) {
        let mut state = self.lock();
        state.log.push_back(name.to_owned());
        if state.log.len() > LOG_CAPACITY {
            state.log.pop_front();
            state.log_start += 1;
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
        let state = self.lock();
        Position {
            seq: state.log_start + state.log.len() as u64,
            node_epoch: state.node_epoch,
            pod_epoch: state.pod_epoch,
        }
    }

    /// The last pass's memo, if its basis still holds, with the targets to look
    /// at now; `None`: look at every target.
    pub fn take(&self, key: &ObjectKey, basis: &Basis) -> Option<(Memo, BTreeSet<String>)> {
        let mut state = self.lock();
        let memo = state.jobs.get_mut(key)?.1.take()?;
        if memo.basis != *basis {
            return None;
        }
        let skip = usize::try_from(memo.seq.checked_sub(state.log_start)?).ok()?;
        let changed = state.log.iter().skip(skip).map(String::as_str);
        let to_look_at = memo.nodes.to_look_at(changed);
        Some((memo, to_look_at))
    }

    /// Keeps a pass's knowledge for the next pass.
    pub fn keep(&self, key: ObjectKey, memo: Memo) {
        self.lock().jobs.insert(key, (memo.basis.clone(), Some(memo)));
    }

    pub fn forget(&self, key: &ObjectKey) {
        self.lock().jobs.remove(key);
    }

    /// Whether the next pass of `job` may look only at what changed.
    pub fn is_current(&self, key: &ObjectKey, job: &ImagePullJob) -> bool {
        let at = self.position();
        self.lock()
            .jobs
            .get(key)
            .is_some_and(|(basis, _)| basis.holds_for(job, at))
    }

    /// Jobs remembered.
    pub fn len(&self) -> usize {
        self.lock().jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let at = passes.position();
        let mut known = JobNodes::default();
        for node in nodes {
            known.set(node, NodeState::Active, None);
        }
        Memo {
            basis: Basis::new(job, at, &[]),
            seq: at.seq,
            nodes: known,
            unmatched: Unmatched::default(),
            status_written: None,
        }
    }

    #[test]
    #[allow(clippy::panic)]
    fn a_memo_serves_while_its_basis_holds_and_the_log_covers_it() {
        let passes = Passes::default();
        let key = ObjectKey::new("default", "j");
        let job1 = job(1);
        passes.keep(key.clone(), memo(&passes, &job1, &["a", "b"]));
        passes.node_image_changed("a");
        passes.node_image_changed("other");
        let basis = Basis::new(&job1, passes.position(), &[]);
        let (taken, look) = passes.take(&key, &basis).unwrap_or_else(|| panic!("memo"));
        assert_eq!(look, BTreeSet::from(["a".to_owned()]));
        assert!(passes.take(&key, &basis).is_none(), "a pass holds it");
        assert!(passes.is_current(&key, &job1), "held, still current");
        passes.keep(key.clone(), taken);

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

        // A log that dropped what the memo had not seen: every target again.
        passes.keep(key.clone(), memo(&passes, &job1, &["a"]));
        for _ in 0..=LOG_CAPACITY {
            passes.node_image_changed("x");
        }
        assert!(passes.take(&key, &Basis::new(&job1, passes.position(), &[])).is_none());
        passes.forget(&key);
        assert!(passes.is_empty());
    }
}
