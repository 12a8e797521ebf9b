//! Building blocks shared by ImagePullJob and ImageListPullJob, identical in both
//! API versions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelectorRequirement, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `completionPolicy.type`: a one-shot job or one that keeps nodes warm forever.
pub const COMPLETION_ALWAYS: &str = "Always";
pub const COMPLETION_NEVER: &str = "Never";
pub const COMPLETION_TYPES: [&str; 2] = [COMPLETION_ALWAYS, COMPLETION_NEVER];

/// `imagePullPolicy` values the node agent understands.
pub const PULL_ALWAYS: &str = "Always";
pub const PULL_IF_NOT_PRESENT: &str = "IfNotPresent";
pub const IMAGE_PULL_POLICIES: [&str; 2] = [PULL_ALWAYS, PULL_IF_NOT_PRESENT];

/// Nodes to pull on: explicit names, or a label selector on the nodes' labels.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct NodeSelector {
    /// Names of the nodes to pull on. Mutually exclusive with matchLabels and
    /// matchExpressions. An empty list targets no node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Node labels that must all match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Node label requirements that must all match.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// Pods whose nodes should pull the image (pods in the job's namespace).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-map-type" = "atomic"))]
pub struct PodSelector {
    /// Pod labels that must all match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
    /// Pod label requirements that must all match.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

/// How each node pulls: per-attempt timeout and retries.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullPolicy {
    /// Timeout of a single pull attempt, in seconds. Defaults to 600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Retries after a failed attempt (backoffLimit + 1 attempts in all). Defaults to 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
}

/// When the job ends and when it is cleaned up.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompletionPolicy {
    /// Always: the job ends once every node has succeeded or failed. Never: the
    /// job keeps running and pulls again on new nodes and every day. Defaults to Always.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Seconds after status.startTime at which the job is ended (Always only).
    /// Must not be less than pullPolicy.timeoutSeconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// Seconds after completion at which the job is deleted (Always only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// Pod-sandbox metadata passed to the container runtime with every pull.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Observed state of an ImagePullJob.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImagePullJobStatus {
    /// When the controller first handled the job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job finished (completionPolicy Always only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Number of nodes the job targets.
    pub desired: i32,
    /// Nodes still waiting or pulling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<i32>,
    /// Nodes that pulled the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<i32>,
    /// Nodes that failed to pull the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
    /// Progress in words, such as "job is running, progress 50.0%".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Names of the nodes that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_nodes: Option<Vec<String>>,
}

/// Observed state of an ImageListPullJob, aggregated from its ImagePullJobs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageListPullJobStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Number of images.
    pub desired: i32,
    /// Images whose job is still running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<i32>,
    /// Images whose job finished on every node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<i32>,
    /// Images pulled successfully on every node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<i32>,
    /// Images that failed on at least one node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_image_statuses: Option<Vec<FailedImageStatus>>,
}

/// One image of an ImageListPullJob that failed somewhere.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedImageStatus {
    /// The ImagePullJob created for this image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_job: Option<String>,
    /// The image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `parallelism` understood: a node count, or a share of the targeted nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallelism {
    Nodes(u32),
    Percent(u32),
}

impl Parallelism {
    /// What an unset `parallelism` means.
    pub const DEFAULT: Self = Self::Nodes(1);

    /// Reads `10`, `"10"` or `"25%"`; the error says what would be accepted.
    pub fn parse(value: &IntOrString) -> Result<Self, String> {
        const EXPECTED: &str = "must be a non-negative integer, or a percentage of the targeted nodes from 1% to 100%, such as 10 or \"25%\"";
        match value {
            IntOrString::Int(n) => u32::try_from(*n)
                .map(Self::Nodes)
                .map_err(|_| "must be greater than or equal to 0".to_owned()),
            IntOrString::String(s) => match s.strip_suffix('%') {
                Some(percent) => match percent.parse::<u32>() {
                    Ok(p @ 1..=100) => Ok(Self::Percent(p)),
                    _ => Err(EXPECTED.to_owned()),
                },
                None => match s.parse::<i64>() {
                    Ok(n) if n < 0 => Err("must be greater than or equal to 0".to_owned()),
                    // An int32, as OpenKruise reads it: 2147483648 and beyond are refused.
                    Ok(n) => i32::try_from(n)
                        .ok()
                        .and_then(|n| u32::try_from(n).ok())
                        .map(Self::Nodes)
                        .ok_or_else(|| {
                            format!(
                                "must be at most {} (an int32), or a percentage such as \"25%\"",
                                i32::MAX
                            )
                        }),
                    Err(_) => Err(EXPECTED.to_owned()),
                },
            },
        }
    }

    /// How many nodes may pull at once out of `targeted`: percentages round up,
    /// to at least one node.
    pub fn nodes(self, targeted: usize) -> usize {
        match self {
            Self::Nodes(n) => n as usize,
            Self::Percent(p) => (targeted * p as usize).div_ceil(100).max(1),
        }
    }
}

/// The fields ImagePullJob and ImageListPullJob share, borrowed from either spec.
#[derive(Clone, Copy, Debug)]
pub struct TemplateRef<'a> {
    pub pull_secrets: Option<&'a Vec<String>>,
    pub selector: Option<&'a NodeSelector>,
    pub pod_selector: Option<&'a PodSelector>,
    pub parallelism: Option<&'a IntOrString>,
    pub pull_policy: Option<&'a PullPolicy>,
    pub completion_policy: Option<&'a CompletionPolicy>,
    pub sandbox_config: Option<&'a SandboxConfig>,
    pub image_pull_policy: Option<&'a str>,
}
