//! ImagePullJob reconcile: finalizer, secret copies, NodeImage entries within
//! the parallelism window, status, completion, TTL deletion.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use prewarm_api::v1beta1::{ImagePullJob, NodeImage};
use serde_json::json;

use super::{Context, Error, delete_after_ttl, is_status, now, random_fraction, secrets, status_patch};
use crate::index::ObjectKey;
use crate::patch::merge_diff;
use crate::plan::image_pull_job::{
    self, EntryWrite, FINALIZER, Input, Lifecycle, Looked, Notice, completion_result, describe_nodes, only_progress,
    seconds_between,
};
use crate::plan::job_nodes::JobNodes;
use crate::plan::secrets::JobSecrets;
use crate::plan::tag_policy::tag_pull_policy;
use crate::world::{Basis, Memo, as_targets};

/// How long to wait for the caches to show this controller's own last write.
const EXPECTATION_RETRY: Duration = Duration::from_millis(200);
/// The least time between two status writes that only move a job's progress.
const STATUS_INTERVAL: Duration = Duration::from_secs(1);
/// NodeImage entries written at once.
const CONCURRENT_WRITES: usize = 16;

pub fn job_expectation(key: &ObjectKey) -> String {
    format!("imagepulljob/{key}")
}

pub async fn reconcile(ctx: &Context, key: ObjectKey) -> Result<Option<Duration>, Error> {
    let Some(job) = ctx.world.job(&key) else {
        // Gone, perhaps while a pass was writing: nothing to wait for any more.
        ctx.world.forget_job(&key);
        return Ok(None);
    };
    if !ctx
        .world
        .expectations
        .satisfied(&job_expectation(&key), job.metadata.resource_version.as_deref())
    {
        return Ok(Some(EXPECTATION_RETRY));
    }
    let api: Api<ImagePullJob> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let now = now();
    let pull_secrets = job.spec.pull_secrets.clone().unwrap_or_default();
    match image_pull_job::lifecycle(&job, now) {
        Lifecycle::Deleting => {
            ctx.world.passes.forget(&key);
            release(ctx, &api, &key, &job, &pull_secrets).await?;
            Ok(None)
        }
        Lifecycle::Finished {
            delete_now,
            requeue_after,
        } => {
            ctx.world.passes.forget(&key);
            release(ctx, &api, &key, &job, &pull_secrets).await?;
            if delete_now {
                delete_after_ttl(&api, &key, job.metadata.uid.clone(), "imagepulljobs").await?;
            }
            Ok(requeue_after.map(|s| Duration::from_secs(s.unsigned_abs())))
        }
        Lifecycle::Running => {
            let passed = run(ctx, &api, &key, &job, &pull_secrets).await;
            if passed.is_err() {
                // A write refused on stale knowledge must not be tried again
                // from it: the next pass looks at every target.
                ctx.world.passes.forget(&key);
            }
            passed
        }
    }
}

/// The cleanup the finalizer waits for: secret copies released; then the
/// finalizer goes.
async fn release(
    ctx: &Context,
    api: &Api<ImagePullJob>,
    key: &ObjectKey,
    job: &ImagePullJob,
    pull_secrets: &[String],
) -> Result<(), Error> {
    if !job.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let job_secrets = JobSecrets {
        namespace: &key.namespace,
        name: &key.name,
        pull_secrets,
        running: false,
    };
    secrets::sync(ctx, job_secrets).await?;
    set_finalizer(ctx, api, job, false).await
}

