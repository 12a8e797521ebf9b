//! ImagePullJob decisions: from the job, its target nodes' NodeImages and the
//! time, the NodeImage entries to write, the status, the events and when to
//! look again. OpenKruise's semantics (reference §2.4–2.6) with its known
//! flaws fixed: nodes written in this pass count as active at once, failed
//! nodes are sorted and counted once, NotReady nodes wait instead of being
//! written, and a full NodeImage fails its node with a message.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use prewarm_api::job::ImagePullJobStatus;
use prewarm_api::node_image::ImageTagPullPolicy;
use prewarm_api::reference::ImageReference;
use prewarm_api::v1beta1::{ImagePullJob, ReferenceObject};

pub use super::entry_writes::EntryWrite;
use super::entry_writes::sync;
use super::job_nodes::{JobNodes, NodeState, node_state};
use super::selection::{Selection, selection};
use super::tag_policy::is_never;
pub use super::unmatched::Unmatched;
use super::unmatched::missing_nodes;
use crate::cached_node_image::CachedNodeImage;

/// The finalizer that keeps a job until its secret copies are released.
pub const FINALIZER: &str = "apps.kruise.io/deletion-protection";
pub const MESSAGE_COMPLETED: &str = "job has completed";
pub const MESSAGE_DEADLINE: &str = "job exceeds activeDeadlineSeconds";
pub const MESSAGE_NO_PROGRESS: &str = "job is running, no progress";
/// Nodes listed by name in one event at most; beyond, the event gives a count.
const NODES_PER_EVENT: usize = 10;

/// Where a job is in its life.
#[derive(Clone, Debug, PartialEq)]
pub enum Lifecycle {
    /// Being deleted: release its secret copies, then drop the finalizer.
    Deleting,
    /// Completed: release its secret copies and drop the finalizer; delete
    /// the job once `ttlSecondsAfterFinished` has passed.
    Finished {
        delete_now: bool,
        requeue_after: Option<i64>,
    },
    Running,
}

pub fn lifecycle(job: &ImagePullJob, now: Timestamp) -> Lifecycle {
    if job.metadata.deletion_timestamp.is_some() {
        return Lifecycle::Deleting;
    }
    let Some(completed) = job.status.as_ref().and_then(|s| s.completion_time.as_ref()) else {
        return Lifecycle::Running;
    };
    let ttl = job
        .spec
        .completion_policy
        .as_ref()
        .and_then(|c| c.ttl_seconds_after_finished);
    let (delete_now, requeue_after) = after_ttl(completed, ttl, now);
    Lifecycle::Finished {
        delete_now,
        requeue_after,
    }
}

/// Whether a job completed at `completed` with `ttlSecondsAfterFinished` is
/// due for deletion, and if not, in how many seconds it will be.
pub fn after_ttl(completed: &Time, ttl: Option<i32>, now: Timestamp) -> (bool, Option<i64>) {
    match ttl {
        None => (false, None),
        Some(ttl) => {
            let left = i64::from(ttl).saturating_sub(seconds_between(completed.0, now));
            (left <= 0, (left > 0).then_some(left))
        }
    }
}

/// A node the job targets.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub node_image: &'a CachedNodeImage,
    /// Since when the Node's Ready condition has not been True; `None` while it
    /// is. A NodeImage with no Node (made by hand) counts as ready, as in OpenKruise.
    pub not_ready_since: Option<Timestamp>,
}

impl Target<'_> {
    pub fn name(&self) -> &str {
        self.node_image.metadata.name.as_deref().unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Input<'a> {
    pub job: &'a ImagePullJob,
    /// Sorted by name, without duplicates.
    pub targets: &'a [Target<'a>],
    /// The secrets every target's image entry must list.
    pub secrets: &'a [ReferenceObject],
    /// The pull policy for tags this job creates (`tag_policy::tag_pull_policy`).
    pub tag_policy: &'a ImageTagPullPolicy,
    /// A node NotReady this long, with the job's tag unfinished there, counts
    /// as failed (the NodeImage lifecycle's no-response window).
    pub no_response_seconds: i64,
    /// What the selection names that is not among the targets.
    pub unmatched: &'a Unmatched,
    pub now: Timestamp,
}

