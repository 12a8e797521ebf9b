//! The controller's copy of a NodeImage: the same fields and JSON as
//! `v1beta1::NodeImage`, with the image entries of spec and status shared
//! between all NodeImages that hold equal ones (`interned`). Nothing of spec
//! and status is dropped, so patches computed from it are as from the object
//! itself (the watch trims metadata it never reads: annotations and managed
//! fields, see `trim`). A test fills every field the CRD's schema has and
//! checks that the copy keeps it, so a field added to the API is not lost here.

use std::borrow::Cow;

use k8s_openapi::ClusterResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use prewarm_api::node_image::{ImageStatus, SyncStatus};
use prewarm_api::v1beta1::{ImageSpec, NodeImage};
use serde::{Deserialize, Serialize};

use crate::interned::SharedMap;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CachedNodeImage {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: CachedNodeImageSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CachedNodeImageStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedNodeImageSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<SharedMap<ImageSpec>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedNodeImageStatus {
    #[serde(default)]
    pub desired: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulling: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_statuses: Option<SharedMap<ImageStatus>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_sync_status: Option<SyncStatus>,
}

impl Resource for CachedNodeImage {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        NodeImage::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        NodeImage::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        NodeImage::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        NodeImage::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// A value with every field `schema` (a CRD's structural schema) has set.
    fn every_field(schema: &Value) -> Value {
        if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
            return json!(1);
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => {
                let mut object = serde_json::Map::new();
                for (name, property) in schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    object.insert(name.clone(), every_field(property));
                }
                if let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    object.insert("key".to_owned(), every_field(values));
                }
                Value::Object(object)
            }
            Some("array") => json!([every_field(&schema["items"])]),
            Some("integer") => json!(1),
            Some("number") => json!(1.5),
            Some("boolean") => json!(true),
            _ => match (schema.get("enum"), schema.get("format").and_then(Value::as_str)) {
                (Some(values), _) => values[0].clone(),
                (None, Some("date-time")) => json!("2026-11-29T10:00:00Z"),
                _ => json!("x"),
            },
        }
    }

    /// Every field of the NodeImage CRD's spec and status, set, survives the
    /// copy: a field added to the API and not here fails this.
    #[test]
    fn keeps_every_field_the_crd_has() -> Result<(), Box<dyn std::error::Error>> {
        let crds = prewarm_api::crd::all()?;
        let (_, crd) = crds
            .iter()
            .find(|(_, crd)| crd.spec.names.kind == "NodeImage")
            .ok_or("no NodeImage CRD")?;
        let version = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == "v1beta1")
            .ok_or("no v1beta1")?;
        let schema = serde_json::to_value(&version.schema.as_ref().ok_or("no schema")?.open_api_v3_schema)?;
        let mut object = every_field(&schema);
        object["apiVersion"] = json!("apps.kruise.io/v1beta1");
        object["kind"] = json!("NodeImage");
        object["metadata"] = json!({"name": "n1"});
        assert!(
            object["status"]["imageStatuses"]["key"]["tags"][0]["imageID"].is_string(),
            "{object:#}"
        );
        let cached: CachedNodeImage = serde_json::from_value(object.clone())?;
        assert_eq!(serde_json::to_value(&cached.spec)?, object["spec"]);
        assert_eq!(serde_json::to_value(&cached.status)?, object["status"]);
        // The typed NodeImage keeps it all too: the two read the same JSON.
        let full: NodeImage = serde_json::from_value(object.clone())?;
        assert_eq!(serde_json::to_value(&full.spec)?, object["spec"]);
        Ok(())
    }

    #[test]
    fn reads_and_writes_the_same_json_as_node_image() -> Result<(), serde_json::Error> {
        let object = json!({
            "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage",
            "metadata": {"name": "n1", "resourceVersion": "7", "labels": {"zone": "a"}},
            "spec": {"images": {"nginx": {
                "pullSecrets": [{"namespace": "ns", "name": "s"}],
                "sandboxConfig": {"labels": {"a": "b"}},
                "tags": [{"tag": "1", "version": 2, "createdAt": "2026-11-29T10:00:00Z",
                          "pullPolicy": {"ttlSecondsAfterFinished": 300},
                          "ownerReferences": [{"uid": "u", "name": "job", "namespace": "ns"}]}]}}},
            "status": {"desired": 1, "succeeded": 1, "failed": 0, "pulling": 0,
                       "imageStatuses": {"nginx": {"tags": [{"tag": "1", "phase": "Succeeded", "version": 2,
                          "imageID": "nginx@sha256:00", "completionTime": "2026-11-29T10:00:05Z"}]}}}
        });
        let full: NodeImage = serde_json::from_value(object.clone())?;
        let cached: CachedNodeImage = serde_json::from_value(object)?;
        assert_eq!(serde_json::to_value(&cached.spec)?, serde_json::to_value(&full.spec)?);
        assert_eq!(
            serde_json::to_value(&cached.status)?,
            serde_json::to_value(&full.status)?
        );
        assert_eq!(cached.metadata, full.metadata);

        let without_spec: CachedNodeImage = serde_json::from_value(json!({"metadata": {"name": "n2"}}))?;
        assert!(without_spec.spec.images.is_none() && without_spec.status.is_none());
        assert_eq!(CachedNodeImage::plural(&()), "nodeimages");
        assert_eq!(CachedNodeImage::api_version(&()), "apps.kruise.io/v1beta1");
        Ok(())
    }
}