async fn run(
    ctx: &Context,
    api: &Api<ImagePullJob>,
    key: &ObjectKey,
    job: &ImagePullJob,
    pull_secrets: &[String],
) -> Result<Option<Duration>, Error> {
    if !job.finalizers().iter().any(|f| f == FINALIZER) {
        // The next pass, woken by this write, does the rest.
        set_finalizer(ctx, api, job, true).await?;
        return Ok(None);
    }
    let cached_version = |node: &str| {
        ctx.world
            .node_image(node)
            .and_then(|n| crate::world::revision(n.metadata.resource_version.as_deref()))
    };
    if !ctx.world.pending_writes.settled(&key.to_string(), cached_version) {
        return Ok(Some(EXPECTATION_RETRY));
    }
    let at = ctx.world.passes.position();
    let synced = secrets::sync(
        ctx,
        JobSecrets {
            namespace: &key.namespace,
            name: &key.name,
            pull_secrets,
            running: true,
        },
    )
    .await?;
    let tag_policy = tag_pull_policy(&job.spec, ctx.settings.default_ttl_for_always, random_fraction());
    let basis = Basis::new(job, at, &synced.plan.refs);
    let excluded = &ctx.settings.excluded_nodes;
    let (mut nodes, unmatched, targets, mut status_written, everything) = match ctx.world.passes.take(key, &basis) {
        Some((memo, to_look_at)) => {
            let targets: Vec<_> = to_look_at
                .iter()
                .filter_map(|name| Some((ctx.world.node_image(name)?, memo.nodes.not_ready_since(name))))
                .collect();
            (memo.nodes, memo.unmatched, targets, memo.status_written, false)
        }
        None => (
            JobNodes::default(),
            ctx.world.unmatched(job, excluded),
            ctx.world.targets(job, excluded),
            None,
            true,
        ),
    };
    tracing::debug!(job = %key, everything, looked_at = targets.len(), "pass");
    let find = |name: &str| ctx.world.node_image(name);
    let looked = if everything {
        Looked::Everything
    } else {
        Looked::Changed { find: &find }
    };
    let plan = image_pull_job::pass(
        &Input {
            job,
            targets: &as_targets(&targets),
            secrets: &synced.plan.refs,
            tag_policy: &tag_policy,
            no_response_seconds: ctx.settings.no_response_seconds,
            unmatched: &unmatched,
            now: now(),
        },
        &mut nodes,
        looked,
    );
    let writes: Vec<_> = plan.writes.iter().map(|w| write_entry(ctx, key, w)).collect();
    let writes = futures_util::stream::iter(writes)
        .buffer_unordered(CONCURRENT_WRITES)
        .try_collect::<Vec<()>>()
        .await;
    writes?;
    let reference = job.object_ref(&());
    let first_pass = job.status.as_ref().and_then(|s| s.start_time.as_ref()).is_none();
    if first_pass && !synced.plan.missing.is_empty() {
        let note = format!(
            "pull secrets {} do not exist in namespace {}: nodes pull without them",
            synced.plan.missing.join(", "),
            key.namespace
        );
        ctx.event(&reference, EventType::Warning, "PullSecretNotFound", note)
            .await;
    }
    if first_pass && !synced.refused.is_empty() {
        let refused: Vec<String> = synced
            .refused
            .iter()
            .map(|(name, type_)| format!("{name} (type {type_})"))
            .collect();
        let note = format!(
            "pull secrets {} in namespace {} are not registry credentials and are not copied to the nodes: only Secrets of type kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg are; nodes pull without them",
            refused.join(", "),
            key.namespace
        );
        ctx.event(&reference, EventType::Warning, "PullSecretRefused", note)
            .await;
    }
    for notice in &plan.notices {
        let (type_, reason, note) = describe(job, notice);
        ctx.event(&reference, type_, reason, note).await;
    }
    let mut requeue_after = plan.requeue_after.map(|s| Duration::from_secs(s.unsigned_abs()));
    // Progress alone is written at most once per STATUS_INTERVAL: a pass may
    // run every batch window, and each would otherwise write a new percentage.
    let since_written = status_written.map(|at| at.elapsed()).filter(|e| *e < STATUS_INTERVAL);
    let hold = since_written.filter(|_| job.status.as_ref().is_some_and(|old| only_progress(old, &plan.status)));
    if let Some(elapsed) = hold {
        let due = STATUS_INTERVAL.saturating_sub(elapsed);
        requeue_after = Some(requeue_after.map_or(due, |r| r.min(due)));
    } else if let Some(patch) = status_patch(&job.status, &plan.status) {
        status_written = Some(tokio::time::Instant::now());
        let written = api
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(Error::api(format!("writing the status of ImagePullJob {key}")))?;
        ctx.world
            .expectations
            .expect(job_expectation(key), written.metadata.resource_version.as_deref());
        if let Some(result) = completion_result(job.status.as_ref(), &plan.status) {
            let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let completed = plan.status.completion_time.as_ref().map(|t| t.0);
            let took = created.zip(completed).map(|(c, d)| seconds_between(c, d));
            let policy = match job.spec.image_pull_policy.as_deref() {
                Some("Always") => "Always",
                _ => "IfNotPresent",
            };
            ctx.metrics.job_completed(result, policy, took.unwrap_or(0));
        }
    }
    let memo = Memo {
        basis,
        nodes,
        unmatched,
        status_written,
    };
    ctx.world.passes.keep(key.clone(), memo);
    Ok(requeue_after)
}

