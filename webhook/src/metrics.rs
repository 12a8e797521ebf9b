//! Prometheus metrics. Every label comes from a closed set: kinds, endpoints,
//! operations and results, never names, uids or error text.

use std::sync::OnceLock;
use std::time::Duration;

use prewarm_api::admission::{Kind, Operation};

use prewarm_process::live_gates::GateMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::review::{Endpoint, Route, Verdict};

/// From 0.25 ms, where an admission decision lives, up to the 30 s maximum
/// webhook timeout.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    pub kind: &'static str,
    pub webhook: &'static str,
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
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
    request_duration: Family<RequestLabels, Histogram>,
    decisions: Family<DecisionLabels, Counter>,
    pub in_flight: Gauge,
    pub certificate_expiry: Gauge,
    pub certificate_reloads: Family<ReloadLabels, Counter>,
    pub ca_changes: Family<CaChangeLabels, Counter>,
    pub ca_sync_failures: Counter,
    /// The feature gates in force (`prewarm_feature_gate_enabled`).
    pub gates: GateMetrics,
    series: Series,
}

/// Label values of the operation: the four operations, or none read.
const OPERATIONS: usize = 1 + 4;
const ENDPOINTS: usize = 2;
const REQUEST_SERIES: usize = Kind::ALL.len() * ENDPOINTS * OPERATIONS;
const DECISION_SERIES: usize = REQUEST_SERIES * Verdict::ALL.len() * 2;

/// Where each label value sits in the series arrays. Exhaustive matches, so a
/// new variant does not compile without a place; one past the arrays (a
/// variant left out of its `ALL`) is still counted, through its family.
fn kind_slot(kind: Kind) -> usize {
    match kind {
        Kind::ImagePullJob => 0,
        Kind::ImageListPullJob => 1,
        Kind::AdvancedCronJob => 2,
        Kind::NodeImage => 3,
    }
}

fn endpoint_slot(endpoint: Endpoint) -> usize {
    match endpoint {
        Endpoint::Mutate => 0,
        Endpoint::Validate => 1,
    }
}

fn verdict_slot(verdict: Verdict) -> usize {
    match verdict {
        Verdict::Allowed => 0,
        Verdict::Patched => 1,
        Verdict::Invalid => 2,
        Verdict::Forbidden => 3,
        Verdict::BadRequest => 4,
    }
}

/// The request series of a route and operation, and its decision series.
fn slots(route: Route, operation: Option<Operation>, verdict: Verdict, dry_run: bool) -> (usize, usize) {
    let (_, operation_slot) = operation_label(operation);
    let request = (kind_slot(route.kind) * ENDPOINTS + endpoint_slot(route.endpoint)) * OPERATIONS + operation_slot;
    let decision = (request * Verdict::ALL.len() + verdict_slot(verdict)) * 2 + usize::from(dry_run);
    (request, decision)
}

/// Each admission series, looked up in its family on first use and kept, so
/// that observing a request takes no family lock and hashes no labels. The
/// families still list only the series that were used.
#[derive(Debug)]
struct Series {
    durations: [OnceLock<Histogram>; REQUEST_SERIES],
    decisions: [OnceLock<Counter>; DECISION_SERIES],
}

impl Default for Series {
    fn default() -> Self {
        Self {
            durations: [const { OnceLock::new() }; REQUEST_SERIES],
            decisions: [const { OnceLock::new() }; DECISION_SERIES],
        }
    }
}

fn operation_label(operation: Option<Operation>) -> (&'static str, usize) {
    match operation {
        None => ("unknown", 0),
        Some(Operation::Create) => ("CREATE", 1),
        Some(Operation::Update) => ("UPDATE", 2),
        Some(Operation::Delete) => ("DELETE", 3),
        Some(Operation::Connect) => ("CONNECT", 4),
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let gates = GateMetrics::default();
        gates.register(&mut root);
        let registry = root.sub_registry_with_prefix("prewarm_webhook");
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
            registry: root,
            gates,
            request_duration,
            decisions,
            in_flight,
            certificate_expiry,
            certificate_reloads,
            ca_changes,
            ca_sync_failures,
            series: Series::default(),
        }
    }
}

