//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it:
//! a lease is free when its holder has not renewed it within its duration,
//! judged by when this process saw it change (not by clocks that may differ).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{PostParams, Resource};
use tokio::time::Instant;

use crate::reconcile::is_status;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This process, as written in `holderIdentity`.
    pub identity: String,
    /// How long a lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews, and others retry.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// A leader that could not renew for this long steps down, before its
    /// lease can have expired for the others.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "namespace {0:?} for the leader-election Lease does not exist: create it, or name an existing one with --leader-elect-namespace (or run alone with --leader-elect=false)"
    )]
    NoNamespace(String),
}

/// An API error in one line: the API server's message, not a dump of its Status.
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
        other => other.to_string(),
    }
}

#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The lease record last seen, and when it was first seen so.
    observed: Option<(String, Instant)>,
}

impl Elector {
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    /// Returns once this process holds the lease; fails at once when the
    /// Lease's namespace does not exist (retrying would never succeed).
    pub async fn acquire(&mut self) -> Result<(), LeaseError> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {
                    return Err(LeaseError::NoNamespace(self.config.namespace.clone()));
                }
                Err(e) => {
                    tracing::warn!(lease = %self.config.name, error = %describe(&e), "could not read or take the lease")
                }
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the lease; returns when it is lost: taken by another, or not
    /// renewed within the renew deadline. Each attempt is cut off at that
    /// deadline (as client-go's), so a request that hangs cannot keep this
    /// process working past the point where a standby may take over.
    pub async fn hold(&mut self) {
        let mut renewed = Instant::now();
        loop {
            let deadline = renewed + self.config.renew_deadline();
            tokio::time::sleep(self.config.retry_period).await;
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => renewed = Instant::now(),
                Ok(Ok(false)) => return,
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.config.name, error = %describe(&e), "could not renew the lease");
                    if Instant::now() >= deadline {
                        return;
                    }
                }
                Err(_) => {
                    tracing::warn!(lease = %self.config.name, deadline = ?self.config.renew_deadline(), "renewing the lease did not finish within the renew deadline");
                    return;
                }
            }
        }
    }

    /// Gives the lease up so that a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        if let Err(e) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.config.name, error = %e, "could not release the lease");
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration_seconds = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_status(&e, 409) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let record = format!(
            "{}|{}",
            lease.meta().resource_version.as_deref().unwrap_or_default(),
            lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                .unwrap_or_default()
        );
        let first_seen = match &self.observed {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((record, at));
                at
            }
        };
        let spec = lease.spec.get_or_insert_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let mine = holder == self.config.identity;
        let held_for = spec
            .lease_duration_seconds
            .map_or(self.config.duration, |s| Duration::from_secs(s.unsigned_abs().into()));
        if !mine && !holder.is_empty() && first_seen.elapsed() < held_for {
            return Ok(false);
        }
        if !mine {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observed = None;
                Ok(true)
            }
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
