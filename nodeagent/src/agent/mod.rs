//! In-cluster mode: watch this node's NodeImage, pull what its spec asks
//! through the CRI, and report progress in its status subresource.
//!
//! The decisions are pure (`plan`, `status`); this module only watches and
//! starts or stops pulls (`task`), and `writer` puts the computed status.

mod events;
pub mod plan;
mod secrets;
pub mod status;
mod task;
mod writer;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use prewarm_api::node_image::NodeImageStatus;
use prewarm_api::v1beta1::{NodeImage, NodeImageSpec};
use tokio::sync::Notify;

use crate::image_fs::UsageLimit;
use crate::slots::FairSlots;
use tokio::task::AbortHandle;

use crate::credential_plugins::Plugins;
use crate::cri::Cri;
use crate::health::AgentMetrics;
use crate::puller::Backoff;
use events::Events;
use plan::{Handled, TagKey};
use secrets::Secrets;
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
    /// The only namespace pull secrets are read from.
    pub secret_namespace: String,
    /// No pull starts while an image filesystem is fuller than this.
    pub max_image_fs_usage: UsageLimit,
}

/// A pull in progress; `id` tells it apart from a later pull of the same tag.
struct Running {
    version: i64,
    id: u64,
    handle: AbortHandle,
}

#[derive(Default)]
struct State {
    /// The NodeImage as last seen (spec, stored status, resourceVersion).
    node_image: Option<NodeImage>,
    running: BTreeMap<TagKey, Running>,
    tags: BTreeMap<TagKey, TagState>,
    next_id: u64,
}

impl State {
    fn spec(&self) -> NodeImageSpec {
        self.node_image.as_ref().map(|n| n.spec.clone()).unwrap_or_default()
    }

    fn stored(&self) -> Option<&NodeImageStatus> {
        self.node_image.as_ref().and_then(|n| n.status.as_ref())
    }
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
    slots: FairSlots,
    secrets: Secrets,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Updates the state of pull `id`, if it is still the current pull of
    /// `key`: a stopped pull finishing late changes nothing.
    fn record(&self, key: &TagKey, id: u64, update: impl FnOnce(&mut TagState)) {
        let mut state = self.lock();
        let Some(version) = state.running.get(key).filter(|r| r.id == id).map(|r| r.version) else {
            return;
        };
        if let Some(entry) = state.tags.get_mut(key).filter(|e| e.version == version) {
            update(entry);
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Forgets pull `id` once it has ended, however it ended.
    fn finish(&self, key: &TagKey, id: u64) {
        let mut state = self.lock();
        if state.running.get(key).is_some_and(|r| r.id == id) {
            state.running.remove(key);
        }
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Runs until `shutdown` completes.
pub async fn run(client: Client, cri: Cri, config: AgentConfig, shutdown: impl std::future::Future<Output = ()>) {
    let api: Api<NodeImage> = Api::all(client.clone());
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        changed: Notify::new(),
        slots: FairSlots::new(config.max_concurrent_pulls),
        secrets: Secrets::new(client.clone(), config.secret_namespace.clone()),
    });
    let writer = tokio::spawn(writer::write_status(api.clone(), shared.clone(), config.clone()));
    // What this node's NodeImage now is, `None` when it is gone (a relist
    // that no longer has it included): kube's single-object watch.
    let mut states = watcher::watch_object(api, &config.node_name).default_backoff().boxed();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            state = states.next() => match state {
                Some(Ok(node_image)) => {
                    // The first answer comes once the first list is done.
                    config.metrics.watch_synced.store(true, Ordering::Relaxed);
                    sync(&client, &cri, &config, &shared, node_image);
                }
                // The stream waits with backoff before it tries again.
                Some(Err(e)) => tracing::warn!(error = %e, "watching the NodeImage; retrying"),
                None => break,
            },
        }
    }
    writer.abort();
    let mut state = shared.lock();
    for running in std::mem::take(&mut state.running).into_values() {
        running.handle.abort();
    }
}

/// Brings the pulls in line with `node_image` (`None`: it is gone).
fn sync(client: &Client, cri: &Cri, config: &AgentConfig, shared: &Arc<Shared>, node_image: Option<NodeImage>) {
    let events = node_image.as_ref().map(|n| Events::new(client, n));
    let mut state = shared.lock();
    state.node_image = node_image;
    let spec = state.spec();
    // Pulls started by this agent are handled, whatever the stored status says yet.
    let handled: BTreeMap<TagKey, Handled> = state
        .tags
        .iter()
        .map(|(k, t)| {
            let finished = matches!(t.phase, Phase::Succeeded | Phase::Failed);
            (
                k.clone(),
                Handled {
                    version: t.version,
                    finished,
                },
            )
        })
        .collect();
    let plan = plan::plan(&spec, state.stored(), &handled);
    // Stopping is quiet: the pull is aborted and its state forgotten, never reported as failed.
    for key in &plan.stop {
        if let Some(running) = state.running.remove(key) {
            running.handle.abort();
        }
        state.tags.remove(key);
    }
    for (key, version) in plan.start {
        let Some(events) = &events else { break };
        let image = spec
            .images
            .as_ref()
            .and_then(|i| i.get(&key.image))
            .cloned()
            .unwrap_or_default();
        let Some(tag) = image.tags.iter().find(|t| t.tag == key.tag).cloned() else {
            continue;
        };
        let id = state.next_id;
        state.next_id += 1;
        let task = task::Task {
            cri: cri.clone(),
            shared: shared.clone(),
            config: config.clone(),
            events: events.clone(),
            key: key.clone(),
            id,
        };
        // Spawned under the lock, so the pull is registered before it can report.
        let handle = tokio::spawn(task.run(image, tag)).abort_handle();
        state.tags.insert(key.clone(), TagState::waiting(version));
        state.running.insert(key, Running { version, id, handle });
    }
    drop(state);
    shared.changed.notify_one();
}
