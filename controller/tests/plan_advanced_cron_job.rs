//! The AdvancedCronJob planner, driven by an injected clock: a simulated
//! cluster applies each plan (children created, finished, deleted) and the
//! clock moves to the time the plan asked to be woken at, never a sleep.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use k8s_openapi::jiff::{Timestamp, ToSpan};
use prewarm_api::cron_job::SCHEDULED_AT_ANNOTATION;
use prewarm_api::v1beta1::{AdvancedCronJob, ImageListPullJob};
use prewarm_controller::plan::advanced_cron_job::{
    CronPlan, REASON_ALREADY_ACTIVE, REASON_BAD_SCHEDULE, REASON_MISSED, child_name, plan,
};
use serde_json::{Value, json};

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn cron(spec: Value) -> AdvancedCronJob {
    let mut spec = spec;
    let defaults = json!({"schedule": "* * * * *", "concurrencyPolicy": "Replace",
        "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
        "template": {"imageListPullJobTemplate": {
            "metadata": {"labels": {"team": "web"}, "annotations": {"note": "nightly"}},
            "spec": {"images": ["nginx:1.25"], "completionPolicy": {"type": "Always"}}}}});
    for (key, value) in defaults.as_object().unwrap() {
        spec.as_object_mut()
            .unwrap()
            .entry(key.clone())
            .or_insert(value.clone());
    }
    serde_json::from_value(json!({
        "metadata": {"name": "warm", "namespace": "web", "uid": "cron-uid",
                     "creationTimestamp": "2026-12-02T10:00:20Z"},
        "spec": spec}))
    .unwrap()
}

/// The cluster as the controller's caches would show it.
struct Cluster {
    cron: AdvancedCronJob,
    children: Vec<ImageListPullJob>,
    now: Timestamp,
}

impl Cluster {
    fn new(cron: AdvancedCronJob, now: &str) -> Self {
        Self {
            cron,
            children: Vec::new(),
            now: at(now),
        }
    }

    /// One reconcile: plans, then applies the plan as the API server would.
    fn reconcile(&mut self) -> CronPlan {
        let children: Vec<&ImageListPullJob> = self.children.iter().collect();
        let plan = plan(&self.cron, &children, self.now).expect("an imageListPullJobTemplate");
        self.children
            .retain(|c| !plan.delete.contains(c.metadata.name.as_ref().unwrap()));
        if let Some(child) = &plan.create {
            let mut made = child.clone();
            made.metadata.uid = Some(format!("uid-{}", made.metadata.name.as_ref().unwrap()));
            made.status = Some(serde_json::from_value(json!({"desired": 1, "startTime": self.now})).unwrap());
            self.children.push(made);
        }
        self.cron.status = Some(plan.status.clone());
        plan
    }

    /// Moves the clock to where the last plan asked to be woken.
    fn wake(&mut self, plan: &CronPlan) {
        let after = plan.requeue_after.expect("a next run");
        self.now = self
            .now
            .checked_add(i64::try_from(after.as_secs()).unwrap().seconds())
            .unwrap();
    }

    fn finish(&mut self, name: &str, succeeded: bool) {
        let child = self
            .children
            .iter_mut()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap();
        let status = child.status.as_mut().unwrap();
        status.completion_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(self.now));
        status.succeeded = Some(if succeeded { 1 } else { 0 });
    }

    fn names(&self) -> Vec<String> {
        self.children.iter().map(|c| c.metadata.name.clone().unwrap()).collect()
    }
}

