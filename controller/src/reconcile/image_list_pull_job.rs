//! ImageListPullJob reconcile: the revision label, children created,
//! recreated, resized and deleted, status, TTL deletion.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use prewarm_api::v1beta1::{ImageListPullJob, ImagePullJob};
use serde_json::json;

use super::{Context, Error, delete_after_ttl, is_status, now, status_patch};
use crate::index::ObjectKey;
use crate::plan::image_list_pull_job::{
    self, ListLifecycle, REASON_CREATED, REASON_DELETED, REVISION_LABEL, is_child_for, lifecycle, revision,
};

pub fn expectation(key: &ObjectKey) -> String {
    format!("imagelistpulljob/{key}")
}

pub async fn reconcile(ctx: &Context, key: ObjectKey) -> Result<Option<Duration>, Error> {
    let Some(list) = ctx.world.list_job(&key) else {
        // Gone, perhaps while a pass was writing: nothing to wait for any more.
        ctx.world.forget_list_job(&key);
        return Ok(None);
    };
    let expected = expectation(&key);
    if !ctx
        .world
        .expectations
        .satisfied(&expected, list.metadata.resource_version.as_deref())
    {
        return Ok(Some(Duration::from_millis(200)));
    }
    let api: Api<ImageListPullJob> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let revision = revision(&list);
    if list.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)) != Some(&revision) {
        let patch = json!({"metadata": {"labels": {REVISION_LABEL: revision}}});
        let written = api
            .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::api(format!("labelling ImageListPullJob {key}")))?;
        ctx.world
            .expectations
            .expect(expected, written.metadata.resource_version.as_deref());
        return Ok(None);
    }
    if let ListLifecycle::Finished {
        delete_now,
        requeue_after,
    } = lifecycle(&list, now())
    {
        if delete_now {
            delete_after_ttl(&api, &key, list.metadata.uid.clone(), "imagelistpulljobs").await?;
        }
        return Ok(requeue_after.map(|s| Duration::from_secs(s.unsigned_abs())));
    }
    let children = ctx.world.children(&list);
    let child_refs: Vec<&ImagePullJob> = children.iter().map(AsRef::as_ref).collect();
    let plan = image_list_pull_job::plan(&list, &child_refs, now());
    let jobs: Api<ImagePullJob> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let reference = list.object_ref(&());

    let mut created = 0;
    for child in &plan.create {
        match create_child(ctx, &jobs, &list, child, &revision).await {
            Ok(made) => created += usize::from(made),
            Err(e) => {
                let note = format!("creating the ImagePullJob for {}: {e}", child.spec.image);
                ctx.event(&reference, EventType::Warning, "FailedCreate", note).await;
                return Err(Error::api(format!(
                    "creating an ImagePullJob for ImageListPullJob {key}"
                ))(e));
            }
        }
    }
    if created > 0 {
        let note = format!("Create {created} ImagePullJob");
        ctx.event(&reference, EventType::Normal, REASON_CREATED, note).await;
    }
    let mut failures = Vec::new();
    for name in &plan.delete {
        match jobs.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => failures.push(format!(
                "fail to delete ImagePullJob ({}/{name}) for : {e}",
                key.namespace
            )),
        }
    }
    if !failures.is_empty() {
        return Err(Error::Other(failures.join("; ")));
    }
    if !plan.delete.is_empty() {
        let note = format!("Delete {} ImagePullJob", plan.delete.len());
        ctx.event(&reference, EventType::Normal, REASON_DELETED, note).await;
    }
    for name in &plan.resize {
        let patch = json!({"spec": {"parallelism": list.spec.parallelism}});
        jobs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::api(format!("resizing ImagePullJob {}/{name}", key.namespace)))?;
    }
    if let Some(patch) = status_patch(&list.status, &plan.status) {
        let written = api
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(Error::api(format!("writing the status of ImageListPullJob {key}")))?;
        ctx.world
            .expectations
            .expect(expected, written.metadata.resource_version.as_deref());
    }
    Ok(None)
}

/// Creates a child under its derived name. AlreadyExists is an earlier pass's
/// child the cache has not shown yet only when the object under that name is
/// this list's child for that image; anything else (a job a user made under that
/// name) is left alone and the child is created under a generated name.
/// Returns whether a child was made.
async fn create_child(
    ctx: &Context,
    jobs: &Api<ImagePullJob>,
    list: &ImageListPullJob,
    child: &ImagePullJob,
    revision: &str,
) -> Result<bool, kube::Error> {
    let error = match jobs.create(&PostParams::default(), child).await {
        Ok(_) => return Ok(true),
        Err(e) if is_status(&e, 409) => e,
        Err(e) => return Err(e),
    };
    let name = child.metadata.name.as_deref().unwrap_or_default();
    // The cache answers: the shipped RBAC grants no `get` on jobs. One that has
    // not shown the job yet is asked again on the retry.
    let namespace = list.metadata.namespace.as_deref().unwrap_or_default();
    match ctx.world.job(&ObjectKey::new(namespace, name)) {
        Some(existing) if is_child_for(list, &existing, &child.spec.image, revision) => Ok(false),
        Some(_) => {
            let mut generated = child.clone();
            generated.metadata.name = None;
            jobs.create(&PostParams::default(), &generated).await.map(|_| true)
        }
        // Not in the cache yet, or deleted in between: the next pass decides.
        None => Err(error),
    }
}
