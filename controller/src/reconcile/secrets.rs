//! Applies a job's pull-secret plan: copies made, refreshed, released.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use prewarm_api::v1beta1::SECRET_MODE_BATCH;
use serde_json::json;

use super::{Context, Error, is_status};
use crate::plan::secrets::{self, JobSecrets, MODE, REFERENCES, SOURCE_KEY, SOURCE_VERSION, SecretAction, SecretPlan};

/// Plans and applies the job's secret copies; returns the plan (its refs and
/// the pull secrets found missing).
pub async fn sync(ctx: &Context, job: JobSecrets<'_>) -> Result<SecretPlan, Error> {
    let agent_namespace = ctx.settings.agent_namespace.as_str();
    let copies: Vec<ObjectMeta> = ctx
        .world
        .secrets
        .state()
        .iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(agent_namespace))
        .filter(|s| {
            s.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(SOURCE_KEY))
        })
        .map(|s| s.metadata.clone())
        .collect();
    let copy_refs: Vec<&ObjectMeta> = copies.iter().collect();
    let version = |namespace: &str, name: &str| {
        ctx.world
            .secret(namespace, name)
            .and_then(|s| s.metadata.resource_version.clone())
    };
    let plan = secrets::plan(job, agent_namespace, &copy_refs, &version);
    let copy_version = |name: &str| {
        copies
            .iter()
            .find(|c| c.name.as_deref() == Some(name))
            .and_then(|c| c.resource_version.clone())
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), agent_namespace);
    for action in &plan.actions {
        match action {
            SecretAction::Create {
                source_namespace,
                source_name,
                copy,
                references,
            } => {
                let Some(source) = read_source(ctx, source_namespace, source_name).await? else {
                    continue;
                };
                let mut annotations = source.metadata.annotations.clone().unwrap_or_default();
                annotations.extend([
                    (REFERENCES.to_owned(), references.clone()),
                    (SOURCE_KEY.to_owned(), format!("{source_namespace}/{source_name}")),
                    (MODE.to_owned(), SECRET_MODE_BATCH.to_owned()),
                    (
                        SOURCE_VERSION.to_owned(),
                        source.metadata.resource_version.clone().unwrap_or_default(),
                    ),
                ]);
                let copy_secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(copy.clone()),
                        namespace: Some(agent_namespace.to_owned()),
                        labels: source.metadata.labels.clone(),
                        annotations: Some(annotations),
                        ..Default::default()
                    },
                    type_: source.type_.clone(),
                    data: source.data.clone(),
                    ..Default::default()
                };
                ctx.metrics.wrote("create", "secrets");
                match api.create(&PostParams::default(), &copy_secret).await {
                    Ok(_) => {}
                    // Made by an earlier pass the cache has not shown yet.
                    Err(e) if is_status(&e, 409) => {}
                    Err(e) if is_status(&e, 404) => {
                        return Err(Error::Other(format!(
                            "copying pull secret {source_namespace}/{source_name}: namespace {agent_namespace:?} (--agent-namespace, where node agents read pull secrets) does not exist"
                        )));
                    }
                    Err(e) => {
                        return Err(Error::api(format!(
                            "creating pull secret copy {agent_namespace}/{copy}"
                        ))(e));
                    }
                }
            }
            SecretAction::Update {
                copy,
                references,
                refresh_from,
            } => {
                let mut annotations = BTreeMap::from([(REFERENCES.to_owned(), json!(references))]);
                let mut patch = json!({"metadata": {"resourceVersion": copy_version(copy)}});
                if let Some((namespace, name)) = refresh_from {
                    let Some(source) = read_source(ctx, namespace, name).await? else {
                        continue;
                    };
                    annotations.insert(SOURCE_VERSION.to_owned(), json!(source.metadata.resource_version));
                    patch["data"] = json!(source.data);
                }
                patch["metadata"]["annotations"] = json!(annotations);
                ctx.metrics.wrote("patch", "secrets");
                api.patch(copy, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(Error::api(format!(
                        "updating pull secret copy {agent_namespace}/{copy}"
                    )))?;
            }
            SecretAction::Delete { copy } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: copy_version(copy),
                        uid: None,
                    }),
                    ..Default::default()
                };
                ctx.metrics.wrote("delete", "secrets");
                match api.delete(copy, &params).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => {
                        return Err(Error::api(format!(
                            "deleting pull secret copy {agent_namespace}/{copy}"
                        ))(e));
                    }
                }
            }
        }
    }
    Ok(plan)
}

/// Reads a source secret's data, which the caches never hold.
async fn read_source(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Secret>, Error> {
    Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::api(format!("reading pull secret {namespace}/{name}")))
}
