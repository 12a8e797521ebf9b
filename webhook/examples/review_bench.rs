//! The pure `review` function alone, per request: the ImagePullJob mutate and
//! validate of `bench.rs`, decoded, decided and answered in this thread.
//!
//! ```sh
//! cargo run --release -p prewarm-webhook --example review_bench -- [ITERATIONS]
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "shared/review_body.rs"]
mod review_body;

use std::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::gates::FeatureGates;
use prewarm_webhook::review::{Route, review};

// The allocator of the real binary, so the figures match what it spends.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn body() -> Vec<u8> {
    serde_json::to_vec(&review_body::review("bench-1")).unwrap()
}

fn main() {
    let iterations: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let gates = FeatureGates::parse("ImagePullJobGate=true").unwrap();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let body = body();
    for route in Route::all().filter(|r| r.kind.name() == "ImagePullJob") {
        let mut answered = 0usize;
        let started = Instant::now();
        for _ in 0..iterations {
            answered += review(route, &body, &gates, &now).body.len();
        }
        let per_request = started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations);
        println!(
            "{:<44} {per_request:7.2} µs per request ({} bytes answered)",
            route.path(),
            answered / iterations as usize
        );
    }
}
