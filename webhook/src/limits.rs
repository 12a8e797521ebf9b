//! What a hostile client can make the webhook hold, bounded: connections, body
//! bytes in flight, concurrent reviews of large bodies, HTTP/2 streams and
//! windows, time. A request that does not fit waits briefly, then gets 429 (the
//! API server retries), so memory never grows with what clients send.
//!
//! Small bodies (up to 64 KiB, which covers real AdmissionReviews of these
//! kinds) have a pool of their own, so clients sending huge or never-ending
//! bodies cannot crowd them out; reviews of large bodies run off the I/O
//! threads, a few at a time.

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
/// Bodies up to this size draw from the small pool, and are reviewed inline.
pub const SMALL_BODY: usize = 64 * 1024;
/// The small pool: room for 256 small bodies at once.
const SMALL_POOL: usize = 256 * SMALL_BODY;

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
    /// Most bytes of large request bodies (over 64 KiB) held at once, over all
    /// connections, in MiB; small bodies have a 16 MiB pool of their own.
    #[arg(long, default_value_t = 64)]
    pub max_inflight_body_mib: usize,
    /// Most large bodies reviewed at once (off the I/O threads).
    #[arg(long, default_value_t = 2)]
    pub max_large_reviews: usize,
    /// Most concurrent HTTP/2 streams per connection.
    #[arg(long, default_value_t = 32)]
    pub max_http2_streams: u32,
    /// Most admission decisions logged per second; the next line logged says
    /// how many were left out (metrics count every decision).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_decision_lines_per_second: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_health_connections: 32,
            max_inflight_body_mib: 64,
            max_large_reviews: 2,
            max_http2_streams: 32,
            max_decision_lines_per_second: 200,
        }
    }
}

/// The shared budgets of body bytes and of large reviews.
#[derive(Debug)]
pub struct Budget {
    small_bodies: Arc<Semaphore>,
    large_bodies: Arc<Semaphore>,
    large_units: usize,
    large_reviews: Arc<Semaphore>,
}

/// Room held by one request; released when dropped.
#[derive(Debug)]
pub struct Held {
    _permit: OwnedSemaphorePermit,
}

impl Budget {
    pub fn new(config: &LimitsConfig) -> Self {
        let large_units = config.max_inflight_body_mib.max(1) * (1024 * 1024 / UNIT);
        Self {
            small_bodies: Arc::new(Semaphore::new(SMALL_POOL / UNIT)),
            large_bodies: Arc::new(Semaphore::new(large_units)),
            large_units,
            large_reviews: Arc::new(Semaphore::new(config.max_large_reviews.max(1))),
        }
    }

    /// Room for `more` body bytes of a request that holds `held` already, or
    /// `None` after waiting `wait` (or at once when they could never fit).
    pub async fn body(&self, held: usize, more: usize, wait: Duration) -> Option<Held> {
        let units = more.div_ceil(UNIT).max(1);
        if held + more <= SMALL_BODY {
            return acquire(&self.small_bodies, units, wait).await;
        }
        if units > self.large_units {
            return None;
        }
        acquire(&self.large_bodies, units, wait).await
    }

    /// A turn among the reviews of large bodies, or `None` after waiting `wait`.
    pub async fn large_review(&self, wait: Duration) -> Option<Held> {
        acquire(&self.large_reviews, 1, wait).await
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
            max_large_reviews: 1,
            ..LimitsConfig::default()
        });
        let first = budget.body(0, 700 * 1024, BUDGET_WAIT).await;
        assert!(first.is_some());
        let short = Duration::from_millis(20);
        assert!(budget.body(0, 700 * 1024, short).await.is_none());
        assert!(
            budget.body(0, 2 * 1024, short).await.is_some(),
            "small bodies have their own pool"
        );
        drop(first);
        assert!(budget.body(0, 700 * 1024, short).await.is_some());
        assert!(
            budget.body(0, 2 * 1024 * 1024, BUDGET_WAIT).await.is_none(),
            "can never fit"
        );
        let one = budget.large_review(BUDGET_WAIT).await;
        assert!(one.is_some());
        assert!(budget.large_review(short).await.is_none());
    }

    #[test]
    fn connections_stay_below_the_file_limit() {
        assert!(connection_cap(usize::MAX) < usize::MAX);
        assert_eq!(connection_cap(10), 10);
    }
}