/// What users should hear about, as events on the job.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    Started {
        desired: usize,
    },
    NodesFailed {
        nodes: Vec<String>,
    },
    NodeImageFull {
        node: String,
    },
    /// Nodes counted as failed after `seconds` NotReady.
    NodesNotReady {
        nodes: Vec<String>,
        seconds: i64,
    },
    /// The job targets fewer nodes than it names (`nothing`: none at all), and why.
    Unmatched {
        nothing: bool,
        message: String,
    },
    Completed {
        succeeded: i32,
        failed: i32,
    },
    DeadlineExceeded {
        failed: i32,
    },
    InvalidImage {
        message: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: ImagePullJobStatus,
    pub writes: Vec<EntryWrite>,
    pub notices: Vec<Notice>,
    /// Seconds after which to look again even without news (the deadline).
    pub requeue_after: Option<i64>,
}

/// Which targets a pass looks at.
#[derive(Clone, Copy)]
pub enum Looked<'a> {
    /// `Input::targets` are every target, and the pass starts from nothing.
    Everything,
    /// `Input::targets` are the targets whose NodeImage changed since the pass
    /// that left the `JobNodes` (and those not Ready); the others are as it
    /// left them, and `find` reads the NodeImage of any target.
    Changed {
        find: &'a dyn Fn(&str) -> Option<Arc<CachedNodeImage>>,
    },
}

impl std::fmt::Debug for Looked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Everything => "Everything",
            Self::Changed { .. } => "Changed",
        })
    }
}

/// One pass over every target.
pub fn plan(input: &Input<'_>) -> Plan {
    pass(input, &mut JobNodes::default(), Looked::Everything)
}

