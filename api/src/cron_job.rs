//! What the AdvancedCronJob kind shares between its versions: its status, the
//! metadata of its template, and the names OpenKruise gives its parts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation on each created job: the schedule time it runs for (RFC 3339).
pub const SCHEDULED_AT_ANNOTATION: &str = "apps.kruise.io/scheduled-at";

pub const CONCURRENCY_ALLOW: &str = "Allow";
pub const CONCURRENCY_FORBID: &str = "Forbid";
pub const CONCURRENCY_REPLACE: &str = "Replace";
pub const CONCURRENCY_POLICIES: [&str; 3] = [CONCURRENCY_ALLOW, CONCURRENCY_FORBID, CONCURRENCY_REPLACE];

/// `status.type` of a cron job that creates ImageListPullJobs.
pub const TYPE_IMAGE_LIST_PULL_JOB: &str = "ImageListPullJob";

pub const DEFAULT_SUCCESSFUL_JOBS_HISTORY_LIMIT: i32 = 3;
pub const DEFAULT_FAILED_JOBS_HISTORY_LIMIT: i32 = 1;

/// Labels and annotations copied onto every job a template creates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct TemplateMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedCronJobStatus {
    /// The kind of job the template creates: ImageListPullJob.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// The jobs created by this cron job that have not finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<Vec<ObjectReference>>,
    /// The schedule time of the last job created.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
}

/// An object the schema leaves open: OpenKruise's other templates, which the
/// API server must keep whole so the webhook can refuse them by name.
pub fn opaque_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
