//! What a job's passes know of its targets: how each one stands for the job,
//! kept from one pass to the next with the counts and the name-ordered sets the
//! plan reads, so that a pass looks only at the targets whose NodeImage changed
//! since the last one (and at nodes not Ready, whose standing moves with time)
//! instead of at every target. A job over N nodes makes N / parallelism passes;
//! looking at every target on each made it N².

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::jiff::Timestamp;
use prewarm_api::node_image::{ImageTagSpec, MAX_IMAGES};

use super::image_pull_job::Target;

/// How one target stands for a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Our tag is there and not finished at its version.
    Active,
    Succeeded,
    Failed,
    /// Our tag is not there yet (absent, or owned only by others).
    NotSynced,
    /// Not there yet, and the node is not Ready.
    WaitingReady,
    /// Not there yet, and the NodeImage has no room for another image.
    Full,
    /// Unfinished, on a node NotReady for the no-response window or longer:
    /// counted as failed, so a job without a deadline still completes.
    LostNotReady,
}

impl NodeState {
    pub fn failed(self) -> bool {
        matches!(self, Self::Failed | Self::Full | Self::LostNotReady)
    }

    fn slot(self) -> usize {
        self as usize
    }
}

const STATES: usize = NodeState::LostNotReady as usize + 1;

/// Every target of a job by name, with its state, and what a pass asks of them
/// without walking them all.
#[derive(Clone, Debug, Default)]
pub struct JobNodes {
    states: BTreeMap<String, NodeState>,
    counts: [usize; STATES],
    /// The targets the job may still write its tag to, in name order.
    not_synced: BTreeSet<String>,
    /// Failed in any way, in name order (the status's `failedNodes`).
    failed: BTreeSet<String>,
    /// Targets not Ready, and since when.
    not_ready: BTreeMap<String, Timestamp>,
}

impl JobNodes {
    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    pub fn count(&self, state: NodeState) -> usize {
        self.counts[state.slot()]
    }

    pub fn state(&self, name: &str) -> Option<NodeState> {
        self.states.get(name).copied()
    }

    /// Records how `name` stands (and since when it is not Ready).
    pub fn set(&mut self, name: &str, state: NodeState, not_ready_since: Option<Timestamp>) {
        match self.states.get_mut(name) {
            Some(old) => {
                let was = std::mem::replace(old, state);
                self.counts[was.slot()] -= 1;
                if was == NodeState::NotSynced {
                    self.not_synced.remove(name);
                }
                if was.failed() {
                    self.failed.remove(name);
                }
            }
            None => {
                self.states.insert(name.to_owned(), state);
            }
        }
        self.counts[state.slot()] += 1;
        if state == NodeState::NotSynced {
            self.not_synced.insert(name.to_owned());
        }
        if state.failed() {
            self.failed.insert(name.to_owned());
        }
        match not_ready_since {
            Some(since) => {
                self.not_ready.insert(name.to_owned(), since);
            }
            None => {
                self.not_ready.remove(name);
            }
        }
    }

    /// The first target the job may write its tag to after `after` by name.
    pub fn not_synced_after(&self, after: Option<&str>) -> Option<&str> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, |a| Excluded(a.to_owned()));
        self.not_synced.range((from, Unbounded)).next().map(String::as_str)
    }

    pub fn failed(&self) -> impl Iterator<Item = &str> {
        self.failed.iter().map(String::as_str)
    }

    /// Every target with its state, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, NodeState)> {
        self.states.iter().map(|(name, state)| (name.as_str(), *state))
    }

    /// The targets not Ready, with since when.
    pub fn not_ready(&self) -> impl Iterator<Item = (&str, Timestamp)> {
        self.not_ready.iter().map(|(name, since)| (name.as_str(), *since))
    }

    pub fn not_ready_since(&self, name: &str) -> Option<Timestamp> {
        self.not_ready.get(name).copied()
    }

    /// What the next pass must look at, given the NodeImages that changed since
    /// this one: those of them that are targets, and the targets not Ready.
    pub fn to_look_at<'a>(&self, changed: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        changed
            .into_iter()
            .filter(|name| self.states.contains_key(*name))
            .map(str::to_owned)
            .chain(self.not_ready.keys().cloned())
            .collect()
    }
}

/// How `target` stands for the job `uid` pulling `image:tag`, the no-response
/// window aside.
pub fn node_state(target: &Target<'_>, image: &str, tag: &str, uid: &str) -> NodeState {
    let images = target.node_image.spec.images.as_ref();
    let entry = images.and_then(|i| i.get(image));
    let spec_tag = entry.and_then(|e| e.tags.iter().find(|t| t.tag == tag));
    let Some(spec_tag) = spec_tag.filter(|t| owned_by(t, uid)) else {
        return if target.not_ready_since.is_some() {
            NodeState::WaitingReady
        } else if entry.is_none() && images.is_some_and(|i| i.len() >= MAX_IMAGES) {
            NodeState::Full
        } else {
            NodeState::NotSynced
        };
    };
    let status_tag = target
        .node_image
        .status
        .as_ref()
        .and_then(|s| s.image_statuses.as_ref())
        .and_then(|s| s.get(image))
        .and_then(|s| s.tags.iter().find(|t| t.tag == tag));
    match status_tag {
        Some(s) if s.version.unwrap_or(0) == spec_tag.version.unwrap_or(0) => match s.phase.as_str() {
            "Succeeded" => NodeState::Succeeded,
            "Failed" => NodeState::Failed,
            _ => NodeState::Active,
        },
        _ => NodeState::Active,
    }
}

fn owned_by(tag: &ImageTagSpec, uid: &str) -> bool {
    tag.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid.as_deref() == Some(uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_sets_follow_every_change() {
        let mut nodes = JobNodes::default();
        nodes.set("b", NodeState::NotSynced, None);
        nodes.set("a", NodeState::NotSynced, None);
        nodes.set("c", NodeState::Full, None);
        assert_eq!(nodes.not_synced_after(None), Some("a"));
        assert_eq!(nodes.not_synced_after(Some("a")), Some("b"));
        nodes.set("a", NodeState::Active, None);
        nodes.set("b", NodeState::LostNotReady, "2026-01-01T00:00:00Z".parse().ok());
        assert_eq!(nodes.not_synced_after(None), None);
        assert_eq!(nodes.failed().collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(
            (
                nodes.count(NodeState::Active),
                nodes.count(NodeState::NotSynced),
                nodes.len()
            ),
            (1, 0, 3)
        );
        assert_eq!(
            nodes.to_look_at(["a", "x"]),
            BTreeSet::from(["a".to_owned(), "b".to_owned()])
        );
        nodes.set("b", NodeState::Succeeded, None);
        assert_eq!(nodes.failed().collect::<Vec<_>>(), ["c"]);
        assert_eq!(nodes.not_ready().count(), 0);
    }
}