/// One pass: `nodes` is what the last pass left (empty with
/// [`Looked::Everything`]), brought up to date with the targets looked at.
pub fn pass(input: &Input<'_>, nodes: &mut JobNodes, looked: Looked<'_>) -> Plan {
    let Input { job, targets, now, .. } = *input;
    let old = job.status.clone().unwrap_or_default();
    let start = old.start_time.clone().unwrap_or(Time(now));
    let mut notices = Vec::new();
    let reference = match ImageReference::parse(&job.spec.image) {
        Ok(reference) => reference,
        Err(e) => {
            for target in targets {
                nodes.set(target.name(), NodeState::NotSynced, target.not_ready_since);
            }
            if old.start_time.is_none() {
                notices.push(Notice::Started { desired: nodes.len() });
            }
            let message = format!("invalid image reference {:?} in spec.image: {e}", job.spec.image);
            if old.message.as_deref() != Some(message.as_str()) {
                notices.push(Notice::InvalidImage {
                    message: message.clone(),
                });
            }
            let status = ImagePullJobStatus {
                start_time: Some(start),
                desired: count(nodes.len()),
                active: Some(0),
                succeeded: Some(0),
                failed: Some(0),
                message: Some(message),
                ..old
            };
            return Plan {
                status,
                writes: Vec::new(),
                notices,
                requeue_after: None,
            };
        }
    };
    let (image, tag) = (reference.familiar_name(), reference.tag_or_digest().to_owned());
    let uid = job.metadata.uid.as_deref().unwrap_or_default();
    for target in targets {
        let lost = target
            .not_ready_since
            .is_some_and(|since| seconds_between(since, now) >= input.no_response_seconds);
        let state = match node_state(target, &image, &tag, uid) {
            NodeState::Active | NodeState::NotSynced | NodeState::WaitingReady if lost => NodeState::LostNotReady,
            other => other,
        };
        nodes.set(target.name(), state, target.not_ready_since);
    }
    if old.start_time.is_none() {
        notices.push(Notice::Started { desired: nodes.len() });
    }
    let desired = nodes.len();
    let finished = nodes.count(NodeState::Succeeded) + nodes.failed().count();
    let never = is_never(&job.spec);
    let deadline = job
        .spec
        .completion_policy
        .as_ref()
        .and_then(|c| c.active_deadline_seconds)
        .filter(|_| !never);
    let elapsed = seconds_between(start.0, now);

    if let Some(deadline) = deadline
        && (finished != desired || !input.unmatched.awaited_nodes.is_empty())
        && elapsed >= deadline
    {
        let succeeded = nodes.count(NodeState::Succeeded);
        let failed_nodes: Vec<String> = nodes
            .iter()
            .filter(|(_, s)| *s != NodeState::Succeeded)
            .map(|(name, _)| name.to_owned())
            .collect();
        notices.push(Notice::DeadlineExceeded {
            failed: count(failed_nodes.len()),
        });
        let status = ImagePullJobStatus {
            start_time: Some(start),
            completion_time: Some(Time(now)),
            desired: count(desired),
            active: Some(0),
            succeeded: Some(count(succeeded)),
            failed: Some(count(failed_nodes.len())),
            message: Some(MESSAGE_DEADLINE.to_owned()),
            failed_nodes: Some(failed_nodes),
        };
        return Plan {
            status,
            writes: Vec::new(),
            notices,
            requeue_after: None,
        };
    }

    let writes = sync(input, &image, &tag, nodes, looked);

    let (active, succeeded) = (nodes.count(NodeState::Active), nodes.count(NodeState::Succeeded));
    let failed_nodes: Vec<String> = nodes.failed().map(str::to_owned).collect();
    let failed = failed_nodes.len();
    let waiting_ready = nodes.count(NodeState::WaitingReady);
    let unmatched = input.unmatched;
    let awaited = unmatched.awaited_nodes.len();
    // Nodes about to get their NodeImage are waited for (the deadline bounds it).
    let completed = !never && succeeded + failed == desired && awaited == 0;
    let selection_is_labels = matches!(selection(&job.spec), Selection::Labels(_));
    let message = if completed && desired == 0 {
        format!(
            "{MESSAGE_COMPLETED}, no node targeted: {}",
            unmatched.why_nothing(selection_is_labels)
        )
    } else if completed {
        MESSAGE_COMPLETED.to_owned()
    } else if desired == 0 && awaited == 0 {
        format!("{MESSAGE_NO_PROGRESS}: {}", unmatched.why_nothing(selection_is_labels))
    } else {
        let progress = if desired == 0 {
            0.0
        } else {
            100.0 * (succeeded + failed) as f64 / desired as f64
        };
        let mut message = format!("job is running, progress {progress:.1}%");
        if waiting_ready > 0 {
            let nodes = if waiting_ready == 1 { "node is" } else { "nodes are" };
            message.push_str(&format!(
                ", {waiting_ready} targeted {nodes} not Ready and will pull once Ready"
            ));
        }
        if awaited > 0 {
            let nodes = if awaited == 1 { "node has" } else { "nodes have" };
            message.push_str(&format!(", {awaited} targeted {nodes} no NodeImage yet"));
        }
        if !unmatched.missing_nodes.is_empty() {
            message.push_str(&format!(", {}", missing_nodes(&unmatched.missing_nodes)));
        }
        message
    };
    // Said when the job starts, and again when what is missing changes.
    let nothing = desired == 0 && awaited == 0;
    let unmatched_message = if nothing {
        Some(unmatched.why_nothing(selection_is_labels))
    } else {
        (!unmatched.missing_nodes.is_empty()).then(|| missing_nodes(&unmatched.missing_nodes))
    };
    if let Some(message) = unmatched_message
        && old.message.as_deref().is_none_or(|m| !m.contains(&message))
    {
        notices.push(Notice::Unmatched { nothing, message });
    }
    let old_failed: BTreeSet<&String> = old.failed_nodes.iter().flatten().collect();
    let newly_failed: Vec<String> = failed_nodes
        .iter()
        .filter(|n| !old_failed.contains(n))
        .cloned()
        .collect();
    let newly = |state: NodeState| -> Vec<String> {
        newly_failed
            .iter()
            .filter(|n| nodes.state(n) == Some(state))
            .cloned()
            .collect()
    };
    for node in newly(NodeState::Full) {
        notices.push(Notice::NodeImageFull { node });
    }
    let lost = newly(NodeState::LostNotReady);
    if !lost.is_empty() {
        notices.push(Notice::NodesNotReady {
            nodes: lost,
            seconds: input.no_response_seconds,
        });
    }
    if !newly_failed.is_empty() {
        notices.push(Notice::NodesFailed { nodes: newly_failed });
    }
    if completed {
        notices.push(Notice::Completed {
            succeeded: count(succeeded),
            failed: count(failed),
        });
    }
    // Look again at the deadline, and when a waiting NotReady node's window ends.
    let window_ends = nodes
        .not_ready()
        .filter(|(name, _)| matches!(nodes.state(name), Some(NodeState::Active | NodeState::WaitingReady)))
        .map(|(_, since)| {
            input
                .no_response_seconds
                .saturating_sub(seconds_between(since, now))
                .max(1)
        })
        .min();
    let requeue_after = deadline
        .map(|deadline| deadline.saturating_sub(elapsed).max(1))
        .into_iter()
        .chain(window_ends)
        .min()
        .filter(|_| !completed);
    let status = ImagePullJobStatus {
        start_time: Some(start),
        completion_time: completed.then_some(Time(now)),
        desired: count(desired),
        active: Some(count(active)),
        succeeded: Some(count(succeeded)),
        failed: Some(count(failed)),
        message: Some(message),
        failed_nodes: Some(failed_nodes),
    };
    Plan {
        status,
        writes,
        notices,
        requeue_after,
    }
}

