//! The plain-HTTP port of health, readiness and metrics that every binary
//! serves: HTTP/1.1 only, few connections, a deadline on request heads and
//! silent connections closed, so probes and scrapes keep working while
//! someone holds connections open or sends bytes slowly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::accept::accept_until;
use crate::idle::IdleTimeout;

/// Most open connections on an admin port: probes, a scraper, a person.
pub const MAX_CONNECTIONS: usize = 32;
/// A request head must arrive within this.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections silent this long are closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `stop` completes.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    max_connections: usize,
    stop: impl Future<Output = ()>,
) {
    let service = TowerToHyperService::new(router);
    let mut http1 = http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let http1 = Arc::new(http1);
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let serve = |tcp: TcpStream, slot: OwnedSemaphorePermit| {
        let (http1, service) = (http1.clone(), service.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let io = TokioIo::new(IdleTimeout::new(tcp, IDLE_TIMEOUT));
            let _ = http1.serve_connection(io, service).await;
        });
    };
    accept_until(&listener, stop, &slots, &serve).await;
}