#[test]
fn every_minute_one_job_per_minute_named_and_owned_as_openkruise_does() {
    let mut cluster = Cluster::new(cron(json!({})), "2026-12-02T10:00:30Z");
    let first = cluster.reconcile();
    assert_eq!(first.create, None, "nothing is due before the first minute");
    assert_eq!(first.requeue_after, Some(Duration::from_secs(31)));
    cluster.wake(&first);
    let second = cluster.reconcile();
    let child = second.create.clone().expect("the 10:01 run");
    assert_eq!(child.metadata.name.as_deref(), Some("warm-1796205660"));
    assert_eq!(child_name("warm", at("2026-12-02T10:01:00Z")), "warm-1796205660");
    let annotations = child.metadata.annotations.clone().unwrap();
    assert_eq!(annotations[SCHEDULED_AT_ANNOTATION], "2026-12-02T10:01:00Z");
    assert_eq!(annotations["note"], "nightly");
    assert_eq!(child.metadata.labels.clone().unwrap()["team"], "web");
    let owner = &child.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("AdvancedCronJob", "cron-uid")
    );
    assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
    assert_eq!(child.spec.images, ["nginx:1.25"]);
    assert_eq!(
        cluster
            .cron
            .status
            .as_ref()
            .unwrap()
            .last_schedule_time
            .as_ref()
            .unwrap()
            .0,
        at("2026-12-02T10:01:00Z")
    );
    assert_eq!(
        cluster.cron.status.as_ref().unwrap().type_.as_deref(),
        Some("ImageListPullJob")
    );

    // The same minute again (a watch event): nothing new.
    let again = cluster.reconcile();
    assert_eq!(again.create, None);
    assert_eq!(again.status.active.as_ref().map(Vec::len), Some(1));
    cluster.finish("warm-1796205660", true);
    let done = cluster.reconcile();
    assert_eq!(done.status.active, None);
    cluster.wake(&done);
    assert_eq!(cluster.now, at("2026-12-02T10:02:01Z"));
    let third = cluster.reconcile();
    assert_eq!(
        third.create.and_then(|c| c.metadata.name).as_deref(),
        Some("warm-1796205720")
    );
    assert_eq!(cluster.names(), ["warm-1796205660", "warm-1796205720"]);
}

#[test]
fn after_downtime_only_the_latest_missed_run_is_made_once() {
    let mut cluster = Cluster::new(cron(json!({"schedule": "*/5 * * * *"})), "2026-12-02T13:07:00Z");
    let plan = cluster.reconcile();
    let name = plan.create.and_then(|c| c.metadata.name).unwrap();
    assert_eq!(name, child_name("warm", at("2026-12-02T13:05:00Z")));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(3 * 60 + 1)));
    assert_eq!(cluster.reconcile().create, None);
    assert_eq!(cluster.names().len(), 1);
}

#[test]
fn a_run_later_than_the_starting_deadline_is_skipped_with_an_event() {
    let mut cluster = Cluster::new(
        cron(json!({"schedule": "0 * * * *", "startingDeadlineSeconds": 120})),
        "2026-12-02T13:05:00Z",
    );
    let plan = cluster.reconcile();
    assert_eq!(plan.create, None);
    assert_eq!(plan.notes[0].reason, REASON_MISSED);
    assert_eq!(
        plan.notes[0].message,
        "Missed scheduled time to start a job: 2026-12-02T13:00:00Z"
    );
    let mut in_time = Cluster::new(
        cron(json!({"schedule": "0 * * * *", "startingDeadlineSeconds": 600})),
        "2026-12-02T13:05:00Z",
    );
    assert!(in_time.reconcile().create.is_some());
}

