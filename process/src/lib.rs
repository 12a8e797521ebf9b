//! Process scaffolding shared by prewarm's binaries.

pub mod accept;
pub mod admin_server;
pub mod idle;
pub mod live_gates;
pub mod log_limit;
pub mod logs;
pub mod openkruise;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Resolves on the first SIGTERM (what kubelet sends) or Ctrl-C (SIGINT),
/// which starts the caller's drain. A second one while the drain runs ends the
/// process at once (exit status 130), as a user who presses Ctrl-C again expects.
/// The handlers are installed when this is called (inside the runtime), not
/// when the future is first polled: a signal that arrives while the caller
/// is still starting up then drains instead of killing the process.
pub fn terminated() -> impl std::future::Future<Output = ()> {
    // Both streams exist from the start, so a second signal that arrives
    // however soon after the first is seen.
    let streams = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (Ok(mut terminate), Ok(mut interrupt)) = streams else {
            // No signal handling (not expected on Linux): Ctrl-C alone, once.
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        either(&mut terminate, &mut interrupt).await;
        tokio::spawn(async move {
            either(&mut terminate, &mut interrupt).await;
            eprintln!("second signal: exiting without waiting for the drain");
            std::process::exit(130);
        });
    }
}

async fn either(terminate: &mut Signal, interrupt: &mut Signal) {
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}
