//! Applies a job's pull-secret plan: copies made, refreshed, released.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use prewarm_api::v1beta1::SECRET_MODE_BATCH;
use serde_json::json;

use super::{Context, Error, is_status};
use crate::plan::secrets::{
    self, JobSecrets, MANAGED_BY, MODE, PULL_SECRET_TYPES, REFERENCES, SOURCE_KEY, SOURCE_UID, SOURCE_VERSION,
    SecretAction, SecretPlan, SourceFacts,
};

/// A job's pull secrets as applied: the plan, with the refs of copies this pass
/// made or refreshed moved into `refs`, and the sources refused for their type.
#[derive(Debug, Default)]
pub struct Synced {
    pub plan: SecretPlan,
    /// `(name, type)` of pull secrets that are not registry credentials.
    pub refused: Vec<(String, String)>,
}

/// Plans and applies the job's secret copies.
pub async fn sync(ctx: &Context, job: JobSecrets<'_>) -> Result<Synced, Error> {
    let agent_namespace = ctx.settings.agent_namespace.as_str();
    let copy_names = ctx.world.index().secret_copies_in(agent_namespace);
    let copies: Vec<ObjectMeta> = copy_names
        .iter()
        .filter_map(|name| ctx.world.secret(agent_namespace, name))
        .filter(|s| secrets::is_copy(&s.metadata))
        .map(|s| s.metadata.clone())
        .collect();
    let copy_refs: Vec<&ObjectMeta> = copies.iter().collect();
    let facts = |namespace: &str, name: &str| {
        let meta = ctx.world.secret(namespace, name)?;
        Some(SourceFacts {
            uid: meta.metadata.uid.clone()?,
            resource_version: meta.metadata.resource_version.clone()?,
        })
    };
    let mut plan = secrets::plan(job, agent_namespace, &copy_refs, &facts);
    let copy_version = |name: &str| {
        copies
            .iter()
            .find(|c| c.name.as_deref() == Some(name))
            .and_then(|c| c.resource_version.clone())
    };
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), agent_namespace);
    let mut synced = Synced::default();
    let mut written: Vec<&str> = Vec::new();
    for action in &plan.actions {
        match action {
            SecretAction::Create {
                source_namespace,
                source_name,
                copy,
                references,
            } => {
                let Some(source) = read_source(ctx, source_namespace, source_name, &mut synced).await? else {
                    continue;
                };
                let copy_secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(copy.clone()),
                        namespace: Some(agent_namespace.to_owned()),
                        labels: Some(BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())])),
                        annotations: Some(copy_annotations(&source, references, SECRET_MODE_BATCH)),
                        ..Default::default()
                    },
                    type_: Some(source.type_.to_owned()),
                    data: Some(source.data.clone()),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &copy_secret).await {
                    Ok(_) => written.push(copy),
                    // Made by an earlier pass the cache has not shown yet: the
                    // next pass confirms it from the cache before naming it.
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
                refresh_from: None,
            } => {
                let patch = json!({"metadata": {
                    "resourceVersion": copy_version(copy),
                    "annotations": {REFERENCES: references},
                }});
                api.patch(copy, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(Error::api(format!(
                        "updating pull secret copy {agent_namespace}/{copy}"
                    )))?;
            }
            SecretAction::Update {
                copy,
                references,
                refresh_from: Some((namespace, name)),
            } => {
                let Some(source) = read_source(ctx, namespace, name, &mut synced).await? else {
                    continue;
                };
                let mode = copies
                    .iter()
                    .find(|c| c.name.as_deref() == Some(copy))
                    .and_then(|c| c.annotations.as_ref()?.get(MODE).cloned())
                    .unwrap_or_else(|| SECRET_MODE_BATCH.to_owned());
                // Data, labels and annotations replaced whole: a copy keeps
                // nothing of an earlier source, nor what older versions copied.
                let operations = json!([
                    {"op": "test", "path": "/metadata/resourceVersion", "value": copy_version(copy)},
                    {"op": "add", "path": "/metadata/labels", "value": {MANAGED_BY.0: MANAGED_BY.1}},
                    {"op": "add", "path": "/metadata/annotations", "value": copy_annotations(&source, references, &mode)},
                    {"op": "add", "path": "/data", "value": source.data},
                ]);
                let patch: json_patch::Patch =
                    serde_json::from_value(operations).map_err(|e| Error::Other(e.to_string()))?;
                match api
                    .patch(copy, &PatchParams::default(), &Patch::Json::<()>(patch))
                    .await
                {
                    Ok(_) => written.push(copy),
                    // The copy changed since the cache saw it: the next pass looks again.
                    Err(e) if is_status(&e, 422) => {
                        return Err(Error::Other(format!(
                            "pull secret copy {agent_namespace}/{copy} changed while it was refreshed; retrying"
                        )));
                    }
                    Err(e) => {
                        return Err(Error::api(format!(
                            "refreshing pull secret copy {agent_namespace}/{copy}"
                        ))(e));
                    }
                }
            }
            SecretAction::Delete { copy } => {
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: copy_version(copy),
                        uid: None,
                    }),
                    ..Default::default()
                };
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
    let after_write = std::mem::take(&mut plan.refs_after_write);
    plan.refs.extend(
        after_write
            .into_iter()
            .filter(|r| r.name.as_deref().is_some_and(|n| written.contains(&n))),
    );
    synced.plan = plan;
    Ok(synced)
}

