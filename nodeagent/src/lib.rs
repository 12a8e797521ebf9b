//! prewarm's node agent: pulls images through the node's container runtime (CRI).

pub mod agent;
pub mod credential_plugins;
pub mod credentials;
pub mod cri;
pub mod health;
pub mod image_fs;
pub mod jobs;
pub mod pull_command;
pub mod puller;
pub mod slots;
