//! prewarm's API: the `apps.kruise.io` kinds ImagePullJob, ImageListPullJob and
//! NodeImage in both versions, image references, defaulting, validation and
//! feature gates. Pure functions only: no clients, no I/O, no async runtime.

pub mod admission;
pub mod caps;
pub mod crd;
pub mod cron;
pub mod cron_job;
pub mod defaults;
pub mod duration;
pub mod field;
pub mod gates;
pub mod job;
mod kinds;
pub mod names;
pub mod node_image;
pub mod node_status;
pub mod reference;
pub mod schema;
pub mod spec;
pub mod text;
pub mod v1alpha1;
pub mod v1beta1;
pub mod validation;

/// The API group of every prewarm kind.
pub const GROUP: &str = "apps.kruise.io";