fn describe(job: &ImagePullJob, notice: &Notice) -> (EventType, &'static str, String) {
    let image = &job.spec.image;
    match notice {
        Notice::Started { desired } => (
            EventType::Normal,
            "Started",
            format!("pulling {image} on {desired} targeted node(s)"),
        ),
        Notice::NodesFailed { nodes } => (
            EventType::Warning,
            "PullImageFailed",
            format!(
                "{image} failed on {} node(s): {}; see the NodeImage of each node",
                nodes.len(),
                describe_nodes(nodes)
            ),
        ),
        Notice::NodeImageFull { node } => (
            EventType::Warning,
            "NodeImageFull",
            format!(
                "NodeImage {node} already lists {} images, the most allowed; {image} is not pulled there",
                prewarm_api::node_image::MAX_IMAGES
            ),
        ),
        Notice::NodesNotReady { nodes, seconds } => (
            EventType::Warning,
            "NodeNotReady",
            format!(
                "{} node(s) not Ready for {seconds}s or more, counted as failed for {image}: {}",
                nodes.len(),
                describe_nodes(nodes)
            ),
        ),
        Notice::Unmatched { nothing, message } => (
            EventType::Warning,
            if *nothing { "NoTargets" } else { "NodeNotFound" },
            format!("{image}: {message}"),
        ),
        Notice::Completed { succeeded, failed } => (
            EventType::Normal,
            "Completed",
            format!("{image}: {succeeded} node(s) succeeded, {failed} failed"),
        ),
        Notice::DeadlineExceeded { failed } => (
            EventType::Warning,
            "DeadlineExceeded",
            format!("{image}: activeDeadlineSeconds passed; {failed} node(s) counted as failed"),
        ),
        Notice::InvalidImage { message } => (EventType::Warning, "InvalidImage", message.clone()),
    }
}

async fn set_finalizer(ctx: &Context, api: &Api<ImagePullJob>, job: &ImagePullJob, present: bool) -> Result<(), Error> {
    let mut finalizers: Vec<String> = job.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if present {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": job.metadata.resource_version}});
    let name = job.name_any();
    match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(written) => {
            ctx.world.expectations.expect(
                job_expectation(&ObjectKey::of(&job.metadata)),
                written.metadata.resource_version.as_deref(),
            );
            Ok(())
        }
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(Error::api(format!("updating the finalizers of ImagePullJob {name}"))(e)),
    }
}

/// Stores one image entry of a NodeImage, conditional on the entry being as the
/// plan saw it (`write.base`), so that the agents' status writes and other jobs'
/// entries on the same NodeImage do not make it conflict: a JSON Patch that tests
/// the old entry, or for a new entry tests it against `null` (kube-apiserver's
/// JSON Patch passes that test only for an absent member), and puts the new one.
/// Where the test fails (the entry changed, is spelled differently on the
/// server, or the NodeImage has no images yet), the entry goes as a merge patch
/// conditional on the resourceVersion of the snapshot the plan read; a 409 then
/// retries the pass from fresh caches. Never conditional on the cache as it is
/// now: content built from the snapshot must not replace an entry newer than it.
async fn write_entry(ctx: &Context, job: &ObjectKey, write: &EntryWrite) -> Result<(), Error> {
    let to_value = |v: &_| serde_json::to_value(v).map_err(|e| Error::Other(e.to_string()));
    let new = to_value(&write.entry)?;
    let api = Api::<NodeImage>::all(ctx.client.clone());
    let params = PatchParams::default();
    let action = format!("updating NodeImage {}", write.node);
    let mut written = None;
    let has_images = write.base.is_some() || write.base_has_images;
    if has_images {
        use json_patch::{AddOperation, PatchOperation, TestOperation};
        // Image names hold `/` (and may hold `~`): the pointer escapes them.
        let path = json_patch::jsonptr::PointerBuf::from_tokens(["spec", "images", write.image.as_str()]);
        let base = match &write.base {
            Some(base) => to_value(base)?,
            None => serde_json::Value::Null,
        };
        let patch = json_patch::Patch(vec![
            PatchOperation::Test(TestOperation {
                path: path.clone(),
                value: base,
            }),
            PatchOperation::Add(AddOperation {
                path,
                value: new.clone(),
            }),
        ]);
        match api.patch(&write.node, &params, &Patch::Json::<()>(patch)).await {
            Ok(object) => written = Some(object),
            Err(e) if is_status(&e, 422) => {}
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(Error::api(action)(e)),
        }
    }
    let written = match written {
        Some(object) => object,
        None => {
            let entry = match &write.base {
                Some(base) => merge_diff(&to_value(base)?, &new).unwrap_or(new),
                None => new,
            };
            let patch = json!({
                "metadata": {"resourceVersion": write.base_resource_version},
                "spec": {"images": {&write.image: entry}},
            });
            match api.patch(&write.node, &params, &Patch::Merge(&patch)).await {
                Ok(object) => object,
                Err(e) if is_status(&e, 404) => return Ok(()),
                Err(e) => return Err(Error::api(action)(e)),
            }
        }
    };
    ctx.world.pending_writes.expect(
        &job.to_string(),
        &write.node,
        written.metadata.resource_version.as_deref(),
    );
    Ok(())
}
