//! Pulling through the agent against pulling with CRI `PullImage` directly,
//! from the same local registry into the same containerd, in one run:
//!
//! ```sh
//! cargo build --release -p prewarm-nodeagent --bins --examples
//! target/release/examples/pull_bench [IMAGES] [LAYER_BYTES]    # default 30 images of 4 MiB
//! ```
//!
//! Each side pulls its own IMAGES distinct images (same sizes), one at a time:
//! directly with `PullImage` from this process, and through the real
//! `prewarm-nodeagent pull` binary (`--max-concurrent-pulls 1`), whose peak RSS
//! is sampled from /proc while it runs. Needs root (containerd), and the
//! packages of scripts/install-test-deps.sh.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write;
use std::time::{Duration, Instant};

use prewarm_nodeagent::cri::Cri;
use prewarm_testapi::infra::{containerd, push_with, registry};

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let images: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let bytes: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4 * 1024 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let (_registry, port, _) = registry(dir.path(), "registry", None);
    for i in 0..images * 2 {
        // Distinct contents, so that no two images share a layer.
        let mut payload = vec![0u8; bytes];
        for (j, byte) in payload.iter_mut().enumerate() {
            *byte = ((i * 31 + j * 7) % 251) as u8;
        }
        push_with(port, &format!("bench/image-{i}"), "1", None, dir.path(), &payload);
    }
    let (_containerd, socket) = containerd(dir.path());
    let cri = loop {
        if let Ok(cri) = Cri::connect(&socket).await
            && cri.version(Duration::from_secs(2)).await.is_ok()
        {
            break cri;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!(
        "{images} images of {} KiB per side, one at a time; registry 127.0.0.1:{port}, containerd (native snapshotter)",
        bytes / 1024
    );

    let started = Instant::now();
    for i in 0..images {
        cri.pull(
            &format!("127.0.0.1:{port}/bench/image-{i}:1"),
            None,
            None,
            Duration::from_secs(120),
        )
        .await
        .unwrap();
    }
    let direct = started.elapsed();
    println!(
        "direct CRI PullImage:        {direct:>10.3?}  ({:.1} ms per image)",
        direct.as_secs_f64() * 1e3 / images as f64
    );

    let mut manifest = String::from(
        "apiVersion: apps.kruise.io/v1beta1\nkind: ImageListPullJob\nmetadata: {name: bench}\nspec:\n  completionPolicy: {type: Always}\n  imagePullPolicy: Always\n  images:\n",
    );
    for i in images..images * 2 {
        let _ = writeln!(manifest, "  - 127.0.0.1:{port}/bench/image-{i}:1");
    }
    let job = dir.path().join("job.yaml");
    std::fs::write(&job, manifest).unwrap();
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("prewarm-nodeagent");
    assert!(
        binary.exists(),
        "build it first: cargo build --release -p prewarm-nodeagent"
    );
    let started = Instant::now();
    let mut child = std::process::Command::new(&binary)
        .args([
            "pull",
            "-f",
            job.to_str().unwrap(),
            "--cri-socket",
            socket.to_str().unwrap(),
            "--max-concurrent-pulls",
            "1",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let status = loop {
        peak = peak.max(peak_rss_kib(child.id()));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let agent = started.elapsed();
    assert!(status.success(), "the agent's pulls failed");
    println!(
        "prewarm-nodeagent pull:      {agent:>10.3?}  ({:.1} ms per image, whole process)",
        agent.as_secs_f64() * 1e3 / images as f64
    );
    println!(
        "ratio agent / direct: {:.3}",
        agent.as_secs_f64() / direct.as_secs_f64()
    );
    println!("agent peak RSS: {peak} KiB");
}
