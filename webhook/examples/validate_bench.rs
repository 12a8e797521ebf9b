//! Offline validation throughput over a generated corpus:
//!
//! ```sh
//! cargo build --release -p prewarm-webhook --bins --examples
//! target/release/examples/validate_bench [DOCUMENTS]     # default 100 000
//! ```
//!
//! Writes DOCUMENTS manifests (ImagePullJob, ImageListPullJob, NodeImage, a
//! ConfigMap among them, one in ten invalid) into 100 files, then times the
//! real `prewarm-webhook validate` binary over them, beside a baseline in the
//! same run: parsing the same files into JSON values with serde-saphyr alone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

const FILES: usize = 100;

fn document(i: usize) -> String {
    let invalid = i % 10 == 9;
    match i % 4 {
        0 => format!(
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: job-{i}\n  namespace: team-{ns}\nspec:\n  image: {image}\n  parallelism: 10\n  selector:\n    names:\n    - node-1\n    - node-2\n  completionPolicy:\n    type: Always\n    activeDeadlineSeconds: 1200\n    ttlSecondsAfterFinished: 300\n  pullPolicy:\n    backoffLimit: 3\n    timeoutSeconds: 300\n",
            ns = i % 7,
            image = if invalid {
                "Nginx:1.9.1".to_owned()
            } else {
                format!("registry.example.com/team/app-{i}:1.{i}")
            },
        ),
        1 => format!(
            "apiVersion: apps.kruise.io/v1beta1\nkind: ImageListPullJob\nmetadata:\n  name: list-{i}\nspec:\n  images:\n  - nginx:1.9.1\n  - busybox:1.29.2\n  - {third}\n  selector:\n    matchLabels:\n      node-type: worker\n  completionPolicy:\n    type: Never\n",
            third = if invalid { "busybox:1.29.2" } else { "redis:7" },
        ),
        2 => format!(
            "apiVersion: apps.kruise.io/v1beta1\nkind: NodeImage\nmetadata:\n  name: node-{i}\nspec:\n  images:\n    ubuntu:\n      tags:\n      - tag: \"22.04\"\n        pullPolicy:\n          ttlSecondsAfterFinished: {ttl}\n",
            ttl = if invalid { -1 } else { 300 },
        ),
        _ => format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: config-{i}\ndata:\n  key: value-{i}\n"),
    }
}

fn main() {
    let documents: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = std::env::temp_dir().join(format!("prewarm-validate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let per_file = documents.div_ceil(FILES);
    let mut bytes = 0;
    for f in 0..FILES {
        let mut text = String::new();
        for d in 0..per_file {
            let i = f * per_file + d;
            if i >= documents {
                break;
            }
            let _ = write!(text, "---\n{}", document(i));
        }
        bytes += text.len();
        std::fs::write(dir.join(format!("manifests-{f:03}.yaml")), text).unwrap();
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{documents} documents in {FILES} files ({:.1} MiB), {cpus} CPUs",
        bytes as f64 / 1048576.0
    );

    // Baseline: parse every document into a JSON value with serde-saphyr, one thread.
    let started = Instant::now();
    let mut parsed = 0;
    for f in 0..FILES {
        let text = std::fs::read_to_string(dir.join(format!("manifests-{f:03}.yaml"))).unwrap();
        let values: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        parsed += values.len();
    }
    let baseline = started.elapsed();
    println!(
        "baseline: serde-saphyr parse only, 1 thread   {:>8.0} documents/s   ({parsed} documents in {baseline:.2?})",
        parsed as f64 / baseline.as_secs_f64()
    );

    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("prewarm-webhook");
    assert!(
        binary.exists(),
        "build it first: cargo build --release -p prewarm-webhook"
    );
    for output in ["text", "json"] {
        let started = Instant::now();
        let status = Command::new(&binary)
            .args(["validate", "--feature-gates=ImagePullJobGate=true", "--output", output])
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(status.code(), Some(1), "one in ten documents is invalid");
        println!(
            "prewarm-webhook validate --output {output:<5}    {:>8.0} documents/s   ({documents} documents in {elapsed:.2?}, whole process)",
            documents as f64 / elapsed.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
