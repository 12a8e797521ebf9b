//! The admin listener: `/healthz`, `/readyz` (ready once every cache holds a
//! first list) and Prometheus `/metrics`. Labels come from closed sets only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prewarm_process::live_gates::GateMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::world::World;

/// The reconcilers, as metric label values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControllerName {
    ImagePullJob,
    ImageListPullJob,
    AdvancedCronJob,
    NodeImage,
}

impl ControllerName {
    fn label(self) -> &'static str {
        match self {
            Self::ImagePullJob => "imagepulljob",
            Self::ImageListPullJob => "imagelistpulljob",
            Self::AdvancedCronJob => "advancedcronjob",
            Self::NodeImage => "nodeimage",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    controller: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    verb: &'static str,
    resource: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CompletionLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    image_pull_policy: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_duration: Family<ControllerLabels, Histogram>,
    queue_depth: Family<ControllerLabels, Gauge>,
    writes: Family<WriteLabels, Counter>,
    jobs: Family<PhaseLabels, Gauge>,
    completions: Family<CompletionLabels, Counter>,
    job_duration: Family<PolicyLabels, Histogram>,
    leader: Gauge,
    /// The feature gates in force (`prewarm_feature_gate_enabled`).
    pub gates: GateMetrics,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        let gates = GateMetrics::default();
        gates.register(&mut root);
        let registry = root.sub_registry_with_prefix("prewarm_controller");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by controller and result (success, conflict, api_error, other)",
            reconciles.clone(),
        );
        let reconcile_duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0])
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile, by controller",
            reconcile_duration.clone(),
        );
        let queue_depth = Family::<ControllerLabels, Gauge>::default();
        registry.register("queue_depth", "Keys waiting in each work queue", queue_depth.clone());
        let writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "API writes by verb and resource, failed ones included",
            writes.clone(),
        );
        let jobs = Family::<PhaseLabels, Gauge>::default();
        registry.register("imagepulljobs", "ImagePullJobs by phase", jobs.clone());
        let completions = Family::<CompletionLabels, Counter>::default();
        // Every result from 0, so that the first completion of a kind is an increase.
        for result in ["succeeded", "failed", "deadline_exceeded"] {
            let _ = completions.get_or_create(&CompletionLabels { result });
        }
        registry.register(
            "imagepulljob_completions",
            "ImagePullJobs this leader completed, by result: succeeded, failed (some node failed), deadline_exceeded",
            completions.clone(),
        );
        let job_duration = Family::<PolicyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0])
        });
        registry.register(
            "imagepulljob_duration_seconds",
            "Time from an ImagePullJob's creation to its completion, by imagePullPolicy",
            job_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this process holds the lease", leader.clone());
        Self {
            registry: root,
            gates,
            reconciles,
            reconcile_duration,
            queue_depth,
            writes,
            jobs,
            completions,
            job_duration,
            leader,
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// One reconcile: how it ended (`success`, or the kind of error: `conflict`,
    /// `api_error`, `other`) and how long it took.
    pub fn reconciled(&self, controller: ControllerName, result: &'static str, took: std::time::Duration) {
        let controller = controller.label();
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
        self.reconcile_duration
            .get_or_create(&ControllerLabels { controller })
            .observe(took.as_secs_f64());
    }

    /// One API write; `resource` is the plural of a kind this controller writes.
    /// One write the API server answered (or not), from `api_writes`.
    pub fn wrote(&self, verb: &'static str, resource: &'static str, result: &'static str) {
        self.writes.get_or_create(&WriteLabels { verb, resource, result }).inc();
    }

    /// A job this leader completed: how it ended, its pull policy, and its
    /// seconds from creation to completion.
    pub fn job_completed(&self, result: &'static str, image_pull_policy: &'static str, seconds: i64) {
        self.completions.get_or_create(&CompletionLabels { result }).inc();
        #[allow(clippy::cast_precision_loss)] // seconds of a job's life: far below 2^52
        self.job_duration
            .get_or_create(&PolicyLabels { image_pull_policy })
            .observe(seconds.max(0) as f64);
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    fn render(&self, world: &World) -> String {
        for (controller, depth) in [
            (ControllerName::ImagePullJob, world.job_queue.len()),
            (ControllerName::ImageListPullJob, world.list_queue.len()),
            (ControllerName::AdvancedCronJob, world.cron_queue.len()),
            (ControllerName::NodeImage, world.node_queue.len()),
        ] {
            self.queue_depth
                .get_or_create(&ControllerLabels {
                    controller: controller.label(),
                })
                .set(i64::try_from(depth).unwrap_or(i64::MAX));
        }
        let (mut running, mut completed, mut deleting) = (0, 0, 0);
        for job in world.jobs.state() {
            if job.metadata.deletion_timestamp.is_some() {
                deleting += 1;
            } else if job.status.as_ref().and_then(|s| s.completion_time.as_ref()).is_some() {
                completed += 1;
            } else {
                running += 1;
            }
        }
        for (phase, count) in [("running", running), ("completed", completed), ("deleting", deleting)] {
            self.jobs.get_or_create(&PhaseLabels { phase }).set(count);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

pub fn router(metrics: Arc<Metrics>, world: Arc<World>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State((metrics, _)): State<(Arc<Metrics>, Arc<World>)>| async move {
                if metrics.ready.load(Ordering::Acquire) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State((metrics, world)): State<(Arc<Metrics>, Arc<World>)>| async move { metrics.render(&world) }),
        )
        .with_state((metrics, world))
}
