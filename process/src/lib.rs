//! Process scaffolding shared by prewarm's binaries.

/// Resolves on the first SIGTERM (what kubelet sends) or Ctrl-C, which starts
/// the caller's drain. A second one while the drain runs ends the process at
/// once (exit status 130), as a user who presses Ctrl-C again expects.
pub async fn terminated() {
    signal().await;
    tokio::spawn(async {
        signal().await;
        eprintln!("second signal: exiting without waiting for the drain");
        std::process::exit(130);
    });
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut sigterm) => {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = ctrl_c => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
