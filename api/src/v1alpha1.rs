//! `apps.kruise.io/v1alpha1`: served for compatibility; stored as v1beta1.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::job::*;
pub use crate::node_image::*;

crate::kinds::api_version!("v1alpha1", image_pull_job_columns: [
    r#"{"name":"TOTAL","type":"integer","description":"Number of nodes the job targets","jsonPath":".status.desired"}"#,
    r#"{"name":"ACTIVE","type":"integer","description":"Nodes still pulling","jsonPath":".status.active"}"#,
    r#"{"name":"SUCCEED","type":"integer","description":"Nodes that pulled the image","jsonPath":".status.succeeded"}"#,
    r#"{"name":"FAILED","type":"integer","description":"Nodes that failed","jsonPath":".status.failed"}"#,
    r#"{"name":"AGE","type":"date","description":"Time since creation","jsonPath":".metadata.creationTimestamp"}"#,
    r#"{"name":"MESSAGE","type":"string","description":"Progress of the job","jsonPath":".status.message"}"#
]);

/// A Secret to pull with.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ReferenceObject {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}
