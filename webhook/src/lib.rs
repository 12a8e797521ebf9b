//! prewarm's admission webhook: the AdmissionReview contract over the `prewarm-api`
//! rules, served over TLS with hot certificate reload, health and metrics.

pub mod admit;
pub mod bootstrap;
pub mod cli;
pub mod cluster_certs;
pub mod envelope;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod review;
pub mod server;
pub mod tls;
pub mod validate;
