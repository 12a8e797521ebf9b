//! The CustomResourceDefinitions, generated from the types: both versions served,
//! v1beta1 stored, conversion `None` (the schemas share every field).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::crd::{MergeError, merge_crds};
use serde_json::{Value, json};

use crate::{v1alpha1, v1beta1};

/// The version the API server stores, and the one prewarm's components use.
pub const STORAGE_VERSION: &str = "v1beta1";

/// The four CRDs with the file names they are checked in under `manifests/crds/`.
pub fn all() -> Result<Vec<(&'static str, CustomResourceDefinition)>, MergeError> {
    Ok(vec![
        (
            "apps.kruise.io_imagepulljobs.yaml",
            like_openkruise(merge_crds(
                vec![v1alpha1::ImagePullJob::crd(), v1beta1::ImagePullJob::crd()],
                STORAGE_VERSION,
            )?),
        ),
        (
            "apps.kruise.io_imagelistpulljobs.yaml",
            like_openkruise(merge_crds(
                vec![v1alpha1::ImageListPullJob::crd(), v1beta1::ImageListPullJob::crd()],
                STORAGE_VERSION,
            )?),
        ),
        (
            "apps.kruise.io_advancedcronjobs.yaml",
            like_openkruise(merge_crds(
                vec![v1alpha1::AdvancedCronJob::crd(), v1beta1::AdvancedCronJob::crd()],
                STORAGE_VERSION,
            )?),
        ),
        (
            "apps.kruise.io_nodeimages.yaml",
            like_openkruise(merge_crds(
                vec![v1alpha1::NodeImage::crd(), v1beta1::NodeImage::crd()],
                STORAGE_VERSION,
            )?),
        ),
    ])
}

/// Makes the generated schemas match OpenKruise's field for field:
/// - no `nullable` (schemars marks every `Option` so): a real API server would
///   store explicit nulls OpenKruise prunes, and it drops nullable fields' types
///   from the published OpenAPI v2, so older `kubectl explain` shows no sub-fields;
/// - no root `required: [spec]`: OpenKruise's CRDs do not require it (the
///   webhook reports a job without one, and a NodeImage without one is empty);
/// - `apiVersion`, `kind` and `metadata` declared at the root, as controller-gen does.
fn like_openkruise(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    if let Some(versions) = value.pointer_mut("/spec/versions").and_then(Value::as_array_mut) {
        for version in versions {
            let Some(root) = version.pointer_mut("/schema/openAPIV3Schema") else {
                continue;
            };
            drop_nullable(root);
            if let Some(root) = root.as_object_mut() {
                root.remove("required");
                if let Some(properties) = root.get_mut("properties").and_then(Value::as_object_mut) {
                    for (name, schema) in root_properties() {
                        properties.entry(name).or_insert(schema);
                    }
                }
            }
        }
    }
    serde_json::from_value(value).unwrap_or(crd)
}

fn drop_nullable(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("nullable");
            map.values_mut().for_each(drop_nullable);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nullable),
        _ => {}
    }
}

fn root_properties() -> [(&'static str, Value); 3] {
    [
        (
            "apiVersion",
            json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"}),
        ),
        (
            "kind",
            json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"}),
        ),
        ("metadata", json!({"type": "object"})),
    ]
}

/// Where the CRDs live in the repository, and the command that writes them.
pub const CHECKED_IN_DIR: &str = "manifests/crds";
pub const REGENERATE_COMMAND: &str = "cargo run -p prewarm-api --bin crdgen";

/// Renders one CRD as the YAML file checked in under [`CHECKED_IN_DIR`].
pub fn render(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    let body = serde_saphyr::to_string(crd)?;
    Ok(format!(
        "# Generated from the prewarm-api types by `{REGENERATE_COMMAND}`. Do not edit.\n{body}"
    ))
}
