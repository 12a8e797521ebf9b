//! The NodeImage entries an ImagePullJob pass writes: its tag on the nodes it
//! joins within the parallelism window, and the secret references missing
//! where its tag already is.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::job::Parallelism;
use prewarm_api::node_image::ImageTagSpec;
use prewarm_api::v1beta1::{ImageSpec, ReferenceObject};

use super::image_pull_job::{Input, Looked, Target, owner_reference};
use super::job_nodes::{JobNodes, NodeState, node_state};
use crate::cached_node_image::CachedNodeImage;

/// One NodeImage image entry to store as given, in place of `base`, the entry
/// it was built from (`None`: there was none), which the write must still find:
/// another job's write in between would otherwise be undone.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryWrite {
    pub node: String,
    pub image: String,
    pub entry: ImageSpec,
    pub base: Option<ImageSpec>,
    /// Whether the snapshot's NodeImage had `spec.images` (a new entry is
    /// added into it; without it the whole map is written).
    pub base_has_images: bool,
    /// The NodeImage's resourceVersion in the snapshot the plan read.
    pub base_resource_version: Option<String>,
}

/// Chooses the writes: missing secret refs on any node that has our tag, and
/// new tags on not-synced nodes in name order within the parallelism window.
/// Nodes given a tag become active.
pub(super) fn sync(
    input: &Input<'_>,
    image: &str,
    tag: &str,
    nodes: &mut JobNodes,
    looked: Looked<'_>,
) -> Vec<EntryWrite> {
    let job = input.job;
    let parallelism = job
        .spec
        .parallelism
        .as_ref()
        .and_then(|p| Parallelism::parse(p).ok())
        .unwrap_or(Parallelism::DEFAULT);
    let slots = parallelism
        .nodes(nodes.len())
        .saturating_sub(nodes.count(NodeState::Active));
    let owner = owner_reference(job);
    let entry_write = |node_image: &CachedNodeImage, joins: bool| {
        let current = node_image.spec.images.as_ref().and_then(|i| i.get(image));
        if !joins && !lacks_secrets(current, input.secrets) {
            return None;
        }
        let mut entry = current.cloned().unwrap_or_default();
        add_missing_secrets(&mut entry, input.secrets);
        if joins {
            // Image-level: the latest job to join sets it; a job without one
            // leaves another's in place. Only when joining, so that two jobs
            // never rewrite it back and forth.
            if let Some(sandbox) = &job.spec.sandbox_config {
                entry.sandbox_config = Some(sandbox.clone());
            }
            let status_version = node_image
                .status
                .as_ref()
                .and_then(|s| s.image_statuses.as_ref())
                .and_then(|s| s.get(image))
                .and_then(|s| s.tags.iter().find(|t| t.tag == tag))
                .map(|t| t.version.unwrap_or(0));
            join_tag(&mut entry, tag, &owner, input, status_version);
        }
        (current != Some(&entry)).then(|| EntryWrite {
            node: node_image.metadata.name.clone().unwrap_or_default(),
            image: image.to_owned(),
            entry,
            base: current.cloned(),
            base_has_images: node_image.spec.images.is_some(),
            base_resource_version: node_image.metadata.resource_version.clone(),
        })
    };
    // Secret references missing where our tag is: only the targets looked at,
    // since a change of the job's secrets makes the pass look at every target.
    let mut writes: Vec<EntryWrite> = input
        .targets
        .iter()
        .filter(|t| {
            matches!(
                nodes.state(t.name()),
                Some(NodeState::Active | NodeState::Succeeded | NodeState::Failed)
            )
        })
        .filter_map(|t| entry_write(t.node_image, false))
        .collect();
    // Each candidate is read again before it is written: another job may
    // have filled its NodeImage since this job last looked (that change is
    // not this job's to hear of).
    let uid = job.metadata.uid.as_deref().unwrap_or_default();
    let mut joined = 0;
    let mut after: Option<String> = None;
    while joined < slots {
        let Some(name) = nodes.not_synced_after(after.as_deref()).map(str::to_owned) else {
            break;
        };
        after = Some(name.clone());
        let looked_at = input
            .targets
            .binary_search_by(|t| t.name().cmp(&name))
            .ok()
            .and_then(|i| input.targets.get(i));
        let found;
        let node_image = match (looked_at, looked) {
            (Some(target), _) => target.node_image,
            (None, Looked::Changed { find }) => match find(&name) {
                Some(node_image) => {
                    found = node_image;
                    &*found
                }
                None => continue,
            },
            (None, Looked::Everything) => continue,
        };
        let now = Target {
            node_image,
            not_ready_since: None,
        };
        let state = node_state(&now, image, tag, uid);
        if state != NodeState::NotSynced {
            nodes.set(&name, state, None);
            continue;
        }
        writes.extend(entry_write(node_image, true));
        nodes.set(&name, NodeState::Active, None);
        joined += 1;
    }
    writes.sort_by(|a, b| a.node.cmp(&b.node));
    writes
}

/// Adds the job to a tag: a new tag gets the job's policy and a version past
/// any status left from an earlier tag of that name (so that an old result is
/// not credited); an existing tag gets a new version, so the node pulls again
/// for this job, and keeps the pull policy its first owner gave it.
fn join_tag(entry: &mut ImageSpec, tag: &str, owner: &ObjectReference, input: &Input<'_>, status_version: Option<i64>) {
    let pull_policy = input.job.spec.image_pull_policy.clone();
    let created_at = Some(Time(input.now));
    match entry.tags.iter_mut().find(|t| t.tag == tag) {
        Some(existing) => {
            existing.version = Some(existing.version.unwrap_or(0).saturating_add(1));
            existing.owner_references.get_or_insert_default().push(owner.clone());
            existing.created_at = created_at;
            existing.image_pull_policy = pull_policy;
        }
        None => entry.tags.push(ImageTagSpec {
            tag: tag.to_owned(),
            created_at,
            pull_policy: Some(input.tag_policy.clone()),
            owner_references: Some(vec![owner.clone()]),
            version: Some(status_version.map_or(0, |v| v.saturating_add(1))),
            image_pull_policy: pull_policy,
        }),
    }
    entry.tags.sort_by(|a, b| a.tag.cmp(&b.tag));
}

fn lists_secret(entry: &ImageSpec, secret: &ReferenceObject) -> bool {
    entry
        .pull_secrets
        .iter()
        .flatten()
        .any(|r| r.namespace == secret.namespace && r.name == secret.name)
}

fn lacks_secrets(entry: Option<&ImageSpec>, secrets: &[ReferenceObject]) -> bool {
    secrets.iter().any(|s| !entry.is_some_and(|e| lists_secret(e, s)))
}

fn add_missing_secrets(entry: &mut ImageSpec, secrets: &[ReferenceObject]) {
    for secret in secrets {
        if !lists_secret(entry, secret) {
            entry.pull_secrets.get_or_insert_default().push(secret.clone());
        }
    }
    if entry.pull_secrets.as_ref().is_some_and(Vec::is_empty) {
        entry.pull_secrets = None;
    }
}
