//! prewarm's controller: NodeImage lifecycle and ImagePullJob reconcile.
//!
//! `plan/` holds the pure decisions; `world` the caches and their indexes
//! (NodeImages as `cached_node_image`, their entries shared via `interned`);
//! `reconcile/` the thin kube edge that reads the caches, calls a planner and
//! applies its actions; `leader` the Lease; `admin` health and metrics.

pub mod admin;
pub mod api_writes;
pub mod cached_node_image;
pub mod changes;
pub mod crews;
pub mod index;
pub mod interned;
pub mod leader;
pub mod patch;
pub mod plan;
pub mod progress;
pub mod queue;
pub mod reconcile;
pub mod trim;
pub mod world;
