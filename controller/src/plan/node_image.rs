//! NodeImage decisions (reference §4): one NodeImage per Ready Node, labels
//! equal to the Node's, tags pruned when their owner jobs are gone or their
//! TTL ran out, and tags the node never answered for failed with a message.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use prewarm_api::node_image::{ImageStatus, ImageTagSpec, ImageTagStatus, NodeImageStatus};
use prewarm_api::v1beta1::{ImageSpec, NodeImageSpec, SECRET_MODE_BATCH};

use super::image_pull_job::seconds_between;
use crate::cached_node_image::CachedNodeImage;
use crate::interned::SharedMap;

/// NodeImages with this label are kept without a Node (tests and hand-made ones).
pub const FAKE_LABEL: &str = "apps.kruise.io/fake-nodeimage";
/// Nodes run by virtual-kubelet pull nothing and get no NodeImage.
pub const VIRTUAL_KUBELET: (&str, &str) = ("type", "virtual-kubelet");
/// How long a node may stay silent about a tag before it is failed.
pub const NO_RESPONSE_SECONDS: i64 = 600;
pub const MESSAGE_NO_RESPONSE: &str = "node has not responded for a long time";
pub const MESSAGE_DEADLINE: &str = "pulling exceeds the activeDeadlineSeconds";
/// Requeues sooner than this are stretched to it, so that a burst of near
/// deadlines costs one pass.
const MIN_REQUEUE_SECONDS: i64 = 3;

/// What the controller knows of the Node of the same name.
#[derive(Clone, Copy, Debug)]
pub struct NodeFacts<'a> {
    pub labels: Option<&'a BTreeMap<String, String>>,
    /// Since when the Ready condition has been True; `None` when not Ready.
    pub ready_since: Option<Timestamp>,
}

/// What the controller knows of an owner job.
#[derive(Clone, Debug, PartialEq)]
pub struct OwnerFacts {
    pub uid: String,
    pub deleting: bool,
    /// An Always job that has not completed: its tags are not expired by TTL
    /// (OpenKruise expires them and pulls again while the job still runs).
    pub running_always: bool,
}

pub struct Input<'a> {
    pub name: &'a str,
    /// `None` when the Node is gone or being deleted.
    pub node: Option<NodeFacts<'a>>,
    pub node_image: Option<&'a CachedNodeImage>,
    /// The job `namespace/name`, if it exists.
    pub owner: &'a dyn Fn(&str, &str) -> Option<OwnerFacts>,
    /// Whether the Secret `namespace/name` exists.
    pub secret_exists: &'a dyn Fn(&str, &str) -> bool,
    /// The namespace a copy `namespace/name` was made from (its source
    /// annotation), when it is a copy the cache knows.
    pub copy_source: &'a dyn Fn(&str, &str) -> Option<String>,
    pub creation_delay_seconds: i64,
    /// How long a tag may go unanswered (or unfinished past its deadline)
    /// before it is failed: [`NO_RESPONSE_SECONDS`] but in tests.
    pub no_response_seconds: i64,
    pub now: Timestamp,
}

impl std::fmt::Debug for Input<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("name", &self.name)
            .field("node", &self.node)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// A tag marked Failed by the controller, for events to its owners and the NodeImage.
#[derive(Clone, Debug, PartialEq)]
pub struct TagFailure {
    pub image: String,
    pub tag: String,
    pub message: &'static str,
    pub owners: Vec<ObjectReference>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    Nothing {
        requeue_after: Option<i64>,
    },
    Create {
        labels: Option<BTreeMap<String, String>>,
    },
    Delete,
    /// New labels and spec; status is looked at on the next pass.
    UpdateSpec {
        labels: Option<BTreeMap<String, String>>,
        spec: NodeImageSpec,
        reasons: Vec<String>,
    },
    UpdateStatus {
        status: NodeImageStatus,
        failures: Vec<TagFailure>,
        requeue_after: Option<i64>,
    },
}

pub fn is_virtual_kubelet(labels: Option<&BTreeMap<String, String>>) -> bool {
    labels.and_then(|l| l.get(VIRTUAL_KUBELET.0)).map(String::as_str) == Some(VIRTUAL_KUBELET.1)
}

