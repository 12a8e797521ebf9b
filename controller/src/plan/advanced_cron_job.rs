//! AdvancedCronJob decisions, as OpenKruise's controller and Kubernetes'
//! CronJob make them: the ImageListPullJob of the latest missed schedule time
//! (at most one catch-up after downtime, none past `startingDeadlineSeconds`),
//! the concurrency policy, history pruned to its limits, and the status.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::{Timestamp, ToSpan};
use prewarm_api::cron::{self, Schedule};
use prewarm_api::cron_job::{
    AdvancedCronJobStatus, CONCURRENCY_FORBID, CONCURRENCY_REPLACE, DEFAULT_FAILED_JOBS_HISTORY_LIMIT,
    DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT, SCHEDULED_AT_ANNOTATION, TYPE_IMAGE_LIST_PULL_JOB,
};
use prewarm_api::v1beta1::{AdvancedCronJob, ImageListPullJob};

pub const REASON_CREATED: &str = "SuccessfulCreate";
pub const REASON_DELETED: &str = "SuccessfulDelete";
pub const REASON_MISSED: &str = "MissSchedule";
pub const REASON_ALREADY_ACTIVE: &str = "JobAlreadyActive";
pub const REASON_BAD_SCHEDULE: &str = "UnparseableSchedule";

/// Something worth an event on the cron job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CronPlan {
    pub status: AdvancedCronJobStatus,
    /// Children to delete: replaced active ones, then history beyond the limits.
    pub delete: Vec<String>,
    pub create: Option<ImageListPullJob>,
    pub notes: Vec<Note>,
    /// When the next schedule time comes; `None` when none ever does.
    pub requeue_after: Option<Duration>,
}

/// How a child ended: OpenKruise counts it a success when every image succeeded.
fn finished(child: &ImageListPullJob) -> Option<bool> {
    let status = child.status.as_ref()?;
    status.completion_time.as_ref()?;
    Some(status.succeeded.unwrap_or(0) == status.desired)
}

fn scheduled_at(child: &ImageListPullJob) -> Option<Timestamp> {
    child
        .metadata
        .annotations
        .as_ref()?
        .get(SCHEDULED_AT_ANNOTATION)?
        .parse()
        .ok()
}

/// The name of the job of one schedule time: the same time always gives the
/// same name, so a run is never created twice.
pub fn child_name(cron: &str, scheduled: Timestamp) -> String {
    format!("{cron}-{}", scheduled.as_second())
}

/// `None` for a cron job of batch Jobs or BroadcastJobs: OpenKruise's (the
/// webhook refuses new ones), whose status and runs are left to OpenKruise.
pub fn plan(cron: &AdvancedCronJob, children: &[&ImageListPullJob], now: Timestamp) -> Option<CronPlan> {
    cron.spec.template.image_list_pull_job_template.as_ref()?;
    Some(plan_runs(cron, children, now))
}

