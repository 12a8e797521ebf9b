//! In-cluster mode: watch this node's NodeImage, pull what its spec asks
//! through the CRI, and report progress in its status subresource.
//!
//! The decisions are pure (`plan`, `status`); this module only watches, spawns
//! and cancels pulls, and writes the status as a merge patch when it changed,
//! at most once per `status_interval`.

pub mod plan;
pub mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event, ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use prewarm_api::node_image::{ImageTagSpec, NodeImageStatus};
use prewarm_api::reference::ImageReference;
use prewarm_api::v1beta1::{ImageSpec, NodeImage, NodeImageSpec};
use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::credential_plugins::Plugins;
use crate::credentials::Keyring;
use crate::cri::Cri;
use crate::health::AgentMetrics;
use crate::puller::{self, Backoff, Outcome, PolicyFields, PullSpec};
use plan::TagKey;
use status::{Phase, TagState};

#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    pub metrics: Arc<AgentMetrics>,
    /// kubelet credential-provider plugins, asked after the pull secrets.
    pub plugins: Option<Arc<Plugins>>,
    pub max_concurrent_pulls: usize,
    pub backoff: Backoff,
    /// Least time between two status writes.
    pub status_interval: Duration,
}

#[derive(Default)]
struct State {
    spec: NodeImageSpec,
    stored: Option<NodeImageStatus>,
    running: BTreeMap<TagKey, (i64, JoinHandle<()>)>,
    tags: BTreeMap<TagKey, TagState>,
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
    limit: Semaphore,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Updates the state of the pull of (key, version), if that pull is still
    /// the current one: a stopped pull finishing late changes nothing.
    fn record(&self, key: &TagKey, version: i64, update: impl FnOnce(&mut TagState)) {
        let mut state = self.lock();
        if state.running.get(key).map(|(v, _)| *v) != Some(version) {
            return;
        }
        if let Some(entry) = state.tags.get_mut(key).filter(|e| e.version == version) {
            update(entry);
        }
        drop(state);
        self.changed.notify_one();
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(unix_now()).unwrap_or_default())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Runs until `shutdown` completes or the watch fails for good.
pub async fn run(client: Client, cri: Cri, config: AgentConfig, shutdown: impl std::future::Future<Output = ()>) {
    let api: Api<NodeImage> = Api::all(client.clone());
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        changed: Notify::new(),
        limit: Semaphore::new(config.max_concurrent_pulls.max(1)),
    });
    let writer = tokio::spawn(write_status(api.clone(), shared.clone(), config.clone()));
    let watch_config = watcher::Config::default().fields(&format!("metadata.name={}", config.node_name));
    let mut events = watcher(api, watch_config).boxed();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(node_image) | watcher::Event::InitApply(node_image))) => {
                    sync(&client, &cri, &config, &shared, node_image).await;
                }
                Some(Ok(watcher::Event::Delete(_))) => sync(&client, &cri, &config, &shared, NodeImage::default()).await,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching the NodeImage; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => break,
            },
        }
    }
    writer.abort();
    let mut state = shared.lock();
    for (_, (_, handle)) in std::mem::take(&mut state.running) {
        handle.abort();
    }
}

async fn sync(client: &Client, cri: &Cri, config: &AgentConfig, shared: &Arc<Shared>, node_image: NodeImage) {
    let plan = {
        let mut state = shared.lock();
        state.spec = node_image.spec.clone();
        state.stored = node_image.status.clone();
        // Pulls running or finished by this agent are handled, whatever the stored status says yet.
        let handled: BTreeMap<TagKey, i64> = state.tags.iter().map(|(k, t)| (k.clone(), t.version)).collect();
        let plan = plan::plan(&state.spec, state.stored.as_ref(), &handled);
        // Stopping is quiet: the pull is aborted and its state forgotten, never reported as failed.
        for key in &plan.stop {
            if let Some((_, handle)) = state.running.remove(key) {
                handle.abort();
            }
            state.tags.remove(key);
        }
        plan
    };
    let events = Events::new(client, &node_image);
    let mut starts = Vec::new();
    for (key, version) in plan.start {
        let image_spec = node_image
            .spec
            .images
            .as_ref()
            .and_then(|i| i.get(&key.image))
            .cloned()
            .unwrap_or_default();
        let Some(tag_spec) = image_spec.tags.iter().find(|t| t.tag == key.tag).cloned() else {
            continue;
        };
        let keyring = keyring(client, &image_spec).await;
        starts.push((key, version, image_spec, tag_spec, keyring));
    }
    // Spawned under the lock, so each pull is registered before it can report.
    let mut state = shared.lock();
    for (key, version, image_spec, tag_spec, keyring) in starts {
        let task = Task {
            cri: cri.clone(),
            shared: shared.clone(),
            config: config.clone(),
            events: events.clone(),
            key: key.clone(),
            version,
        };
        let handle = tokio::spawn(task.pull(image_spec, tag_spec, keyring));
        let waiting = TagState {
            version,
            phase: Phase::Waiting,
            start_time: None,
            completion_time: None,
            image_id: None,
            message: None,
        };
        state.tags.insert(key.clone(), waiting);
        state.running.insert(key, (version, handle));
    }
    drop(state);
    shared.changed.notify_one();
}

/// The credentials of the Secrets an image names; unreadable ones are logged and skipped.
async fn keyring(client: &Client, image: &ImageSpec) -> Keyring {
    let mut keyring = Keyring::default();
    for reference in image.pull_secrets.iter().flatten() {
        let (Some(namespace), Some(name)) = (&reference.namespace, &reference.name) else {
            continue;
        };
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        match secrets.get(name).await.map(serde_json::to_value) {
            Ok(Ok(secret)) => {
                if let Err(e) = keyring.add_secret(&secret) {
                    tracing::warn!(error = %e, "ignoring a pull secret");
                }
            }
            Ok(Err(e)) => tracing::warn!(secret = %name, error = %e, "unreadable pull secret"),
            Err(e) => tracing::warn!(secret = %name, namespace = %namespace, error = %e, "cannot read pull secret"),
        }
    }
    keyring
}

