//! NodeImage reconcile: create, delete, labels, owner and TTL pruning, and
//! failing tags the node never answered for.

use std::time::Duration;

use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Api, Resource};
use prewarm_api::v1beta1::NodeImage;
use serde_json::{Value, json};

use super::{Context, Error, is_status, now};
use crate::cached_node_image::CachedNodeImage;
use crate::index::ObjectKey;
use crate::patch::merge_diff;
use crate::plan::node_image::{self, Input, NodeFacts, OwnerFacts, Plan};
use crate::plan::tag_policy::is_never;
use crate::world::ready_since;

fn node_image_expectation(name: &str) -> String {
    format!("nodeimage/{name}")
}

pub async fn reconcile(ctx: &Context, name: String) -> Result<Option<Duration>, Error> {
    let world = &ctx.world;
    let node_image = world.node_image(&name);
    if let Some(current) = &node_image
        && !world.expectations.satisfied(
            &node_image_expectation(&name),
            current.metadata.resource_version.as_deref(),
        )
    {
        return Ok(Some(Duration::from_millis(200)));
    }
    let node = world.node(&name).filter(|n| n.metadata.deletion_timestamp.is_none());
    let owner = |namespace: &str, job: &str| {
        world.job(&ObjectKey::new(namespace, job)).map(|j| OwnerFacts {
            uid: j.metadata.uid.clone().unwrap_or_default(),
            deleting: j.metadata.deletion_timestamp.is_some(),
            running_always: !is_never(&j.spec) && crate::index::is_active(&j),
        })
    };
    let secret_exists = |namespace: &str, secret: &str| world.secret(namespace, secret).is_some();
    let copy_source = |namespace: &str, secret: &str| {
        let copy = world.secret(namespace, secret)?;
        let source = copy
            .metadata
            .annotations
            .as_ref()?
            .get(crate::plan::secrets::SOURCE_KEY)?;
        source
            .split_once('/')
            .map(|(source_namespace, _)| source_namespace.to_owned())
    };
    let plan = node_image::plan(&Input {
        name: &name,
        node: node.as_deref().map(|n| NodeFacts {
            labels: n.metadata.labels.as_ref(),
            ready_since: ready_since(n),
        }),
        node_image: node_image.as_deref(),
        owner: &owner,
        secret_exists: &secret_exists,
        copy_source: &copy_source,
        creation_delay_seconds: ctx.settings.creation_delay_seconds,
        no_response_seconds: ctx.settings.no_response_seconds,
        now: now(),
    });
    let api: Api<NodeImage> = Api::all(ctx.client.clone());
    let seconds = |s: Option<i64>| s.map(|s| Duration::from_secs(s.unsigned_abs()));
    match plan {
        Plan::Nothing { requeue_after } => Ok(seconds(requeue_after)),
        Plan::Create { labels } => {
            let object: NodeImage = serde_json::from_value(json!({
                "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
                "metadata": {"name": name, "labels": labels}, "spec": {},
            }))
            .map_err(|e| Error::Other(e.to_string()))?;
            match api.create(&PostParams::default(), &object).await {
                Ok(_) => Ok(None),
                Err(e) if is_status(&e, 409) => Ok(None),
                Err(e) => Err(Error::api(format!("creating NodeImage {name}"))(e)),
            }
        }
        Plan::Delete => {
            let uid = node_image.and_then(|n| n.metadata.uid.clone());
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid,
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &params).await {
                Ok(_) => Ok(None),
                Err(e) if is_status(&e, 404) => Ok(None),
                Err(e) => Err(Error::api(format!("deleting NodeImage {name} of a removed Node"))(e)),
            }
        }
        Plan::UpdateSpec { labels, spec, reasons } => {
            let Some(current) = node_image else { return Ok(None) };
            let old = json!({"metadata": {"labels": current.metadata.labels}, "spec": current.spec});
            let new = json!({"metadata": {"labels": labels}, "spec": spec});
            tracing::info!(nodeimage = %name, reasons = %reasons.join("; "), "updating NodeImage spec");
            patch(ctx, &api, &current, &old, &new, false).await?;
            Ok(None)
        }
        Plan::UpdateStatus {
            status,
            failures,
            requeue_after,
        } => {
            let Some(current) = node_image else { return Ok(None) };
            let old = json!({"status": current.status});
            let new = json!({"status": status});
            patch(ctx, &api, &current, &old, &new, true).await?;
            let regarding = current.object_ref(&());
            for failure in failures {
                let note = format!(
                    "Failed to pull image {}:{} on node {name} for {}",
                    failure.image, failure.tag, failure.message
                );
                for regarding in failure.owners.iter().chain([&regarding]) {
                    ctx.event(regarding, EventType::Warning, "PullImageFailed", note.clone())
                        .await;
                }
            }
            Ok(seconds(requeue_after))
        }
    }
}

/// A merge patch from `old` to `new` (both `{"metadata": …, "spec"|"status": …}`),
/// conditional on the cached resourceVersion.
async fn patch(
    ctx: &Context,
    api: &Api<NodeImage>,
    current: &CachedNodeImage,
    old: &Value,
    new: &Value,
    status: bool,
) -> Result<(), Error> {
    let Some(mut diff) = merge_diff(old, new) else {
        return Ok(());
    };
    diff["metadata"]["resourceVersion"] = json!(current.metadata.resource_version);
    let name = current.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::default();
    let written = if status {
        api.patch_status(&name, &params, &Patch::Merge(&diff)).await
    } else {
        api.patch(&name, &params, &Patch::Merge(&diff)).await
    }
    .map_err(Error::api(format!("updating NodeImage {name}")))?;
    ctx.world.expectations.expect(
        node_image_expectation(&name),
        written.metadata.resource_version.as_deref(),
    );
    Ok(())
}
