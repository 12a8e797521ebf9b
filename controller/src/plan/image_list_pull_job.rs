//! ImageListPullJob decisions (reference §3): one child ImagePullJob per
//! image, created and deleted as images come and go, and a status aggregated
//! from the children. Better than OpenKruise: children carry no TTL of their
//! own (the list's TTL removes them; a child deleted early would be made again
//! and pull again), only template fields the nodes see recreate children
//! (`parallelism` is changed in place, `ttlSecondsAfterFinished` touches no
//! child), and failed images are listed in a stable order.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use prewarm_api::job::{COMPLETION_NEVER, FailedImageStatus, ImageListPullJobStatus};
use prewarm_api::v1beta1::{ImageListPullJob, ImagePullJob, ImagePullJobSpec};
use serde::Serialize;

use super::image_pull_job::after_ttl;

/// The label that records which template revision a child was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";
pub const REASON_CREATED: &str = "Successful create ImagePullJob";
pub const REASON_DELETED: &str = "Successful delete ImagePullJob";

/// The child spec a list job's template gives for `image`: the template,
/// without `ttlSecondsAfterFinished`.
pub fn child_spec(list: &ImageListPullJob, image: &str) -> ImagePullJobSpec {
    let spec = &list.spec;
    let mut completion = spec.completion_policy.clone();
    if let Some(completion) = &mut completion {
        completion.ttl_seconds_after_finished = None;
    }
    ImagePullJobSpec {
        image: image.to_owned(),
        pull_secrets: spec.pull_secrets.clone(),
        selector: spec.selector.clone(),
        pod_selector: spec.pod_selector.clone(),
        parallelism: spec.parallelism.clone(),
        pull_policy: spec.pull_policy.clone(),
        completion_policy: completion,
        sandbox_config: spec.sandbox_config.clone(),
        image_pull_policy: spec.image_pull_policy.clone(),
    }
}

/// The template fields that reach the nodes or choose them: a change to any
/// of them recreates the children (a new owner, so the nodes pull again).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Revision<'a> {
    pull_secrets: &'a Option<Vec<String>>,
    selector: &'a Option<prewarm_api::job::NodeSelector>,
    pod_selector: &'a Option<prewarm_api::job::PodSelector>,
    pull_policy: &'a Option<prewarm_api::job::PullPolicy>,
    completion_type: Option<&'a str>,
    active_deadline_seconds: Option<i64>,
    sandbox_config: &'a Option<prewarm_api::job::SandboxConfig>,
    image_pull_policy: &'a Option<String>,
}