/// Events on the NodeImage, as users look for them with `kubectl describe`.
#[derive(Clone)]
struct Events {
    api: Api<Event>,
    node_image: ObjectReference,
}

impl Events {
    fn new(client: &Client, node_image: &NodeImage) -> Self {
        let reference = ObjectReference {
            api_version: Some("apps.kruise.io/v1beta1".to_owned()),
            kind: Some("NodeImage".to_owned()),
            name: node_image.metadata.name.clone(),
            uid: node_image.metadata.uid.clone(),
            ..ObjectReference::default()
        };
        Self {
            api: Api::namespaced(client.clone(), "default"),
            node_image: reference,
        }
    }

    async fn publish(&self, warning: bool, reason: &str, message: String) {
        let name = self.node_image.name.clone().unwrap_or_default();
        let event: Event = match serde_json::from_value(json!({
            "metadata": {"generateName": format!("{name}.")},
            "involvedObject": self.node_image,
            "reason": reason,
            "message": message,
            "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": "prewarm-nodeagent", "host": name},
            "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
        })) {
            Ok(event) => event,
            Err(_) => return,
        };
        if let Err(e) = self.api.create(&PostParams::default(), &event).await {
            tracing::debug!(error = %e, "recording an event");
        }
    }
}

/// One pull of one (tag, version), reporting into the shared state.
struct Task {
    cri: Cri,
    shared: Arc<Shared>,
    config: AgentConfig,
    events: Events,
    key: TagKey,
    version: i64,
}

impl Task {
    fn record(&self, update: impl FnOnce(&mut TagState)) {
        self.shared.record(&self.key, self.version, update);
    }

    async fn pull(self, image: ImageSpec, tag: ImageTagSpec, keyring: Keyring) {
        let reference = match ImageReference::parse(&self.key.reference()) {
            Ok(reference) => reference,
            Err(e) => {
                self.record(|s| {
                    s.phase = Phase::Failed;
                    s.completion_time = Some(now());
                    s.message = Some(format!("invalid image {}: {e}", self.key.reference()));
                });
                return;
            }
        };
        let Ok(_permit) = self.shared.limit.acquire().await else {
            return;
        };
        self.record(|s| {
            s.phase = Phase::Pulling;
            s.start_time = Some(now());
        });
        let mut credentials = keyring.lookup(&reference.full_name());
        if let Some(plugins) = &self.config.plugins {
            credentials.extend(plugins.provide(&reference.full_name()).await);
        }
        let policy = tag.pull_policy.unwrap_or_default();
        let fields = PolicyFields {
            image_pull_policy: tag.image_pull_policy.as_deref(),
            timeout_seconds: policy.timeout_seconds,
            backoff_limit: policy.backoff_limit,
            active_deadline_seconds: policy.active_deadline_seconds,
            sandbox: image.sandbox_config.as_ref(),
        };
        let spec = PullSpec::new(reference, &fields, credentials);
        let metrics = &self.config.metrics;
        metrics.in_flight.inc();
        let started = std::time::Instant::now();
        let outcome = puller::pull(&self.cri, &spec, self.config.backoff, |_| {}).await;
        metrics.in_flight.dec();
        metrics.record(&outcome, started.elapsed());
        let image_name = format!("{}:{}", self.key.image, self.key.tag);
        let (warning, reason, message) = match &outcome {
            Outcome::Failed { error, attempts } => (
                true,
                "PullImageFailed",
                format!("Image {image_name} failed after {attempts} attempts: {error}"),
            ),
            _ => (
                false,
                "PullImageSucceed",
                format!("Image {image_name}, elapsed time {:?}", started.elapsed()),
            ),
        };
        self.record(|s| {
            s.completion_time = Some(now());
            match outcome {
                Outcome::Present { image_id }
                | Outcome::Pulled {
                    image_ref: image_id, ..
                } => {
                    s.phase = Phase::Succeeded;
                    s.image_id = Some(format!("{}@{image_id}", self.key.image));
                    s.message = None;
                }
                Outcome::Failed { error, attempts } => {
                    s.phase = Phase::Failed;
                    s.message = Some(format!(
                        "failed to pull {} after {attempts} attempts: {error}",
                        self.key.reference()
                    ));
                }
            }
        });
        self.events.publish(warning, reason, message).await;
        let mut state = self.shared.lock();
        if state.running.get(&self.key).map(|(v, _)| *v) == Some(self.version) {
            state.running.remove(&self.key);
        }
    }
}

/// Writes the status when it changed, at most once per interval.
async fn write_status(api: Api<NodeImage>, shared: Arc<Shared>, config: AgentConfig) {
    let mut last_written: Option<NodeImageStatus> = None;
    loop {
        shared.changed.notified().await;
        tokio::time::sleep(config.status_interval).await;
        let status = {
            let state = shared.lock();
            status::status(&state.spec, &state.tags, state.stored.as_ref())
        };
        if last_written.as_ref() == Some(&status) {
            continue;
        }
        let patch = Patch::Merge(json!({"status": status}));
        match api
            .patch_status(&config.node_name, &PatchParams::default(), &patch)
            .await
        {
            Ok(_) => last_written = Some(status),
            Err(e) => {
                tracing::warn!(error = %e, "writing the NodeImage status; retrying");
                shared.changed.notify_one();
            }
        }
    }
}
