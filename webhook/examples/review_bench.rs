//! The pure `review` function alone, per request: the ImagePullJob mutate and
//! validate of `bench.rs`, minimal and as the API server sends it after
//! `kubectl apply`, decoded, decided and answered in this thread, in
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
use serde_json::json;

// The allocator of the real binary, so the figures match what it spends.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn body() -> Vec<u8> {
    serde_json::to_vec(&review_body::review("bench-1")).unwrap()
}

/// The same review as the API server sends it after `kubectl apply`: the
/// object with its server-set metadata, the last-applied annotation and
/// managed fields, and the request's other members.
fn as_applied() -> Vec<u8> {
    let mut review = review_body::review("bench-1");
    let request = &mut review["request"];
    let applied = serde_json::to_string(&request["object"]).unwrap();
    request["requestKind"] = request["kind"].clone();
    request["requestResource"] = request["resource"].clone();
    request["userInfo"]["uid"] = json!("b1c2d3e4-0000-4000-8000-000000000001");
    request["userInfo"]["extra"] = json!({"authentication.kubernetes.io/credential-id": ["X509SHA256=3f8e1b"]});
    request["options"] = json!({
        "kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1",
        "fieldManager": "kubectl-client-side-apply", "fieldValidation": "Strict"
    });
    request["object"]["metadata"] = json!({
        "name": "job-with-always", "namespace": "default",
        "uid": "0e9f3a52-7c1d-4f7e-9a55-2f0b6c1d8e47", "generation": 1,
        "creationTimestamp": "2026-11-30T02:00:00Z",
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{applied}\n")},
        "managedFields": [{
            "manager": "kubectl-client-side-apply", "operation": "Update",
            "apiVersion": "apps.kruise.io/v1alpha1", "time": "2026-11-30T02:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
                "f:spec": {
                    ".": {}, "f:image": {}, "f:parallelism": {},
                    "f:completionPolicy": {".": {}, "f:activeDeadlineSeconds": {}, "f:ttlSecondsAfterFinished": {}, "f:type": {}},
                    "f:pullPolicy": {".": {}, "f:backoffLimit": {}, "f:timeoutSeconds": {}},
                    "f:selector": {".": {}, "f:names": {}}
                }
            }
        }]
    });
    serde_json::to_vec(&review).unwrap()
}

/// Rounds per route, interleaved; the fastest and the median round are shown,
/// since other tenants of a shared machine slow some rounds down.
const ROUNDS: u32 = 7;

fn main() {
    let iterations: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let per_round = (iterations / ROUNDS).max(1);
    let policy = prewarm_api::admission::Policy::gates(FeatureGates::parse("ImagePullJobGate=true").unwrap());
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let bodies = [("minimal", body()), ("as after kubectl apply", as_applied())];
    let routes: Vec<Route> = Route::all().filter(|r| r.kind.name() == "ImagePullJob").collect();
    let cases: Vec<(Route, &str, &[u8])> = bodies
        .iter()
        .flat_map(|(name, body)| routes.iter().map(move |route| (*route, *name, body.as_slice())))
        .collect();
    let mut rounds = vec![Vec::new(); cases.len()];
    let mut answered = vec![0usize; cases.len()];
    for _ in 0..ROUNDS {
        for (i, (route, _, body)) in cases.iter().enumerate() {
            let started = Instant::now();
            for _ in 0..per_round {
                answered[i] = review(*route, body, &policy, &now).body.len();
            }
            rounds[i].push(started.elapsed().as_secs_f64() * 1e6 / f64::from(per_round));
        }
    }
    for (((route, name, body), mut micros), bytes) in cases.iter().zip(rounds).zip(answered) {
        micros.sort_by(f64::total_cmp);
        println!(
            "{:<40} {name:<24} {:>5} B  {:5.2} µs per request fastest round, {:5.2} median ({bytes} bytes answered)",
            route.path(),
            body.len(),
            micros[0],
            micros[micros.len() / 2],
        );
    }
}
