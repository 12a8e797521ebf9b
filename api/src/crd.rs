//! The CustomResourceDefinitions, generated from the types: both versions served,
//! v1beta1 stored, conversion `None` (the schemas share every field).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::core::crd::{MergeError, merge_crds};

use crate::{v1alpha1, v1beta1};

/// The version the API server stores, and the one prewarm's components use.
pub const STORAGE_VERSION: &str = "v1beta1";

/// The three CRDs with the file names they are checked in under `manifests/crds/`.
pub fn all() -> Result<Vec<(&'static str, CustomResourceDefinition)>, MergeError> {
    Ok(vec![
        (
            "apps.kruise.io_imagepulljobs.yaml",
            merge_crds(
                vec![v1alpha1::ImagePullJob::crd(), v1beta1::ImagePullJob::crd()],
                STORAGE_VERSION,
            )?,
        ),
        (
            "apps.kruise.io_imagelistpulljobs.yaml",
            merge_crds(
                vec![v1alpha1::ImageListPullJob::crd(), v1beta1::ImageListPullJob::crd()],
                STORAGE_VERSION,
            )?,
        ),
        (
            "apps.kruise.io_nodeimages.yaml",
            merge_crds(
                vec![v1alpha1::NodeImage::crd(), v1beta1::NodeImage::crd()],
                STORAGE_VERSION,
            )?,
        ),
    ])
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
