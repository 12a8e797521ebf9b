//! The root types of the three kinds, stamped out once per API version: the
//! versions share every field (NodeImage `pullSecrets[].mode` aside, which each
//! version module supplies through its own `ReferenceObject`).

/// ImagePullJob and ImageListPullJob specs: a leading field plus the shared template.
macro_rules! job_spec {
    (
        $(#[$meta:meta])*
        $name:ident { $(#[$field_meta:meta])* $field:ident : $ty:ty }
    ) => {
        #[derive(kube::CustomResource, serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
        $(#[$meta])*
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            $(#[$field_meta])*
            pub $field: $ty,
            /// Names of Secrets in the job's namespace used to pull from private
            /// registries. Immutable on ImagePullJob.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub pull_secrets: Option<Vec<String>>,
            /// The nodes to pull on, by names or by labels. Unset means all nodes.
            /// Mutually exclusive with podSelector.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub selector: Option<$crate::job::NodeSelector>,
            /// Pull on the nodes running the matching pods of this namespace.
            /// Mutually exclusive with selector.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub pod_selector: Option<$crate::job::PodSelector>,
            /// Most nodes pulling at the same time: an integer (0 pauses the job)
            /// or a percentage of the targeted nodes such as "25%". Unset means 1.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub parallelism: Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
            /// Per-node timeout and retries.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub pull_policy: Option<$crate::job::PullPolicy>,
            /// When the job ends and is cleaned up.
            #[serde(skip_serializing_if = "Option::is_none")]
            #[schemars(required)]
            pub completion_policy: Option<$crate::job::CompletionPolicy>,
            /// Labels and annotations passed to the container runtime with each pull.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub sandbox_config: Option<$crate::job::SandboxConfig>,
            /// Always pulls even when the node has the image; IfNotPresent (the
            /// default) skips nodes that have it.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub image_pull_policy: Option<String>,
        }

        impl $name {
            /// The fields shared by both job kinds. Every field is named, so a
            /// field added above does not compile until it is placed here too.
            pub fn template(&self) -> $crate::job::TemplateRef<'_> {
                let Self {
                    $field: _,
                    pull_secrets,
                    selector,
                    pod_selector,
                    parallelism,
                    pull_policy,
                    completion_policy,
                    sandbox_config,
                    image_pull_policy,
                } = self;
                $crate::job::TemplateRef {
                    pull_secrets: pull_secrets.as_ref(),
                    selector: selector.as_ref(),
                    pod_selector: pod_selector.as_ref(),
                    parallelism: parallelism.as_ref(),
                    pull_policy: pull_policy.as_ref(),
                    completion_policy: completion_policy.as_ref(),
                    sandbox_config: sandbox_config.as_ref(),
                    image_pull_policy: image_pull_policy.as_deref(),
                }
            }
        }
    };
}

macro_rules! api_version {
    ($version:tt, image_pull_job_columns: [$($column:tt),*]) => {
        $crate::kinds::job_spec! {
            /// Pulls one image on a set of nodes.
            #[kube(
                group = "apps.kruise.io",
                version = $version,
                kind = "ImagePullJob",
                namespaced,
                status = "crate::job::ImagePullJobStatus",
                doc = "ImagePullJob pulls one image on a set of nodes ahead of the pods that need it.",
                derive = "PartialEq",
                $(printcolumn = $column,)*
            )]
            ImagePullJobSpec {
                /// The image to pull, such as nginx:1.9.1 or a name@sha256 digest.
                image: String
            }
        }

        $crate::kinds::job_spec! {
            /// Pulls several images on a set of nodes, one ImagePullJob per image.
            #[kube(
                group = "apps.kruise.io",
                version = $version,
                kind = "ImageListPullJob",
                namespaced,
                status = "crate::job::ImageListPullJobStatus",
                doc = "ImageListPullJob pulls a list of images on a set of nodes, through one ImagePullJob per image.",
                derive = "PartialEq",
                printcolumn = r#"{"name":"TOTAL","type":"integer","description":"Number of images","jsonPath":".status.desired"}"#,
                printcolumn = r#"{"name":"SUCCEEDED","type":"integer","description":"Images pulled on every node","jsonPath":".status.succeeded"}"#,
                printcolumn = r#"{"name":"COMPLETED","type":"integer","description":"Images whose job has finished","jsonPath":".status.completed"}"#,
                printcolumn = r#"{"name":"AGE","type":"date","description":"Time since creation","jsonPath":".metadata.creationTimestamp"}"#,
            )]
            ImageListPullJobSpec {
                /// The images to pull, 1 to 255 distinct references.
                images: Vec<String>
            }
        }

        /// Creates an ImageListPullJob on a cron schedule: OpenKruise's
        /// AdvancedCronJob, of which prewarm runs `imageListPullJobTemplate`.
        #[derive(kube::CustomResource, serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
        #[kube(
            group = "apps.kruise.io",
            version = $version,
            kind = "AdvancedCronJob",
            namespaced,
            status = "crate::cron_job::AdvancedCronJobStatus",
            shortname = "acj",
            doc = "AdvancedCronJob creates ImageListPullJobs on a cron schedule (OpenKruise's kind; prewarm runs its imageListPullJobTemplate).",
            derive = "PartialEq",
            printcolumn = r#"{"name":"Schedule","type":"string","description":"The schedule of advanced cron job.","jsonPath":".spec.schedule"}"#,
            printcolumn = r#"{"name":"Type","type":"string","description":"Type of cron job.","jsonPath":".status.type"}"#,
            printcolumn = r#"{"name":"LastScheduleTime","type":"date","description":"The last time at which job was scheduled.","jsonPath":".status.lastScheduleTime"}"#,
            printcolumn = r#"{"name":"AGE","type":"date","description":"Time since creation","jsonPath":".metadata.creationTimestamp"}"#,
        )]
        #[serde(rename_all = "camelCase")]
        pub struct AdvancedCronJobSpec {
            /// When to create a job: five cron fields (minute hour day-of-month
            /// month day-of-week) or a macro such as @daily.
            pub schedule: String,
            /// The IANA zone the schedule is read in, such as Europe/Berlin. Unset means UTC.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub time_zone: Option<String>,
            /// How late a missed run may still start; later, it is skipped.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub starting_deadline_seconds: Option<i64>,
            /// Allow, Forbid (skip a run while the last one is active) or Replace
            /// (delete the active one first; the default for ImageListPullJobs).
            #[serde(skip_serializing_if = "Option::is_none")]
            #[schemars(extend("enum" = ["Allow", "Forbid", "Replace"]))]
            pub concurrency_policy: Option<String>,
            /// True stops new runs; running ones continue.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub paused: Option<bool>,
            /// Finished jobs kept that pulled everywhere (default 3).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub successful_jobs_history_limit: Option<i32>,
            /// Finished jobs kept that failed somewhere (default 1).
            #[serde(skip_serializing_if = "Option::is_none")]
            pub failed_jobs_history_limit: Option<i32>,
            /// What each run creates.
            pub template: CronJobTemplate,
        }

        /// The job each run creates: prewarm runs only imageListPullJobTemplate.
        #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct CronJobTemplate {
            /// OpenKruise's batch Job template; refused by prewarm, which runs image pre-warming only.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(schema_with = "crate::cron_job::opaque_object")]
            pub job_template: Option<serde_json::Map<String, serde_json::Value>>,
            /// OpenKruise's BroadcastJob template; refused by prewarm, which runs image pre-warming only.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(schema_with = "crate::cron_job::opaque_object")]
            pub broadcast_job_template: Option<serde_json::Map<String, serde_json::Value>>,
            /// The ImageListPullJob each run creates.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub image_list_pull_job_template: Option<ImageListPullJobTemplateSpec>,
        }

        /// An ImageListPullJob's labels, annotations and spec.
        #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct ImageListPullJobTemplateSpec {
            /// Labels and annotations of the jobs created from this template.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub metadata: Option<$crate::cron_job::TemplateMetadata>,
            /// The spec of each ImageListPullJob.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub spec: Option<ImageListPullJobSpec>,
        }

        /// The images one node should hold: one NodeImage per Node, named after it.
        #[derive(kube::CustomResource, serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
        #[kube(
            group = "apps.kruise.io",
            version = $version,
            kind = "NodeImage",
            status = "crate::node_image::NodeImageStatus",
            doc = "NodeImage lists the images to pull on the node of the same name, and reports the pulls.",
            derive = "PartialEq",
            derive = "Default",
            printcolumn = r#"{"name":"DESIRED","type":"integer","description":"Number of image tags to pull","jsonPath":".status.desired"}"#,
            printcolumn = r#"{"name":"PULLING","type":"integer","description":"Tags being pulled","jsonPath":".status.pulling"}"#,
            printcolumn = r#"{"name":"SUCCEED","type":"integer","description":"Tags pulled","jsonPath":".status.succeeded"}"#,
            printcolumn = r#"{"name":"FAILED","type":"integer","description":"Tags that failed","jsonPath":".status.failed"}"#,
            printcolumn = r#"{"name":"AGE","type":"date","description":"Time since creation","jsonPath":".metadata.creationTimestamp"}"#,
        )]
        #[serde(rename_all = "camelCase")]
        pub struct NodeImageSpec {
            /// Images to pull, keyed by image name without tag (nginx,
            /// myregistry:5000/team/app). At most 256.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub images: Option<std::collections::BTreeMap<String, ImageSpec>>,
        }

        /// The tags of one image to pull on the node, and how.
        #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct ImageSpec {
            /// Secrets to pull with, tried in order.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub pull_secrets: Option<Vec<ReferenceObject>>,
            /// The tags (or digests) to pull.
            pub tags: Vec<$crate::node_image::ImageTagSpec>,
            /// Labels and annotations passed to the container runtime with each pull.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub sandbox_config: Option<$crate::job::SandboxConfig>,
        }
    };
}

pub(crate) use {api_version, job_spec};
