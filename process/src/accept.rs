//! Accept loops that stay within a connection cap and cannot spin: at the cap
//! they stop accepting (clients wait in the kernel's queue), and after an
//! accept error (such as running out of file descriptors) they back off, with
//! the warning rate-limited.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::log_limit::LogLimit;

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts connections until `stop` completes; each holds one of `slots` while open.
pub async fn accept_until(
    listener: &TcpListener,
    stop: impl Future<Output = ()>,
    slots: &Arc<Semaphore>,
    serve: &impl Fn(TcpStream, OwnedSemaphorePermit),
) {
    tokio::pin!(stop);
    let warnings = LogLimit::new(1);
    let mut backoff = Duration::ZERO;
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
            () = &mut stop => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => return,
        };
        match accepted {
            Ok((tcp, _)) => {
                backoff = Duration::ZERO;
                serve(tcp, slot);
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
                if let Some(unlogged) = warnings.allow() {
                    tracing::warn!(error = %e, retry_in = ?backoff, unlogged, "accepting a connection");
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut stop => return,
                }
            }
        }
    }
}
