//! NodeImage parts identical in both API versions: tags, their pull policy and status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// At most this many image names in one NodeImage.
pub const MAX_IMAGES: usize = 256;

/// One tag (or digest) of an image to pull on the node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagSpec {
    /// The tag, or the digest (`sha256:…`) of a pinned image.
    pub tag: String,
    /// When the tag was added; set by the webhook. Tags without it are removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// How the node pulls this tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<ImageTagPullPolicy>,
    /// The ImagePullJobs that asked for this tag; the tag goes when they are all gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_references: Option<Vec<ObjectReference>>,
    /// Incremented to start a new pull round. Must not be negative.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Always or IfNotPresent; empty behaves like Always.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

/// Pull policy of one NodeImage tag.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagPullPolicy {
    /// Timeout of a single pull attempt, in seconds. Defaults to 600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Retries after a failed attempt. Defaults to 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    /// Seconds after the pull finished at which the tag is removed. Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Deadline for all attempts together, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
}

/// Observed pulls on the node, written by the node agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeImageStatus {
    /// Number of (image, tag) pairs in the spec.
    pub desired: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pulling: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<i32>,
    /// Per image name, the state of each tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_statuses: Option<BTreeMap<String, ImageStatus>>,
    /// Declared for compatibility with OpenKruise; not written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_sync_status: Option<SyncStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageStatus {
    pub tags: Vec<ImageTagStatus>,
}

/// The state of one tag's pull on the node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageTagStatus {
    pub tag: String,
    /// Waiting, Pulling, Succeeded or Failed.
    pub phase: String,
    /// Percent done, 0 to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// The spec version this state belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// `<name>@<runtime image id>` once pulled.
    #[serde(rename = "imageID", skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_at: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
