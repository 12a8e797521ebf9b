//! Prometheus metrics. Every label comes from a closed set: kinds, endpoints,
//! operations and results, never names, uids or error text.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// From 0.25 ms, where an admission decision lives, up to the 30 s maximum
/// webhook timeout.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub kind: &'static str,
    pub webhook: &'static str,
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub kind: &'static str,
    pub webhook: &'static str,
    pub operation: &'static str,
    pub result: &'static str,
    pub dry_run: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CaChangeLabels {
    pub change: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub request_duration: Family<RequestLabels, Histogram>,
    pub decisions: Family<DecisionLabels, Counter>,
    pub in_flight: Gauge,
    pub certificate_expiry: Gauge,
    pub certificate_reloads: Family<ReloadLabels, Counter>,
    pub ca_changes: Family<CaChangeLabels, Counter>,
    pub ca_sync_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("prewarm_webhook");
        let request_duration =
            Family::<RequestLabels, Histogram>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register(
            "request_duration_seconds",
            "Time to answer an admission request, from the first byte of the body",
            request_duration.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register("decisions", "Admission decisions", decisions.clone());
        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Admission requests being handled",
            in_flight.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When the serving certificate expires, in seconds since the Unix epoch",
            certificate_expiry.clone(),
        );
        let certificate_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "certificate_reloads",
            "Certificate reload attempts that replaced the certificate or failed",
            certificate_reloads.clone(),
        );
        let ca_changes = Family::<CaChangeLabels, Counter>::default();
        registry.register(
            "ca_secret_changes",
            "Changes this replica made to the shared CA Secret (--cert-source secret)",
            ca_changes.clone(),
        );
        let ca_sync_failures = Counter::default();
        registry.register(
            "ca_sync_failures",
            "Passes over the CA Secret and caBundles that failed (--cert-source secret)",
            ca_sync_failures.clone(),
        );
        Self {
            registry,
            request_duration,
            decisions,
            in_flight,
            certificate_expiry,
            certificate_reloads,
            ca_changes,
            ca_sync_failures,
        }
    }
}

impl Metrics {
    pub fn observe(&self, request: RequestLabels, result: &'static str, dry_run: bool, elapsed: Duration) {
        self.request_duration
            .get_or_create(&request)
            .observe(elapsed.as_secs_f64());
        let decision = DecisionLabels {
            kind: request.kind,
            webhook: request.webhook,
            operation: request.operation,
            result,
            dry_run: if dry_run { "true" } else { "false" },
        };
        self.decisions.get_or_create(&decision).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
