//! `apps.kruise.io/v1beta1`: the storage version, and the one prewarm's own
//! components read and write. Every v1alpha1 object is also a valid v1beta1 one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::job::*;
pub use crate::node_image::*;

crate::kinds::api_version!("v1beta1", image_pull_job_columns: [
    r#"{"name":"TOTAL","type":"integer","description":"Number of nodes the job targets","jsonPath":".status.desired"}"#,
    r#"{"name":"ACTIVE","type":"integer","description":"Nodes still pulling","jsonPath":".status.active"}"#,
    r#"{"name":"SUCCEED","type":"integer","description":"Nodes that pulled the image","jsonPath":".status.succeeded"}"#,
    r#"{"name":"FAILED","type":"integer","description":"Nodes that failed","jsonPath":".status.failed"}"#,
    r#"{"name":"AGE","type":"date","description":"Time since creation","jsonPath":".metadata.creationTimestamp"}"#
]);

/// `pullSecrets[].mode` for secrets the controller shares between jobs.
pub const SECRET_MODE_BATCH: &str = "batch";

/// A Secret to pull with.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct ReferenceObject {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `batch` for secrets the controller copied and shares between jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}