impl Metrics {
    /// Counts one admission decision and its latency.
    pub fn observe(
        &self,
        route: Route,
        operation: Option<Operation>,
        verdict: Verdict,
        dry_run: bool,
        elapsed: Duration,
    ) {
        let (request_slot, decision_slot) = slots(route, operation, verdict, dry_run);
        let request = RequestLabels {
            kind: route.kind.name(),
            webhook: route.endpoint.as_str(),
            operation: operation_label(operation).0,
        };
        let histogram = || self.request_duration.get_or_create(&request).clone();
        match self.series.durations.get(request_slot) {
            Some(kept) => kept.get_or_init(histogram).observe(elapsed.as_secs_f64()),
            None => histogram().observe(elapsed.as_secs_f64()),
        }
        let counter = || {
            let labels = DecisionLabels {
                kind: request.kind,
                webhook: request.webhook,
                operation: request.operation,
                result: verdict.as_str(),
                dry_run: if dry_run { "true" } else { "false" },
            };
            self.decisions.get_or_create(&labels).clone()
        };
        match self.series.decisions.get(decision_slot) {
            Some(kept) => kept.get_or_init(counter).inc(),
            None => counter().inc(),
        };
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combination of label values has a series slot of its own inside
    /// the arrays: a reordered or added variant cannot count into another's.
    #[test]
    fn every_label_combination_has_its_own_slot() {
        let operations = [
            None,
            Some(Operation::Create),
            Some(Operation::Update),
            Some(Operation::Delete),
            Some(Operation::Connect),
        ];
        let mut requests = std::collections::BTreeSet::new();
        let mut decisions = std::collections::BTreeSet::new();
        for route in Route::all() {
            for operation in operations {
                for verdict in Verdict::ALL {
                    for dry_run in [false, true] {
                        let (request, decision) = slots(route, operation, verdict, dry_run);
                        assert!(request < REQUEST_SERIES && decision < DECISION_SERIES);
                        requests.insert(request);
                        assert!(
                            decisions.insert(decision),
                            "{route:?} {operation:?} {verdict:?} {dry_run} shares a slot"
                        );
                    }
                }
            }
        }
        assert_eq!(requests.len(), REQUEST_SERIES);
        assert_eq!(decisions.len(), DECISION_SERIES);
    }

    #[test]
    fn each_label_set_is_its_own_series_and_only_used_ones_are_listed() {
        let metrics = Metrics::default();
        let route = |kind, endpoint| Route { kind, endpoint };
        let elapsed = Duration::from_micros(300);
        for _ in 0..2 {
            metrics.observe(
                route(Kind::NodeImage, Endpoint::Mutate),
                Some(Operation::Update),
                Verdict::Patched,
                true,
                elapsed,
            );
        }
        metrics.observe(
            route(Kind::ImageListPullJob, Endpoint::Validate),
            None,
            Verdict::BadRequest,
            false,
            elapsed,
        );
        let text = metrics.render();
        for line in [
            r#"prewarm_webhook_decisions_total{kind="NodeImage",webhook="mutate",operation="UPDATE",result="patched",dry_run="true"} 2"#,
            r#"prewarm_webhook_decisions_total{kind="ImageListPullJob",webhook="validate",operation="unknown",result="bad_request",dry_run="false"} 1"#,
            r#"prewarm_webhook_request_duration_seconds_count{kind="NodeImage",webhook="mutate",operation="UPDATE"} 2"#,
            r#"prewarm_webhook_request_duration_seconds_count{kind="ImageListPullJob",webhook="validate",operation="unknown"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(text.matches("prewarm_webhook_decisions_total{").count(), 2, "{text}");
        assert_eq!(
            text.matches("prewarm_webhook_request_duration_seconds_count{").count(),
            2,
            "{text}"
        );
    }
}
