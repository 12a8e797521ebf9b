//! Process scaffolding shared by prewarm's binaries.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Resolves on the first SIGTERM (what kubelet sends) or Ctrl-C (SIGINT),
/// which starts the caller's drain. A second one while the drain runs ends the
/// process at once (exit status 130), as a user who presses Ctrl-C again expects.
pub async fn terminated() {
    // Both streams exist from the start, so a second signal that arrives
    // however soon after the first is seen.
    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
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

async fn either(terminate: &mut Signal, interrupt: &mut Signal) {
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
}