#[test]
fn concurrency_policies() {
    // Replace: the active run is deleted and the new one made.
    let mut cluster = Cluster::new(cron(json!({})), "2026-12-02T10:01:00Z");
    cluster.reconcile();
    cluster.now = at("2026-12-02T10:02:00Z");
    let replace = cluster.reconcile();
    assert_eq!(replace.delete, ["warm-1796205660"]);
    assert_eq!(cluster.names(), ["warm-1796205720"]);

    // Forbid: skipped while one is active, with an event, and run late once it ends.
    let mut cluster = Cluster::new(cron(json!({"concurrencyPolicy": "Forbid"})), "2026-12-02T10:01:00Z");
    cluster.reconcile();
    cluster.now = at("2026-12-02T10:02:00Z");
    let forbid = cluster.reconcile();
    assert_eq!(
        (forbid.create.clone(), forbid.delete.clone()),
        (None, Vec::<String>::new())
    );
    assert_eq!(forbid.notes[0].reason, REASON_ALREADY_ACTIVE);
    cluster.now = at("2026-12-02T10:02:30Z");
    cluster.finish("warm-1796205660", true);
    assert_eq!(
        cluster.reconcile().create.and_then(|c| c.metadata.name).as_deref(),
        Some("warm-1796205720")
    );

    // Allow: runs side by side.
    let mut cluster = Cluster::new(cron(json!({"concurrencyPolicy": "Allow"})), "2026-12-02T10:01:00Z");
    cluster.reconcile();
    cluster.now = at("2026-12-02T10:02:00Z");
    assert!(cluster.reconcile().delete.is_empty());
    assert_eq!(cluster.names().len(), 2);
}

#[test]
fn history_is_pruned_to_the_limits_and_a_pruned_run_is_not_made_again() {
    let mut cluster = Cluster::new(
        cron(json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0})),
        "2026-12-02T10:01:00Z",
    );
    for minute in 1..=3 {
        cluster.now = at(&format!("2026-12-02T10:0{minute}:00Z"));
        let made = cluster.reconcile().create.unwrap();
        cluster.now = at(&format!("2026-12-02T10:0{minute}:30Z"));
        cluster.finish(made.metadata.name.as_deref().unwrap(), minute != 2);
    }
    // The failed 10:02 run went when 10:03 was made; now the older success goes.
    let plan = cluster.reconcile();
    assert_eq!(plan.delete, ["warm-1796205660"]);
    assert_eq!(cluster.names(), ["warm-1796205780"]);
    // The stored lastScheduleTime keeps 10:03 from being made again.
    let with_none_left = {
        cluster.children.clear();
        cluster.reconcile()
    };
    assert_eq!(with_none_left.create, None);
    assert_eq!(
        with_none_left.status.last_schedule_time.unwrap().0,
        at("2026-12-02T10:03:00Z")
    );
}

#[test]
fn paused_zoned_and_broken_schedules() {
    let mut paused = Cluster::new(cron(json!({"paused": true})), "2026-12-02T10:05:00Z");
    let plan = paused.reconcile();
    assert_eq!((plan.create, plan.requeue_after), (None, None));

    // 06:00 in Shanghai is 22:00 UTC.
    let mut zoned = Cluster::new(
        cron(json!({"schedule": "0 6 * * *", "timeZone": "Asia/Shanghai"})),
        "2026-12-02T10:00:30Z",
    );
    let plan = zoned.reconcile();
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(12 * 3600 - 30 + 1)));
    zoned.wake(&plan);
    let run = zoned.reconcile().create.unwrap();
    assert_eq!(
        run.metadata.annotations.unwrap()[SCHEDULED_AT_ANNOTATION],
        "2026-12-02T22:00:00Z"
    );

    let mut broken = Cluster::new(cron(json!({"schedule": "61 * * * *"})), "2026-12-02T10:05:00Z");
    let plan = broken.reconcile();
    assert_eq!((plan.create, plan.requeue_after), (None, None));
    assert_eq!(plan.notes[0].reason, REASON_BAD_SCHEDULE);
    assert!(
        plan.notes[0].message.contains("minute field \"61\""),
        "{}",
        plan.notes[0].message
    );
}

#[test]
fn openkruises_batch_cron_jobs_are_left_alone() {
    let mut batch = cron(json!({"template": {"jobTemplate": {"spec": {}}}}));
    batch.status =
        Some(serde_json::from_value(json!({"type": "Job", "lastScheduleTime": "2026-12-02T09:00:00Z"})).unwrap());
    assert_eq!(plan(&batch, &[], at("2026-12-02T10:05:00Z")), None);
}