pub fn plan(input: &Input<'_>) -> Plan {
    let Some(node_image) = input.node_image else {
        return match input.node {
            Some(node) if !is_virtual_kubelet(node.labels) => match node.ready_since {
                Some(since) => {
                    let left = input
                        .creation_delay_seconds
                        .saturating_sub(seconds_between(since, input.now));
                    if left > 0 {
                        Plan::Nothing {
                            requeue_after: Some(left),
                        }
                    } else {
                        Plan::Create {
                            labels: non_empty(node.labels),
                        }
                    }
                }
                None => Plan::Nothing { requeue_after: None },
            },
            _ => Plan::Nothing { requeue_after: None },
        };
    };
    if node_image.metadata.deletion_timestamp.is_some() {
        return Plan::Nothing { requeue_after: None };
    }
    let fake = node_image.labels().contains_key(FAKE_LABEL);
    if input.node.is_none() && !fake {
        return Plan::Delete;
    }
    let mut reasons = Vec::new();
    let mut labels = non_empty(Some(node_image.labels()));
    if let Some(node) = input.node
        && non_empty(node.labels) != labels
    {
        labels = non_empty(node.labels);
        reasons.push("node labels changed".to_owned());
    }
    let (pruned, mut requeue) = prune_spec(input, node_image, &mut reasons);
    if !reasons.is_empty() {
        let spec = pruned.unwrap_or_else(|| NodeImageSpec {
            images: node_image.spec.images.as_ref().map(SharedMap::to_map),
        });
        return Plan::UpdateSpec { labels, spec, reasons };
    }
    let (status, failures) = fail_silent_tags(input, node_image, &mut requeue);
    let requeue_after = requeue.map(|s| s.max(MIN_REQUEUE_SECONDS));
    match status {
        Some(status) => Plan::UpdateStatus {
            status,
            failures,
            requeue_after,
        },
        None => Plan::Nothing { requeue_after },
    }
}

fn non_empty(labels: Option<&BTreeMap<String, String>>) -> Option<BTreeMap<String, String>> {
    labels.filter(|l| !l.is_empty()).cloned()
}

fn keep_sooner(requeue: &mut Option<i64>, seconds: i64) {
    *requeue = Some(requeue.map_or(seconds, |r| r.min(seconds)));
}

fn status_tag<'a>(node_image: &'a CachedNodeImage, image: &str, tag: &str) -> Option<&'a ImageTagStatus> {
    node_image
        .status
        .as_ref()?
        .image_statuses
        .as_ref()?
        .get(image)?
        .tags
        .iter()
        .find(|t| t.tag == tag)
}

/// What pruning does to one tag.
#[derive(Debug)]
enum TagVerdict {
    Keep,
    Drop,
    /// Kept with fewer owners.
    Owners(Vec<ObjectReference>),
}

/// Drops tags without createdAt, owners that are gone, tags whose owners are
/// all gone, tags past their TTL, legacy secret refs to missing secrets, and
/// images left without tags. Each change is explained in `reasons`; the
/// pruned spec is built only when there is one: a NodeImage is planned on
/// every event, most events prune nothing, and copying every tag for them was
/// most of what the NodeImage lifecycle allocated.
fn prune_spec(
    input: &Input<'_>,
    node_image: &CachedNodeImage,
    reasons: &mut Vec<String>,
) -> (Option<NodeImageSpec>, Option<i64>) {
    let mut requeue = None;
    let before = reasons.len();
    // Decided first, in spec order: a verdict per tag, a keep per pull secret.
    let mut verdicts = Vec::new();
    let mut keeps = Vec::new();
    for (name, image) in node_image.spec.images.iter().flatten() {
        let first = verdicts.len();
        for tag in &image.tags {
            verdicts.push(prune_tag(input, node_image, name, tag, reasons, &mut requeue));
        }
        let kept_owners = || {
            image
                .tags
                .iter()
                .zip(&verdicts[first..])
                .filter_map(|(tag, verdict)| match verdict {
                    TagVerdict::Keep => Some(tag.owner_references.as_ref()),
                    TagVerdict::Owners(owners) => Some(Some(owners)),
                    TagVerdict::Drop => None,
                })
        };
        if kept_owners().next().is_none() {
            reasons.push(format!("no longer has {name} image spec"));
            continue;
        }
        let Some(refs) = image.pull_secrets.as_ref().filter(|refs| !refs.is_empty()) else {
            continue;
        };
        // A job's copies go with its last tag here: the agent uses a copy only
        // for tags of its source's namespace, and none is left.
        let ownerless = kept_owners().any(|o| o.is_none_or(|o| o.is_empty()));
        let owner_namespaces: BTreeSet<&str> = kept_owners()
            .flatten()
            .flat_map(|owners| owners.iter())
            .filter_map(|o| o.namespace.as_deref())
            .collect();
        let (mut missing, mut unused) = (false, Vec::new());
        for r in refs {
            let (ns, secret) = (
                r.namespace.as_deref().unwrap_or_default(),
                r.name.as_deref().unwrap_or_default(),
            );
            let keep = if r.mode.as_deref() == Some(SECRET_MODE_BATCH) {
                let serves_a_tag = ownerless
                    || (input.copy_source)(ns, secret).is_none_or(|source| owner_namespaces.contains(source.as_str()));
                if !serves_a_tag {
                    unused.push(secret);
                }
                serves_a_tag
            } else {
                let exists = (input.secret_exists)(ns, secret);
                missing |= !exists;
                exists
            };
            keeps.push(keep);
        }
        if missing {
            reasons.push(format!("image {name} has pull secrets that no longer exist"));
        }
        if !unused.is_empty() {
            reasons.push(format!(
                "image {name} has pull secrets [{}] of jobs no longer on it",
                unused.join(", ")
            ));
        }
    }
    if reasons.len() == before {
        return (None, requeue);
    }
    let (mut verdicts, mut keeps) = (verdicts.into_iter(), keeps.into_iter());
    let mut images = BTreeMap::new();
    for (name, image) in node_image.spec.images.iter().flatten() {
        let tags: Vec<ImageTagSpec> = image
            .tags
            .iter()
            .zip(verdicts.by_ref())
            .filter_map(|(tag, verdict)| match verdict {
                TagVerdict::Keep => Some(tag.clone()),
                TagVerdict::Owners(owners) => Some(ImageTagSpec {
                    owner_references: Some(owners),
                    ..tag.clone()
                }),
                TagVerdict::Drop => None,
            })
            .collect();
        if tags.is_empty() {
            continue;
        }
        let pull_secrets = image.pull_secrets.as_ref().map(|refs| {
            refs.iter()
                .zip(keeps.by_ref())
                .filter(|(_, keep)| *keep)
                .map(|(r, _)| r.clone())
                .collect()
        });
        images.insert(
            name.clone(),
            ImageSpec {
                pull_secrets,
                tags,
                sandbox_config: image.sandbox_config.clone(),
            },
        );
    }
    let spec = NodeImageSpec {
        images: node_image.spec.images.as_ref().map(|_| images),
    };
    (Some(spec), requeue)
}