/// What a copy holds of its source: the registry credentials alone.
#[derive(Debug)]
struct Source {
    namespace: String,
    name: String,
    uid: String,
    resource_version: String,
    type_: &'static str,
    data: BTreeMap<String, ByteString>,
}

fn copy_annotations(source: &Source, references: &str, mode: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (REFERENCES.to_owned(), references.to_owned()),
        (SOURCE_KEY.to_owned(), format!("{}/{}", source.namespace, source.name)),
        (MODE.to_owned(), mode.to_owned()),
        (SOURCE_VERSION.to_owned(), source.resource_version.clone()),
        (SOURCE_UID.to_owned(), source.uid.clone()),
    ])
}

/// Reads a source secret (the caches never hold data). A Secret that is not
/// registry credentials is refused (noted in `synced.refused`) and never copied:
/// a user who may create jobs must not have, say, a service-account token
/// copied where every node agent reads.
async fn read_source(ctx: &Context, namespace: &str, name: &str, synced: &mut Synced) -> Result<Option<Source>, Error> {
    let Some(secret) = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::api(format!("reading pull secret {namespace}/{name}")))?
    else {
        return Ok(None);
    };
    let type_ = secret.type_.as_deref();
    let Some(key) = secrets::pull_secret_key(type_) else {
        synced
            .refused
            .push((name.to_owned(), type_.unwrap_or("Opaque").to_owned()));
        return Ok(None);
    };
    let mut data = secret.data.unwrap_or_default();
    let credentials = data.remove(key).unwrap_or_else(|| ByteString(Vec::new()));
    let type_ = PULL_SECRET_TYPES
        .iter()
        .find(|(_, k)| *k == key)
        .map_or("", |(t, _)| *t);
    Ok(Some(Source {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: secret.metadata.uid.unwrap_or_default(),
        resource_version: secret.metadata.resource_version.unwrap_or_default(),
        type_,
        data: BTreeMap::from([(key.to_owned(), credentials)]),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::secrets::COPY_ANNOTATIONS;
    use std::collections::BTreeSet;

    /// The Secret cache keeps only `COPY_ANNOTATIONS`: a copy's annotation
    /// missing there would be dropped from the cache and never read.
    #[test]
    fn the_secret_cache_keeps_every_annotation_a_copy_is_written_with() {
        let source = Source {
            namespace: "team".into(),
            name: "regcred".into(),
            uid: "u1".into(),
            resource_version: "1".into(),
            type_: PULL_SECRET_TYPES[0].0,
            data: BTreeMap::new(),
        };
        let written: BTreeSet<String> = copy_annotations(&source, "team/job", SECRET_MODE_BATCH)
            .into_keys()
            .collect();
        let kept: BTreeSet<String> = COPY_ANNOTATIONS.iter().map(|k| (*k).to_owned()).collect();
        assert_eq!(written, kept);
    }
}
