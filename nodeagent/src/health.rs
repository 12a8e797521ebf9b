//! The agent's health listener: `/healthz` (healthy once the NodeImage watch
//! has synced) and Prometheus `/metrics` with pulls by result, pull
//! durations, bytes pulled, pulls in flight and waiting, and the image
//! filesystem's use (labels from closed sets only).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::puller::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
    pulls: Family<ResultLabels, Counter>,
    duration: Histogram,
    pub in_flight: Gauge,
    /// Pulls not started yet: waiting for a slot or the filesystem check.
    pub pulls_waiting: Gauge,
    /// What pulls brought, by the runtime's image sizes.
    pub pulled_bytes: Counter,
    /// How full the fullest image filesystem was before the last pull, 0 to 1.
    pub image_fs_usage: Gauge<f64, AtomicU64>,
    /// The share above which no pull starts (`--max-image-fs-usage`), 0 to 1.
    pub image_fs_limit: Gauge<f64, AtomicU64>,
    /// Whether the NodeImage watch has listed once: unhealthy until then.
    pub watch_synced: AtomicBool,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("prewarm_nodeagent");
        let pulls = Family::<ResultLabels, Counter>::default();
        // Every result from 0, so that the first pull of a kind is an increase.
        for result in ["pulled", "present", "failed", "refused"] {
            let _ = pulls.get_or_create(&ResultLabels { result });
        }
        registry.register(
            "pulls",
            "Finished pulls by result: pulled, present (IfNotPresent), failed, or refused (image filesystem too full)",
            pulls.clone(),
        );
        let duration = Histogram::new([0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0]);
        registry.register(
            "pull_duration_seconds",
            "Time from the first attempt to the end of a pull",
            duration.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("pulls_in_flight", "Pulls running now", in_flight.clone());
        let pulls_waiting = Gauge::default();
        registry.register(
            "pulls_waiting",
            "Pulls not started yet: waiting for a pull slot or the image filesystem check",
            pulls_waiting.clone(),
        );
        let pulled_bytes = Counter::default();
        registry.register(
            "pulled_bytes",
            "Size of the images pulled, as the runtime reports it after each pull (CRI ImageStatus)",
            pulled_bytes.clone(),
        );
        let image_fs_usage = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "image_fs_usage_ratio",
            "Used share of the fullest image filesystem, measured before the last pull (0 to 1)",
            image_fs_usage.clone(),
        );
        let image_fs_limit = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "image_fs_usage_limit_ratio",
            "The used share of an image filesystem above which no pull starts (--max-image-fs-usage; 1: no check)",
            image_fs_limit.clone(),
        );
        Self {
            registry,
            pulls,
            duration,
            in_flight,
            pulls_waiting,
            pulled_bytes,
            image_fs_usage,
            image_fs_limit,
            watch_synced: AtomicBool::new(false),
        }
    }
}

impl AgentMetrics {
    pub fn record(&self, outcome: &Outcome, elapsed: Duration) {
        let result = match outcome {
            Outcome::Present { .. } => "present",
            Outcome::Pulled { .. } => "pulled",
            Outcome::Failed { .. } => "failed",
            Outcome::Refused { .. } => "refused",
        };
        self.pulls.get_or_create(&ResultLabels { result }).inc();
        self.duration.observe(elapsed.as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

pub fn router(metrics: Arc<AgentMetrics>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|State(metrics): State<Arc<AgentMetrics>>| async move {
                if metrics.watch_synced.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "check nodeimage-watch failed: not synced",
                    )
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(metrics): State<Arc<AgentMetrics>>| async move { metrics.render() }),
        )
        .with_state(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn healthz(metrics: &Arc<AgentMetrics>) -> StatusCode {
        let request = Request::get("/healthz").body(Body::empty()).unwrap_or_default();
        match router(metrics.clone()).oneshot(request).await {
            Ok(response) => response.status(),
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn unhealthy_until_the_watch_has_synced() {
        let metrics = Arc::new(AgentMetrics::default());
        assert_eq!(healthz(&metrics).await, StatusCode::INTERNAL_SERVER_ERROR);
        metrics.watch_synced.store(true, Ordering::Relaxed);
        assert_eq!(healthz(&metrics).await, StatusCode::OK);
    }
}
