//! The kube edge: each reconciler reads the caches, calls its planner and
//! applies the result. Writes are merge patches of what changed, with a
//! resourceVersion precondition where another writer may race.

pub mod advanced_cron_job;
pub mod image_list_pull_job;
pub mod image_pull_job;
pub mod node_image;
pub mod secrets;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client};

use crate::admin::{ControllerName, Metrics};
use crate::index::ObjectKey;
use crate::queue::{Outcome, Queue};
use crate::world::World;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Where node agents read pull secrets, and where copies are made.
    pub agent_namespace: String,
    pub default_ttl_for_always: i64,
    pub creation_delay_seconds: i64,
    /// A tag unanswered this long fails; a node NotReady this long fails its jobs.
    pub no_response_seconds: i64,
    /// Nodes no job targets.
    pub excluded_nodes: crate::plan::excluded::ExcludedNodes,
}

#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub world: Arc<World>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Api {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn api(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Api { action, source }
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Api { source: kube::Error::Api(s), .. } if s.code == 409)
    }

    /// The `result` label of a failed reconcile: a closed set.
    pub fn kind(&self) -> &'static str {
        match self {
            _ if self.is_conflict() => "conflict",
            Self::Api { .. } => "api_error",
            Self::Other(_) => "other",
        }
    }
}

pub fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == code)
}

/// Now, to the second: API times have no fractions, and comparing a computed
/// status with a stored one must not see a difference that is not there.
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A number in `[0, 1)` from the standard library's per-process random keys,
/// to spread tag TTLs.
pub fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The merge patch from the stored status to the planned one (fields that
/// went away become nulls), or `None` when nothing changed.
pub fn status_patch<S: serde::Serialize>(old: &Option<S>, new: &S) -> Option<serde_json::Value> {
    let old = serde_json::to_value(old).ok()?;
    let new = serde_json::to_value(new).ok()?;
    crate::patch::merge_diff(&old, &new).map(|diff| serde_json::json!({ "status": diff }))
}

/// An event's `action`: its reason and a hash of its note. kube's recorder
/// counts an event as a repeat of an earlier one with the same action and
/// reason, and keeps the earlier note; with the note in the action, a repeat of
/// the same message grows a series while another message is an event of its own.
pub fn event_action(reason: &str, note: &str) -> String {
    let hash = note.bytes().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{reason}-{hash:08x}")
}

impl Context {
    /// Publishes an event; a failure is logged, never fatal. Repeats of one
    /// message about one object become one event with a growing series, as
    /// client-go aggregates them: the reference leaves out the resourceVersion,
    /// which changes with every write and would make each repeat a new event.
    pub async fn event(&self, regarding: &ObjectReference, type_: EventType, reason: &str, note: String) {
        let regarding = &ObjectReference {
            resource_version: None,
            ..regarding.clone()
        };
        let event = Event {
            type_,
            reason: reason.to_owned(),
            action: event_action(reason, &note),
            note: Some(note),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(reason, error = %e, "could not publish an event");
        }
    }
}

/// Deletes a finished job whose TTL ran out, conditional on its uid (a job
/// made again under the same name is not touched); already gone is fine.
pub async fn delete_after_ttl<K>(
    api: &Api<K>,
    key: &ObjectKey,
    uid: Option<String>,
    resource: &'static str,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&key.name, &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(Error::api(format!("deleting {resource} {key} after its TTL"))(e)),
    }
}

/// Waits for the first of `tasks` to end (they run until aborted, so an end is a
/// panic or a bug) and says how it ended; never returns when there are none.
/// The binary exits on it: a stalled worker behind a healthy `/healthz` and a
/// held lease would stop every job silently.
pub async fn first_to_stop(tasks: &mut [tokio::task::JoinHandle<()>]) -> String {
    if tasks.is_empty() {
        return std::future::pending().await;
    }
    match futures_util::future::select_all(tasks.iter_mut()).await {
        (Err(e), ..) => e.to_string(),
        (Ok(()), ..) => "ended without an error".to_owned(),
    }
}

/// Runs `workers` workers over `queue` until `stop` turns true (or its sender
/// goes): each finishes the key it holds first, so no key stays taken.
pub async fn run_workers<K, F, Fut>(
    queue: &Queue<K>,
    workers: usize,
    controller: ControllerName,
    metrics: &Metrics,
    stop: &tokio::sync::watch::Receiver<bool>,
    reconcile: F,
) where
    K: Ord + Clone + std::hash::Hash + std::fmt::Display,
    F: Fn(K) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Duration>, Error>>,
{
    let worker = || async {
        let mut stop = stop.clone();
        loop {
            let key = tokio::select! {
                key = queue.next() => key,
                _ = stop.wait_for(|stopped| *stopped) => return,
            };
            let started = std::time::Instant::now();
            let result = reconcile(key.clone()).await;
            let took = started.elapsed();
            let outcome = match result {
                Ok(requeue) => {
                    metrics.reconciled(controller, "success", took);
                    Outcome::Success(requeue)
                }
                Err(e) => {
                    metrics.reconciled(controller, e.kind(), took);
                    if e.is_conflict() {
                        tracing::debug!(%key, error = %e, "conflict; retrying");
                    } else {
                        tracing::warn!(%key, error = %e, "reconcile failed; retrying");
                    }
                    Outcome::Failure
                }
            };
            queue.done(&key, outcome);
        }
    };
    futures_util::future::join_all((0..workers.max(1)).map(|_| worker())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    #[allow(clippy::panic)]
    async fn a_worker_that_panics_is_reported() {
        let mut tasks = vec![
            tokio::spawn(std::future::pending::<()>()),
            tokio::spawn(async { panic!("Instant overflow") }),
        ];
        let cause = first_to_stop(&mut tasks).await;
        assert!(
            cause.contains("panicked") && cause.contains("Instant overflow"),
            "{cause}"
        );
        let waits = tokio::time::timeout(Duration::from_millis(50), first_to_stop(&mut [])).await;
        assert!(waits.is_err(), "no tasks: nothing to report, ever");
    }
}