/// Whether `new` differs from `old` only in how far the job has got (its
/// counts and progress message): no start, no completion, no newly failed node.
pub fn only_progress(old: &ImagePullJobStatus, new: &ImagePullJobStatus) -> bool {
    old.start_time.is_some()
        && old.start_time == new.start_time
        && new.completion_time.is_none()
        && old.completion_time.is_none()
        && old.failed_nodes == new.failed_nodes
        && old.desired == new.desired
}

/// A list of node names for an event, shortened past ten names.
pub fn describe_nodes(nodes: &[String]) -> String {
    let shown = nodes
        .iter()
        .take(NODES_PER_EVENT)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    match nodes.len().saturating_sub(NODES_PER_EVENT) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// How NodeImage tags name their owner job (always the storage version).
pub fn owner_reference(job: &ImagePullJob) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{}/v1beta1", prewarm_api::GROUP)),
        kind: Some("ImagePullJob".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        ..Default::default()
    }
}

/// How a job ended, when this status write completes it (`old` had no
/// completion time, `new` has one): `deadline_exceeded`, `failed` (some
/// node failed) or `succeeded`; a closed set, for metrics.
pub fn completion_result(old: Option<&ImagePullJobStatus>, new: &ImagePullJobStatus) -> Option<&'static str> {
    let was_complete = old.is_some_and(|s| s.completion_time.is_some());
    if was_complete || new.completion_time.is_none() {
        return None;
    }
    Some(if new.message.as_deref() == Some(MESSAGE_DEADLINE) {
        "deadline_exceeded"
    } else if new.failed.unwrap_or(0) > 0 {
        "failed"
    } else {
        "succeeded"
    })
}

pub fn seconds_between(earlier: Timestamp, later: Timestamp) -> i64 {
    later.as_second().saturating_sub(earlier.as_second())
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
