//! The pure `review` function alone, per request: the ImagePullJob mutate and
//! validate of `bench.rs`, decoded, decided and answered in this thread, in
//! interleaved rounds.
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

/// Rounds per route, interleaved; the fastest and the median round are shown,
/// since other tenants of a shared machine slow some rounds down.
const ROUNDS: u32 = 7;

fn main() {
    let iterations: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let per_round = (iterations / ROUNDS).max(1);
    let gates = FeatureGates::parse("ImagePullJobGate=true").unwrap();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let body = body();
    let routes: Vec<Route> = Route::all().filter(|r| r.kind.name() == "ImagePullJob").collect();
    let mut rounds = vec![Vec::new(); routes.len()];
    let mut answered = vec![0usize; routes.len()];
    for _ in 0..ROUNDS {
        for (i, route) in routes.iter().enumerate() {
            let started = Instant::now();
            for _ in 0..per_round {
                answered[i] = review(*route, &body, &gates, &now).body.len();
            }
            rounds[i].push(started.elapsed().as_secs_f64() * 1e6 / f64::from(per_round));
        }
    }
    for ((route, mut micros), bytes) in routes.iter().zip(rounds).zip(answered) {
        micros.sort_by(f64::total_cmp);
        println!(
            "{:<44} {:5.2} µs per request fastest round, {:5.2} median ({bytes} bytes answered)",
            route.path(),
            micros[0],
            micros[micros.len() / 2],
        );
    }
}
