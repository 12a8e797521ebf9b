//! What a hostile client can make the webhook hold, bounded: connections, body
//! bytes in flight, concurrent admissions, HTTP/2 streams and windows, time.
//! A request that does not fit waits briefly, then gets 429 (the API server
//! retries), so memory never grows with what clients send.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest `?timeout=` honoured: kube-apiserver never asks for more.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// From accept to the first request's headers, whatever arrives meanwhile:
/// a client trickling bytes cannot stretch it.
pub const FIRST_REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long a request waits for room in the budgets before it gets 429.
pub const BUDGET_WAIT: Duration = Duration::from_secs(1);
/// Body bytes are counted in units of this many bytes (semaphore permits are u32).
const UNIT: usize = 1024;

/// `prewarm-webhook serve` limits.
#[derive(Clone, Debug, clap::Args)]
pub struct LimitsConfig {
    /// Most open connections on the webhook port; more wait in the kernel's
    /// accept queue. Lowered to stay below the open-file limit.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Most open connections on the health port.
    #[arg(long, default_value_t = 32)]
    pub max_health_connections: usize,
    /// Most request body bytes held at once, over all connections (MiB).
    #[arg(long, default_value_t = 64)]
    pub max_inflight_body_mib: usize,
    /// Most admissions being read or decided at once.
    #[arg(long, default_value_t = 256)]
    pub max_concurrent_admissions: usize,
    /// Most concurrent HTTP/2 streams per connection.
    #[arg(long, default_value_t = 32)]
    pub max_http2_streams: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_health_connections: 32,
            max_inflight_body_mib: 64,
            max_concurrent_admissions: 256,
            max_http2_streams: 32,
        }
    }
}

/// The shared budgets of body bytes and admissions.
#[derive(Debug)]
pub struct Budget {
    body_units: Arc<Semaphore>,
    total_units: usize,
    admissions: Arc<Semaphore>,
}

/// Room held by one request; released when dropped.
#[derive(Debug)]
pub struct Held {
    _permit: OwnedSemaphorePermit,
}

impl Budget {
    pub fn new(config: &LimitsConfig) -> Self {
        let total_units = config.max_inflight_body_mib.max(1) * (1024 * 1024 / UNIT);
        Self {
            body_units: Arc::new(Semaphore::new(total_units)),
            total_units,
            admissions: Arc::new(Semaphore::new(config.max_concurrent_admissions.max(1))),
        }
    }

    /// A place among the concurrent admissions, or `None` after waiting `wait`.
    pub async fn admission(&self, wait: Duration) -> Option<Held> {
        acquire(&self.admissions, 1, wait).await
    }

    /// Room for `bytes` more body bytes, or `None` after waiting `wait` (or
    /// at once when they could never fit).
    pub async fn body(&self, bytes: usize, wait: Duration) -> Option<Held> {
        let units = bytes.div_ceil(UNIT).max(1);
        if units > self.total_units {
            return None;
        }
        acquire(&self.body_units, units, wait).await
    }
}

async fn acquire(semaphore: &Arc<Semaphore>, units: usize, wait: Duration) -> Option<Held> {
    let units = u32::try_from(units).ok()?;
    match tokio::time::timeout(wait, semaphore.clone().acquire_many_owned(units)).await {
        Ok(Ok(permit)) => Some(Held { _permit: permit }),
        _ => None,
    }
}

/// `wanted`, lowered to stay clear of the process's open-file limit (read from
/// `/proc/self/limits`; each connection is one descriptor, plus some to spare).
pub fn connection_cap(wanted: usize) -> usize {
    const SPARE: usize = 64;
    let limit = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        text.lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|soft| soft.parse::<usize>().ok())
    });
    match limit {
        Some(limit) => wanted.min(limit.saturating_sub(SPARE).max(1)),
        None => wanted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn budgets_wait_then_refuse() {
        let budget = Budget::new(&LimitsConfig {
            max_inflight_body_mib: 1,
            max_concurrent_admissions: 1,
            ..LimitsConfig::default()
        });
        let first = budget.body(700 * 1024, BUDGET_WAIT).await;
        assert!(first.is_some());
        assert!(budget.body(700 * 1024, Duration::from_millis(20)).await.is_none());
        drop(first);
        assert!(budget.body(700 * 1024, Duration::from_millis(20)).await.is_some());
        assert!(
            budget.body(2 * 1024 * 1024, BUDGET_WAIT).await.is_none(),
            "can never fit"
        );
        let one = budget.admission(BUDGET_WAIT).await;
        assert!(one.is_some());
        assert!(budget.admission(Duration::from_millis(20)).await.is_none());
    }

    #[test]
    fn connections_stay_below_the_file_limit() {
        assert!(connection_cap(usize::MAX) < usize::MAX);
        assert_eq!(connection_cap(10), 10);
    }
}
