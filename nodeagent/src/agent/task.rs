//! One pull of one (tag, version), reporting into the shared state. A pull
//! that panics becomes a Failed tag, never one that shows Pulling forever.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt;
use prewarm_api::node_image::ImageTagSpec;
use prewarm_api::reference::ImageReference;
use prewarm_api::v1beta1::ImageSpec;
use prometheus_client::metrics::gauge::Gauge;

use super::events::{Events, Reason};
use super::plan::TagKey;
use super::status::{Phase, TagState};
use super::{AgentConfig, Shared, now};
use crate::cri::Cri;
use crate::puller::{self, Outcome, PolicyFields, Progress, PullSpec};

pub(super) struct Task {
    pub cri: Cri,
    pub shared: Arc<Shared>,
    pub config: AgentConfig,
    pub events: Events,
    pub key: TagKey,
    pub id: u64,
}

/// Removes the pull from the running set when it ends, however it ends.
struct Finish {
    shared: Arc<Shared>,
    key: TagKey,
    id: u64,
}

impl Drop for Finish {
    fn drop(&mut self) {
        self.shared.finish(&self.key, self.id);
    }
}

/// How long asking the runtime for a pulled image's size may take.
const SIZE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Counts a pull in flight for as long as it lives, cancelled or not.
struct InFlight(Gauge);

impl InFlight {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Counts a pull that has not started its first attempt (waiting for a
/// slot, or checking the image filesystem) until it starts or ends.
struct Waiting(Gauge, AtomicBool);

impl Waiting {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone(), AtomicBool::new(true))
    }

    fn started(&self) {
        if self.1.swap(false, Ordering::Relaxed) {
            self.0.dec();
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.started();
    }
}

fn failed(message: String) -> impl FnOnce(&mut TagState) {
    move |s| {
        s.phase = Phase::Failed;
        s.completion_time = Some(now());
        s.message = Some(message);
    }
}

impl Task {
    pub async fn run(self, image: ImageSpec, tag: ImageTagSpec) {
        let _finish = Finish {
            shared: self.shared.clone(),
            key: self.key.clone(),
            id: self.id,
        };
        let (shared, key, id) = (self.shared.clone(), self.key.clone(), self.id);
        if AssertUnwindSafe(self.pull(image, tag)).catch_unwind().await.is_err() {
            let message = format!(
                "internal error while pulling {}; bump the tag's version to retry",
                key.reference()
            );
            tracing::error!(image = %key.reference(), "a pull task panicked");
            shared.record(&key, id, failed(message));
        }
    }

    fn record(&self, update: impl FnOnce(&mut TagState)) {
        self.shared.record(&self.key, self.id, update);
    }

    async fn pull(self, image: ImageSpec, tag: ImageTagSpec) {
        let owners = tag.owner_references.clone().unwrap_or_default();
        let image_name = format!("{}:{}", self.key.image, self.key.tag);
        let reference = match ImageReference::parse(&self.key.reference()) {
            Ok(reference) => reference,
            Err(e) => {
                let message = format!("invalid image {}: {e}", self.key.reference());
                self.record(failed(message.clone()));
                let text = format!("Image {image_name} {message}");
                self.events.publish(Reason::PullImageFailed, &text, &owners).await;
                return;
            }
        };
        let (keyring, refused) = self.shared.secrets.keyring(&image, &owners).await;
        for refusal in refused {
            self.events
                .publish(Reason::PullSecretRefused, &refusal.to_string(), &[])
                .await;
        }
        let started = std::time::Instant::now();
        // The tenant whose turn this pull takes: its first owner's namespace.
        let namespace = owners.first().and_then(|o| o.namespace.clone()).unwrap_or_default();
        let (outcome, tried) = {
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
            let mut spec = PullSpec::new(reference, &fields, credentials);
            spec.image_fs_limit = Some(self.config.max_image_fs_usage);
            let _in_flight = InFlight::new(&self.config.metrics.in_flight);
            let waiting = Waiting::new(&self.config.metrics.pulls_waiting);
            // Pulling from the first attempt on, which starts once a slot is free.
            let started_pulling = |progress: Progress| match progress {
                Progress::Attempt { number: 1, .. } => {
                    waiting.started();
                    self.record(|s| {
                        s.phase = Phase::Pulling;
                        s.start_time = Some(now());
                    });
                }
                Progress::ImageFs { used_ratio } => {
                    self.config.metrics.image_fs_usage.set(used_ratio);
                }
                _ => {}
            };
            let slots = &self.shared.slots;
            let outcome = puller::pull(
                &self.cri,
                &spec,
                self.config.backoff,
                slots,
                &namespace,
                started_pulling,
            )
            .await;
            (outcome, spec.credentials_tried())
        };
        self.config.metrics.record(&outcome, started.elapsed());
        if let Outcome::Pulled { image_ref, .. } = &outcome {
            // What the pull brought, as the runtime counts the image (CRI `ImageStatus`).
            match self.cri.image_size(image_ref, SIZE_TIMEOUT).await {
                Ok(Some(bytes)) => {
                    self.config.metrics.pulled_bytes.inc_by(bytes);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(image = %image_name, error = %e, "reading the pulled image's size"),
            }
        }
        let elapsed = started.elapsed();
        match &outcome {
            Outcome::Present { .. } => {
                tracing::info!(image = %image_name, "already present: not pulled (IfNotPresent)")
            }
            Outcome::Pulled { attempts, .. } => {
                tracing::info!(image = %image_name, attempts, ?elapsed, credentials = %tried, "pulled");
            }
            Outcome::Failed { error, attempts } => {
                tracing::info!(image = %image_name, attempts, ?elapsed, credentials = %tried, %error, "pull failed");
            }
            Outcome::Refused { reason } => tracing::warn!(image = %image_name, %reason, "pull refused"),
        }
        let (reason, text) = match &outcome {
            Outcome::Failed { error, attempts } => (
                Reason::PullImageFailed,
                format!("Image {image_name} failed after {attempts} attempts {tried}: {error}"),
            ),
            Outcome::Refused { reason } => (Reason::PullImageFailed, format!("Image {image_name} {reason}")),
            _ => (
                Reason::PullImageSucceed,
                format!("Image {image_name}, elapsed time {:?}", started.elapsed()),
            ),
        };
        match outcome {
            Outcome::Present { image_id }
            | Outcome::Pulled {
                image_ref: image_id, ..
            } => {
                let image_id = format!("{}@{image_id}", self.key.image);
                self.record(|s| {
                    s.phase = Phase::Succeeded;
                    s.completion_time = Some(now());
                    s.image_id = Some(image_id);
                    s.message = None;
                });
            }
            Outcome::Failed { error, attempts } => self.record(failed(format!(
                "failed to pull {} after {attempts} attempts {tried}: {error}",
                self.key.reference()
            ))),
            Outcome::Refused { reason } => self.record(failed(format!("{} {reason}", self.key.reference()))),
        }
        let owners = if reason == Reason::PullImageFailed {
            owners
        } else {
            Vec::new()
        };
        self.events.publish(reason, &text, &owners).await;
    }
}
