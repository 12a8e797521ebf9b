//! The controller's decisions, as plain functions of (desired, observed, now)
//! returning what to write. No client, no I/O: the reconcilers in
//! `reconcile/` read the caches, call these, and apply the result.

pub mod advanced_cron_job;
pub mod entry_writes;
pub mod excluded;
pub mod image_list_pull_job;
pub mod image_pull_job;
pub mod job_nodes;
pub mod node_image;
pub mod secrets;
pub mod selection;
pub mod tag_policy;
pub mod unmatched;
pub mod workload;
