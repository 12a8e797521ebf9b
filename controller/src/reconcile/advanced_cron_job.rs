//! AdvancedCronJob reconcile: the run of the latest schedule time created,
//! replaced runs and old history deleted, status written; woken again at the
//! next schedule time.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use prewarm_api::v1beta1::{AdvancedCronJob, ImageListPullJob};

use super::{Context, Error, is_status, now, status_patch};
use crate::index::ObjectKey;
use crate::plan::advanced_cron_job::{self, REASON_CREATED, REASON_DELETED};

pub fn expectation(key: &ObjectKey) -> String {
    format!("advancedcronjob/{key}")
}

pub async fn reconcile(ctx: &Context, key: ObjectKey) -> Result<Option<Duration>, Error> {
    let Some(cron) = ctx.world.cron_job(&key) else {
        ctx.world.forget_cron_job(&key);
        return Ok(None);
    };
    let expected = expectation(&key);
    if !ctx
        .world
        .expectations
        .satisfied(&expected, cron.metadata.resource_version.as_deref())
    {
        return Ok(Some(Duration::from_millis(200)));
    }
    if cron.metadata.deletion_timestamp.is_some() {
        return Ok(None);
    }
    let children = ctx.world.cron_children(&cron);
    let child_refs: Vec<&ImageListPullJob> = children.iter().map(AsRef::as_ref).collect();
    let Some(plan) = advanced_cron_job::plan(&cron, &child_refs, now()) else {
        return Ok(None);
    };
    let reference = cron.object_ref(&());
    for note in plan.notes {
        let type_ = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(&reference, type_, note.reason, note.message).await;
    }
    let jobs: Api<ImageListPullJob> = Api::namespaced(ctx.client.clone(), &key.namespace);
    for name in &plan.delete {
        match jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => {
                let note = format!("Deleted job {name}");
                ctx.event(&reference, EventType::Normal, REASON_DELETED, note).await;
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                return Err(Error::api(format!(
                    "deleting ImageListPullJob {}/{name}",
                    key.namespace
                ))(e));
            }
        }
    }
    if let Some(child) = &plan.create {
        let name = child.metadata.name.clone().unwrap_or_default();
        match jobs.create(&PostParams::default(), child).await {
            Ok(_) => {
                let note = format!("Created job {name}");
                ctx.event(&reference, EventType::Normal, REASON_CREATED, note).await;
            }
            // Made by an earlier pass the cache has not shown yet (its name is
            // the schedule time's), or a job of the same name made by someone else.
            // The cache answers (the controller may not `get`); one that has not
            // shown the job yet is taken to be behind an earlier pass of ours.
            Err(e) if is_status(&e, 409) => {
                let existing = ctx.world.list_job(&ObjectKey::new(&key.namespace, &name));
                let ours = existing.is_none_or(|j| {
                    j.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|o| Some(&o.uid) == cron.metadata.uid.as_ref())
                });
                if !ours {
                    let note =
                        format!("Skipped this run: an ImageListPullJob named {name} exists and is not this cron job's");
                    ctx.event(&reference, EventType::Warning, "FailedCreate", note).await;
                }
            }
            Err(e) => {
                let note = format!("Error creating job {name}: {e}");
                ctx.event(&reference, EventType::Warning, "FailedCreate", note).await;
                return Err(Error::api(format!(
                    "creating ImageListPullJob {}/{name}",
                    key.namespace
                ))(e));
            }
        }
    }
    if let Some(patch) = status_patch(&cron.status, &plan.status) {
        let api: Api<AdvancedCronJob> = Api::namespaced(ctx.client.clone(), &key.namespace);
        let written = api
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(Error::api(format!("writing the status of AdvancedCronJob {key}")))?;
        ctx.world
            .expectations
            .expect(expected, written.metadata.resource_version.as_deref());
    }
    Ok(plan.requeue_after)
}
