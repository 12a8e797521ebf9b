//! The plain-HTTP health listener: liveness, readiness and Prometheus metrics,
//! apart from the TLS port so that probes need no certificate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;
use crate::tls::CertStore;

#[derive(Debug)]
pub struct HealthState {
    pub metrics: Arc<Metrics>,
    pub certs: Arc<CertStore>,
    /// True once the TLS listener is bound, false again from shutdown on.
    pub serving: AtomicBool,
}

pub fn router(state: Arc<HealthState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<HealthState>>) -> Response {
    if !state.serving.load(Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not serving: starting or shutting down",
        )
            .into_response();
    }
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    if state.certs.not_after() <= now {
        return (StatusCode::SERVICE_UNAVAILABLE, "the serving certificate has expired").into_response();
    }
    "ok".into_response()
}

async fn metrics(State(state): State<Arc<HealthState>>) -> Response {
    state.metrics.certificate_expiry.set(state.certs.not_after());
    let content_type = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], state.metrics.render()).into_response()
}