/// The revision hash of a list job's template: FNV-1a over the fields that
/// recreate children, written with the letters Kubernetes uses for
/// generated names.
pub fn revision(list: &ImageListPullJob) -> String {
    let spec = &list.spec;
    let completion = spec.completion_policy.as_ref();
    let revision = Revision {
        pull_secrets: &spec.pull_secrets,
        selector: &spec.selector,
        pod_selector: &spec.pod_selector,
        pull_policy: &spec.pull_policy,
        completion_type: completion.and_then(|c| c.type_.as_deref()),
        active_deadline_seconds: completion.and_then(|c| c.active_deadline_seconds),
        sandbox_config: &spec.sandbox_config,
        image_pull_policy: &spec.image_pull_policy,
    };
    let bytes = serde_json::to_vec(&revision).unwrap_or_default();
    safe_encode(&fnv1a(&bytes).to_string())
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// Kubernetes' `rand.SafeEncodeString`: digits and letters mapped onto
/// consonants and digits that cannot spell words.
fn safe_encode(text: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    text.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Characters of a child's name suffix: 27^10, about 2^47 names per list, so
/// that a list's own images do not collide (255 images: about 1 in 10^10).
const CHILD_SUFFIX_LEN: usize = 10;

/// A child's name: `<list>-` and ten characters derived from the image and the
/// revision, so that a create repeated after a restart or on a stale cache meets
/// AlreadyExists instead of making a second child. A name taken by anything but
/// this list's child for that image is not trusted: the create falls back to
/// `generateName` (see [`is_child_for`]).
pub fn child_name(list_name: &str, image: &str, revision: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut input = Vec::with_capacity(image.len() + revision.len() + 1);
    input.extend_from_slice(image.as_bytes());
    input.push(b'/');
    input.extend_from_slice(revision.as_bytes());
    let mut hash = fnv1a_64(&input);
    let base = ALPHANUMS.len() as u64;
    let mut suffix = String::with_capacity(CHILD_SUFFIX_LEN);
    for _ in 0..CHILD_SUFFIX_LEN {
        suffix.push(char::from(ALPHANUMS[(hash % base) as usize]));
        hash /= base;
    }
    let prefix: String = list_name.chars().take(253 - CHILD_SUFFIX_LEN - 1).collect();
    format!("{prefix}-{suffix}")
}

/// Whether `job` is `list`'s child for `image` made from `revision`: what an
/// AlreadyExists under the derived name must find before the create counts as done.
pub fn is_child_for(list: &ImageListPullJob, job: &ImagePullJob, image: &str, revision: &str) -> bool {
    let controlled = job
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == list.metadata.uid.as_ref());
    controlled && job.spec.image == image && consistent(list, job, revision)
}

#[derive(Clone, Debug, PartialEq)]
pub enum ListLifecycle {
    /// Completed: delete it once its TTL has passed (the children go with it).
    Finished {
        delete_now: bool,
        requeue_after: Option<i64>,
    },
    Running,
}

pub fn lifecycle(list: &ImageListPullJob, now: Timestamp) -> ListLifecycle {
    let Some(completed) = list.status.as_ref().and_then(|s| s.completion_time.as_ref()) else {
        return ListLifecycle::Running;
    };
    let ttl = list
        .spec
        .completion_policy
        .as_ref()
        .and_then(|c| c.ttl_seconds_after_finished);
    let (delete_now, requeue_after) = after_ttl(completed, ttl, now);
    ListLifecycle::Finished {
        delete_now,
        requeue_after,
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ListPlan {
    pub status: ImageListPullJobStatus,
    pub create: Vec<ImagePullJob>,
    /// Names of children to delete.
    pub delete: Vec<String>,
    /// Children whose `parallelism` follows the template in place.
    pub resize: Vec<String>,
}

/// `children`: the ImagePullJobs this list job controls, not being deleted.
/// Each wanted image keeps one child made from the current revision (the first
/// by name, should there be two); every other child is deleted, and the status
/// counts only the children kept, so that a child about to go cannot complete
/// the list. A list being deleted creates nothing (foreground deletion deletes
/// the children first).
pub fn plan(list: &ImageListPullJob, children: &[&ImagePullJob], now: Timestamp) -> ListPlan {
    let revision = revision(list);
    let mut sorted: Vec<&ImagePullJob> = children.to_vec();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let wanted: BTreeSet<&str> = list.spec.images.iter().map(String::as_str).collect();
    let mut kept: BTreeMap<&str, &ImagePullJob> = BTreeMap::new();
    let mut delete = Vec::new();
    for child in sorted {
        let image = child.spec.image.as_str();
        if wanted.contains(image) && consistent(list, child, &revision) && !kept.contains_key(image) {
            kept.insert(image, child);
        } else {
            delete.push(child.metadata.name.clone().unwrap_or_default());
        }
    }
    let deleting = list.metadata.deletion_timestamp.is_some();
    let mut create = Vec::new();
    let mut resize = Vec::new();
    for image in &wanted {
        match kept.get(image) {
            None if !deleting => create.push(child(list, image, &revision)),
            Some(existing) if existing.spec.parallelism != list.spec.parallelism => {
                resize.push(existing.metadata.name.clone().unwrap_or_default());
            }
            _ => {}
        }
    }
    let kept: Vec<&ImagePullJob> = kept.into_values().collect();
    ListPlan {
        status: status(list, &kept, now),
        create,
        delete,
        resize,
    }
}

/// Made from this revision of the template: by its label, or, without one,
/// by comparing specs.
fn consistent(list: &ImageListPullJob, child: &ImagePullJob, revision: &str) -> bool {
    match child.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)) {
        Some(label) => label == revision,
        None => child.spec == child_spec(list, &child.spec.image),
    }
}

fn child(list: &ImageListPullJob, image: &str, revision: &str) -> ImagePullJob {
    let list_name = list.metadata.name.clone().unwrap_or_default();
    ImagePullJob {
        metadata: ObjectMeta {
            name: Some(child_name(&list_name, image, revision)),
            generate_name: Some(format!("{list_name}-")),
            namespace: list.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([(REVISION_LABEL.to_owned(), revision.to_owned())])),
            annotations: Some(BTreeMap::new()),
            owner_references: Some(vec![OwnerReference {
                api_version: format!("{}/v1beta1", prewarm_api::GROUP),
                kind: "ImageListPullJob".into(),
                name: list_name,
                uid: list.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: child_spec(list, image),
        status: None,
    }
}

fn status(list: &ImageListPullJob, children: &[&ImagePullJob], now: Timestamp) -> ImageListPullJobStatus {
    let old = list.status.clone().unwrap_or_default();
    let (mut active, mut completed, mut succeeded) = (0, 0, 0);
    let mut failed: Vec<FailedImageStatus> = Vec::new();
    for child in children {
        let Some(status) = child.status.as_ref().filter(|s| s.start_time.is_some()) else {
            continue;
        };
        let (desired, ok, bad) = (
            status.desired,
            status.succeeded.unwrap_or(0),
            status.failed.unwrap_or(0),
        );
        active += i32::from(status.active.unwrap_or(0) > 0);
        completed += i32::from(desired == ok + bad);
        succeeded += i32::from(desired == ok);
        if bad > 0 {
            let name = child.metadata.name.clone().unwrap_or_default();
            failed.push(FailedImageStatus {
                message: Some(format!(
                    "Please check for details which nodes failed by 'kubectl get ImagePullJob {name}'."
                )),
                image_pull_job: Some(name),
                name: Some(child.spec.image.clone()),
            });
        }
    }
    failed.sort_by(|a, b| (&a.name, &a.image_pull_job).cmp(&(&b.name, &b.image_pull_job)));
    let desired = i32::try_from(list.spec.images.len()).unwrap_or(i32::MAX);
    let never = list.spec.completion_policy.as_ref().and_then(|c| c.type_.as_deref()) == Some(COMPLETION_NEVER);
    let done = !never && completed == desired;
    ImageListPullJobStatus {
        start_time: old.start_time.or(Some(Time(now))),
        completion_time: done.then_some(Time(now)),
        desired,
        active: Some(active),
        completed: Some(completed),
        succeeded: Some(succeeded),
        failed_image_statuses: (!failed.is_empty()).then_some(failed),
    }
}
