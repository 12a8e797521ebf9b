//! The reconcile workers the feature gates allow, started and stopped as the
//! live gates change, without a restart: NodeImage lifecycle while
//! KruiseDaemon is on, ImagePullJob, ImageListPullJob and AdvancedCronJob reconcile while
//! ImagePullJobGate is on. A crew that stops lets each worker finish the key
//! it holds; a crew that starts queues everything, so nothing that changed
//! while it idled is missed.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;
use prewarm_api::gates::{FeatureGates, Gate};
use prewarm_process::live_gates::{ConfigMapRef, KEY, LiveGates};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::ControllerName;
use crate::reconcile::{self, Context, run_workers};

/// Concurrent reconciles of each controller.
#[derive(Clone, Copy, Debug)]
pub struct Workers {
    pub node_images: usize,
    pub image_pull_jobs: usize,
    pub image_list_pull_jobs: usize,
    pub advanced_cron_jobs: usize,
}

/// The running workers of one gate and the switch that stops them.
#[derive(Debug)]
struct Crew {
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

/// One controller's workers over its queue, as a task that ends when `stop` turns true.
macro_rules! workers {
    ($ctx:expr, $stop:expr, $queue:ident, $workers:expr, $name:expr, $reconcile:path) => {{
        let (ctx, stop, workers) = ($ctx.clone(), $stop.clone(), $workers);
        tokio::spawn(async move {
            run_workers(&ctx.world.$queue, workers, $name, &ctx.metrics, &stop, |key| {
                $reconcile(&ctx, key)
            })
            .await;
        })
    }};
}

#[derive(Debug)]
pub struct Crews {
    workers: Workers,
    node_images: Option<Crew>,
    jobs: Option<Crew>,
}

impl Crews {
    pub fn new(workers: Workers) -> Self {
        Self {
            workers,
            node_images: None,
            jobs: None,
        }
    }

    /// Starts the crews `gates` allow and stops the others.
    pub fn apply(&mut self, ctx: &Context, gates: FeatureGates) {
        let workers = self.workers;
        let mut started = false;
        match (&self.node_images, gates.enabled(Gate::KruiseDaemon)) {
            (None, true) => {
                let (stop, stopped) = watch::channel(false);
                let tasks = vec![workers!(
                    ctx,
                    stopped,
                    node_queue,
                    workers.node_images,
                    ControllerName::NodeImage,
                    reconcile::node_image::reconcile
                )];
                self.node_images = Some(Crew { tasks, stop });
                started = true;
                tracing::info!("KruiseDaemon on: NodeImage lifecycle runs");
            }
            (Some(_), false) => {
                stop(self.node_images.take());
                tracing::info!("KruiseDaemon off: NodeImage lifecycle idles");
            }
            _ => {}
        }
        match (&self.jobs, gates.enabled(Gate::ImagePullJobGate)) {
            (None, true) => {
                let (stop, stopped) = watch::channel(false);
                let tasks = vec![
                    workers!(
                        ctx,
                        stopped,
                        job_queue,
                        workers.image_pull_jobs,
                        ControllerName::ImagePullJob,
                        reconcile::image_pull_job::reconcile
                    ),
                    workers!(
                        ctx,
                        stopped,
                        list_queue,
                        workers.image_list_pull_jobs,
                        ControllerName::ImageListPullJob,
                        reconcile::image_list_pull_job::reconcile
                    ),
                    workers!(
                        ctx,
                        stopped,
                        cron_queue,
                        workers.advanced_cron_jobs,
                        ControllerName::AdvancedCronJob,
                        reconcile::advanced_cron_job::reconcile
                    ),
                ];
                self.jobs = Some(Crew { tasks, stop });
                started = true;
                tracing::info!("ImagePullJobGate on: ImagePullJob, ImageListPullJob and AdvancedCronJob reconcile run");
            }
            (Some(_), false) => {
                stop(self.jobs.take());
                tracing::info!(
                    "ImagePullJobGate off: ImagePullJob, ImageListPullJob and AdvancedCronJob reconcile idle"
                );
            }
            _ => {}
        }
        if started {
            ctx.world.enqueue_all();
        }
    }

    /// Why the first running worker task ended; pending while none runs.
    pub async fn first_to_stop(&mut self) -> String {
        let tasks: Vec<&mut JoinHandle<()>> = self
            .node_images
            .iter_mut()
            .chain(self.jobs.iter_mut())
            .flat_map(|crew| crew.tasks.iter_mut())
            .collect();
        if tasks.is_empty() {
            return std::future::pending().await;
        }
        match futures_util::future::select_all(tasks).await {
            (Err(e), ..) => e.to_string(),
            (Ok(()), ..) => "ended without an error".to_owned(),
        }
    }

    /// Stops every worker at once (the process is ending).
    pub fn abort(&mut self) {
        for crew in self.node_images.take().into_iter().chain(self.jobs.take()) {
            for task in &crew.tasks {
                task.abort();
            }
        }
    }
}

/// Lets a crew's workers finish their keys and end; they are no longer watched.
fn stop(crew: Option<Crew>) {
    if let Some(crew) = crew {
        let _ = crew.stop.send(true);
    }
}

/// The events of a gate change on the ConfigMap, written by the leader only so
/// that each change is one event: Normal with what changed, or Warning with
/// why a value is refused (and which gates stay).
pub async fn announce(ctx: &Context, config_map: &ConfigMapRef, old: &LiveGates, new: &LiveGates) {
    let regarding = ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("ConfigMap".to_owned()),
        namespace: Some(config_map.namespace.clone()),
        name: Some(config_map.name.clone()),
        ..ObjectReference::default()
    };
    if let Some(refused) = new.refused.as_ref().filter(|r| old.refused.as_ref() != Some(*r)) {
        let note = format!(
            "{KEY} {:?} refused: {}; the gates stay {}",
            refused.value, refused.error, new.gates
        );
        ctx.event(&regarding, EventType::Warning, "FeatureGatesRefused", note)
            .await;
        return;
    }
    let changes: Vec<String> = Gate::ALL
        .into_iter()
        .filter(|gate| old.gates.enabled(*gate) != new.gates.enabled(*gate))
        .map(|gate| format!("{gate} turned {}", if new.gates.enabled(gate) { "on" } else { "off" }))
        .collect();
    if !changes.is_empty() {
        let source = if new.from_config_map {
            ""
        } else {
            " (ConfigMap gone: the flag's gates)"
        };
        let note = format!("{}{source}", changes.join(", "));
        ctx.event(&regarding, EventType::Normal, "FeatureGatesChanged", note)
            .await;
    }
}
