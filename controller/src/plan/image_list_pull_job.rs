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

/// A child's name: `<list>-` and five characters derived from the image and
/// the revision, so that a create repeated after a restart or on a stale
/// cache meets AlreadyExists instead of making a second child.
pub fn child_name(list_name: &str, image: &str, revision: &str) -> String {
    let mut input = Vec::with_capacity(image.len() + revision.len() + 1);
    input.extend_from_slice(image.as_bytes());
    input.push(b'/');
    input.extend_from_slice(revision.as_bytes());
    let suffix: String = safe_encode(&format!("{:010}", fnv1a(&input)))
        .chars()
        .rev()
        .take(5)
        .collect();
    let prefix: String = list_name.chars().take(253 - 6).collect();
    format!("{prefix}-{suffix}")
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
pub fn plan(list: &ImageListPullJob, children: &[&ImagePullJob], now: Timestamp) -> ListPlan {
    let revision = revision(list);
    let by_image: BTreeMap<&str, &ImagePullJob> = children.iter().map(|c| (c.spec.image.as_str(), *c)).collect();
    let wanted: BTreeSet<&str> = list.spec.images.iter().map(String::as_str).collect();
    let mut plan = ListPlan {
        status: status(list, children, now),
        create: Vec::new(),
        delete: Vec::new(),
        resize: Vec::new(),
    };
    for image in &list.spec.images {
        match by_image.get(image.as_str()) {
            None => plan.create.push(child(list, image, &revision)),
            Some(existing) if !consistent(list, existing, &revision) => {
                plan.delete.push(existing.metadata.name.clone().unwrap_or_default());
                plan.create.push(child(list, image, &revision));
            }
            Some(existing) => {
                if existing.spec.parallelism != list.spec.parallelism {
                    plan.resize.push(existing.metadata.name.clone().unwrap_or_default());
                }
            }
        }
    }
    for child in children {
        if !wanted.contains(child.spec.image.as_str()) {
            plan.delete.push(child.metadata.name.clone().unwrap_or_default());
        }
    }
    plan
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