fn plan_runs(cron: &AdvancedCronJob, children: &[&ImageListPullJob], now: Timestamp) -> CronPlan {
    let mut children: Vec<&ImageListPullJob> = children.to_vec();
    children.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let active: Vec<&ImageListPullJob> = children.iter().copied().filter(|c| finished(c).is_none()).collect();
    let stored = cron.status.clone().unwrap_or_default();
    // The stored time too: a pruned child must not be run again.
    let last_scheduled = children
        .iter()
        .filter_map(|c| scheduled_at(c))
        .chain(stored.last_schedule_time.as_ref().map(|t| t.0))
        .max();
    let mut plan = CronPlan {
        status: AdvancedCronJobStatus {
            type_: Some(TYPE_IMAGE_LIST_PULL_JOB.to_owned()),
            active: Some(active.iter().map(|c| reference(c)).collect::<Vec<_>>()).filter(|a| !a.is_empty()),
            last_schedule_time: last_scheduled.map(Time),
        },
        delete: Vec::new(),
        create: None,
        notes: Vec::new(),
        requeue_after: None,
    };
    prune_history(cron, &children, &mut plan.delete);
    if cron.spec.paused == Some(true) {
        return plan;
    }
    let schedule = match Schedule::parse(&cron.spec.schedule)
        .map_err(|e| e.to_string())
        .and_then(|s| cron::zone(&s, cron.spec.time_zone.as_deref()).map(|zone| (s, zone)))
    {
        Ok(schedule) => schedule,
        Err(e) => {
            plan.notes.push(Note {
                warning: true,
                reason: REASON_BAD_SCHEDULE,
                message: format!("unparseable schedule {:?}: {e}", cron.spec.schedule),
            });
            return plan;
        }
    };
    let (schedule, zone) = schedule;
    plan.requeue_after = schedule.next_after(now, &zone).map(|next| {
        // A second late rather than early: at the due time itself the run is there to see.
        Duration::from_secs(next.as_second().saturating_sub(now.as_second()).unsigned_abs() + 1)
    });
    let created = cron.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let Some(missed) = schedule.latest_missed(last_scheduled.unwrap_or(created), now, &zone) else {
        return plan;
    };
    if let Some(deadline) = cron.spec.starting_deadline_seconds
        && missed.checked_add(deadline.seconds()).is_ok_and(|latest| latest < now)
    {
        plan.notes.push(Note {
            warning: true,
            reason: REASON_MISSED,
            message: format!("Missed scheduled time to start a job: {missed}"),
        });
        return plan;
    }
    let policy = cron.spec.concurrency_policy.as_deref();
    if policy == Some(CONCURRENCY_FORBID) && !active.is_empty() {
        plan.notes.push(Note {
            warning: false,
            reason: REASON_ALREADY_ACTIVE,
            message: "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
        });
        return plan;
    }
    let name = child_name(cron.metadata.name.as_deref().unwrap_or_default(), missed);
    if children
        .iter()
        .any(|c| c.metadata.name.as_deref() == Some(name.as_str()))
    {
        return plan;
    }
    if policy == Some(CONCURRENCY_REPLACE) {
        let replaced: Vec<String> = active.iter().filter_map(|c| c.metadata.name.clone()).collect();
        plan.delete.splice(0..0, replaced);
        plan.status.active = None;
    }
    let Some(child) = child(cron, &name, missed) else {
        return plan;
    };
    plan.create = Some(child);
    plan.status.last_schedule_time = Some(Time(missed));
    plan
}

/// The oldest finished children beyond the history limits, by start time.
fn prune_history(cron: &AdvancedCronJob, children: &[&ImageListPullJob], delete: &mut Vec<String>) {
    let limits = [
        (
            true,
            cron.spec
                .successful_jobs_history_limit
                .unwrap_or(DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT),
        ),
        (
            false,
            cron.spec
                .failed_jobs_history_limit
                .unwrap_or(DEFAULT_FAILED_JOBS_HISTORY_LIMIT),
        ),
    ];
    for (succeeded, limit) in limits {
        let mut done: Vec<&ImageListPullJob> = children
            .iter()
            .copied()
            .filter(|c| finished(c) == Some(succeeded))
            .collect();
        done.sort_by_key(|c| {
            (
                c.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0),
                scheduled_at(c),
            )
        });
        let excess = done.len().saturating_sub(usize::try_from(limit).unwrap_or(0));
        delete.extend(done.iter().take(excess).filter_map(|c| c.metadata.name.clone()));
    }
}

fn reference(child: &ImageListPullJob) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{}/v1beta1", prewarm_api::GROUP)),
        kind: Some("ImageListPullJob".into()),
        namespace: child.metadata.namespace.clone(),
        name: child.metadata.name.clone(),
        uid: child.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

/// The template's job for one schedule time, owned by the cron job. `None`
/// for a template without a spec, which the webhook refuses.
fn child(cron: &AdvancedCronJob, name: &str, scheduled: Timestamp) -> Option<ImageListPullJob> {
    let template = cron.spec.template.image_list_pull_job_template.as_ref()?;
    let metadata = template.metadata.clone().unwrap_or_default();
    let mut annotations = metadata.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_AT_ANNOTATION.to_owned(), scheduled.to_string());
    Some(ImageListPullJob {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: cron.metadata.namespace.clone(),
            labels: Some(metadata.labels.unwrap_or_else(BTreeMap::new)),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: format!("{}/v1beta1", prewarm_api::GROUP),
                kind: "AdvancedCronJob".into(),
                name: cron.metadata.name.clone().unwrap_or_default(),
                uid: cron.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone()?,
        status: None,
    })
}