fn prune_tag(
    input: &Input<'_>,
    node_image: &CachedNodeImage,
    name: &str,
    tag: &ImageTagSpec,
    reasons: &mut Vec<String>,
    requeue: &mut Option<i64>,
) -> TagVerdict {
    let label = || format!("{name}:{}", tag.tag);
    if tag.created_at.is_none() {
        reasons.push(format!("image {} has no createAt field", label()));
        return TagVerdict::Drop;
    }
    // An owner stays while its job exists under the same uid and is not being
    // deleted; `Some(running Always)` when it stays.
    let stays = |o: &ObjectReference| match job_owner(o) {
        None => Some(false),
        Some((namespace, job)) => (input.owner)(namespace, job)
            .filter(|facts| Some(facts.uid.as_str()) == o.uid.as_deref() && !facts.deleting)
            .map(|facts| facts.running_always),
    };
    let mut running_always = false;
    let mut verdict = TagVerdict::Keep;
    if let Some(owners) = &tag.owner_references {
        let mut kept = 0;
        for owner in owners {
            if let Some(always) = stays(owner) {
                kept += 1;
                running_always |= always;
            }
        }
        if kept == 0 && !owners.is_empty() {
            reasons.push(format!("image {} owners is cleared", label()));
            return TagVerdict::Drop;
        }
        if kept != owners.len() {
            let kept: Vec<ObjectReference> = owners.iter().filter(|o| stays(o).is_some()).cloned().collect();
            reasons.push(format!(
                "image {} owners changed from {} to {}",
                label(),
                owner_names(owners),
                owner_names(&kept)
            ));
            verdict = TagVerdict::Owners(kept);
        }
    }
    let ttl = tag.pull_policy.as_ref().and_then(|p| p.ttl_seconds_after_finished);
    let completed = status_tag(node_image, name, &tag.tag)
        .filter(|s| s.version.unwrap_or(0) == tag.version.unwrap_or(0))
        .and_then(|s| s.completion_time.as_ref());
    if let (Some(ttl), Some(completed), false) = (ttl, completed, running_always) {
        let left = i64::from(ttl).saturating_sub(seconds_between(completed.0, input.now));
        if left <= 0 {
            reasons.push(format!(
                "image {} has exceeded TTL ({ttl})s since {} completed",
                label(),
                completed.0
            ));
            return TagVerdict::Drop;
        }
        keep_sooner(requeue, left);
    }
    verdict
}

/// `(namespace, name)` of an owner reference that names an ImagePullJob (any version).
pub fn job_owner(owner: &ObjectReference) -> Option<(&str, &str)> {
    let group = owner.api_version.as_deref()?.split('/').next()?;
    (group == prewarm_api::GROUP && owner.kind.as_deref() == Some("ImagePullJob"))
        .then(|| Some((owner.namespace.as_deref()?, owner.name.as_deref()?)))
        .flatten()
}

fn owner_names(owners: &[ObjectReference]) -> String {
    let names: Vec<String> = owners
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o.namespace.as_deref().unwrap_or_default(),
                o.name.as_deref().unwrap_or_default()
            )
        })
        .collect();
    format!("[{}]", names.join(", "))
}

/// Fails tags the node has not answered for ten minutes, and tags still
/// unfinished ten minutes past their deadline. Returns the new status when
/// anything changed (pruned to the spec, counters recomputed).
fn fail_silent_tags(
    input: &Input<'_>,
    node_image: &CachedNodeImage,
    requeue: &mut Option<i64>,
) -> (Option<NodeImageStatus>, Vec<TagFailure>) {
    let old = node_image.status.as_ref();
    // Copied only when a tag fails: most passes change nothing.
    let mut changed: Option<BTreeMap<String, ImageStatus>> = None;
    let mut failures = Vec::new();
    for (name, image) in node_image.spec.images.iter().flatten() {
        for tag in &image.tags {
            let Some(created) = &tag.created_at else { continue };
            let age = seconds_between(created.0, input.now);
            let version = tag.version.unwrap_or(0);
            let current = status_tag(node_image, name, &tag.tag);
            let failure = match current {
                Some(s) if s.version.unwrap_or(0) == version => {
                    let deadline = tag.pull_policy.as_ref().and_then(|p| p.active_deadline_seconds);
                    match deadline.filter(|_| s.completion_time.is_none()) {
                        Some(deadline) => {
                            let left = deadline.saturating_add(input.no_response_seconds).saturating_sub(age);
                            if left > 0 {
                                keep_sooner(requeue, left);
                                continue;
                            }
                            MESSAGE_DEADLINE
                        }
                        None => continue,
                    }
                }
                _ => {
                    let left = input.no_response_seconds.saturating_sub(age);
                    if left > 0 {
                        keep_sooner(requeue, left);
                        continue;
                    }
                    MESSAGE_NO_RESPONSE
                }
            };
            let failed = ImageTagStatus {
                tag: tag.tag.clone(),
                phase: "Failed".into(),
                completion_time: Some(Time(input.now)),
                version: Some(version),
                message: Some(failure.to_owned()),
                ..current.cloned().unwrap_or_default()
            };
            let statuses = changed.get_or_insert_with(|| {
                old.and_then(|o| o.image_statuses.as_ref())
                    .map(SharedMap::to_map)
                    .unwrap_or_default()
            });
            let tags = &mut statuses.entry(name.clone()).or_default().tags;
            match tags.iter_mut().find(|t| t.tag == tag.tag) {
                Some(slot) => *slot = failed,
                None => tags.push(failed),
            }
            failures.push(TagFailure {
                image: name.clone(),
                tag: tag.tag.clone(),
                message: failure,
                owners: tag.owner_references.clone().unwrap_or_default(),
            });
        }
    }
    let Some(mut statuses) = changed else {
        return (None, failures);
    };
    let no_images = SharedMap::default();
    let spec_images = node_image.spec.images.as_ref().unwrap_or(&no_images);
    statuses.retain(|name, status| {
        let spec_tags = spec_images.get(name).map(|i| i.tags.as_slice()).unwrap_or_default();
        status.tags.retain(|t| spec_tags.iter().any(|s| s.tag == t.tag));
        !status.tags.is_empty()
    });
    let phases = || statuses.values().flat_map(|s| s.tags.iter()).map(|t| t.phase.as_str());
    let count = |phase: &str| i32::try_from(phases().filter(|p| *p == phase).count()).unwrap_or(i32::MAX);
    let desired = spec_images.values().map(|i| i.tags.len()).sum::<usize>();
    let status = NodeImageStatus {
        desired: i32::try_from(desired).unwrap_or(i32::MAX),
        succeeded: Some(count("Succeeded")),
        failed: Some(count("Failed")),
        pulling: Some(count("Pulling")),
        waiting: old.and_then(|o| o.waiting),
        image_statuses: Some(statuses),
        first_sync_status: old.and_then(|o| o.first_sync_status.clone()),
    };
    (Some(status), failures)
}
