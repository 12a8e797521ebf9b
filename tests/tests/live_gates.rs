//! Live feature gates through two webhook replicas under the shipped RBAC:
//! every toggle reaches both within the bound, measured from answer times.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::install::{Installed, SEED_JOB, http_get, installed, replica};
use serde_json::{Value, json};

/// An AdmissionReview creating the seed job, as the API server sends it.
fn create_review(uid: usize) -> String {
    let job: Value = serde_saphyr::from_str(SEED_JOB).unwrap();
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": format!("00000000-0000-4000-8000-{uid:012}"),
        "kind": {"group": "apps.kruise.io", "version": "v1alpha1", "kind": "ImagePullJob"},
        "resource": {"group": "apps.kruise.io", "version": "v1alpha1", "resource": "imagepulljobs"},
        "name": "job-with-always", "namespace": "default", "operation": "CREATE",
        "userInfo": {"username": "kubernetes-admin"}, "object": job, "dryRun": false}})
    .to_string()
}

/// The feature gate ConfigMap holding `value`.
fn gates_config_map(value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "prewarm-feature-gates", "namespace": "prewarm-system"},
           "data": {"featureGates": value}})
}

/// Two webhook replicas under the shipped RBAC follow the gate ConfigMap while
/// a client creates jobs through each: from the answer times, no replica
/// answers with the old value to a request sent more than 2 s after a write,
/// and a value that does not parse changes nothing but the refusal metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn toggled_gates_reach_every_replica_within_two_seconds() {
    const BOUND: Duration = Duration::from_secs(2);
    let Installed {
        api,
        kubectl: _kubectl,
        dir,
        kubeconfig,
    } = installed("manifests/base").await;
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let ((a, a_certs), (b, _)) = tokio::join!(
        replica(&a_dir, &kubeconfig, |_| {}),
        replica(&b_dir, &kubeconfig, |_| {})
    );
    let replicas = [
        (a.local_addr().unwrap(), a.health_addr().unwrap()),
        (b.local_addr().unwrap(), b.health_addr().unwrap()),
    ];
    tokio::spawn(a.run(std::future::pending()));
    tokio::spawn(b.run(std::future::pending()));
    let ca_pem = std::fs::read(a_certs.join("ca.crt")).unwrap();
    let cas: Vec<_> = rustls::pki_types::pem::PemObject::pem_slice_iter(&ca_pem)
        .collect::<Result<_, _>>()
        .unwrap();

    // Each caller records (sent, replica, allowed) for every answer.
    let started = tokio::time::Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let callers: Vec<_> = replicas
        .iter()
        .enumerate()
        .map(|(replica, (address, _))| {
            let (address, cas, stop) = (*address, cas.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let sent = started.elapsed();
                    let body = create_review(answers.len());
                    let path = "/validate-apps-kruise-io-imagepulljob";
                    let host = "prewarm-webhook.prewarm-system.svc";
                    let answer = prewarm_testapi::admission::post(address, host, path, cas.clone(), body)
                        .await
                        .unwrap();
                    let review: Value = serde_json::from_slice(&answer).unwrap();
                    answers.push((sent, started.elapsed(), replica, review["response"]["allowed"] == true));
                }
                answers
            })
        })
        .collect();

    // Writes: on, off, on, a typo (the gates stay on), off. Each holds 3 s.
    let values = [
        "ImagePullJobGate=true",
        "ImagePullJobGate=false",
        "ImagePullJobGate=true",
        "ImagePullJobGate=ture",
        "ImagePullJobGate=false",
    ];
    let mut writes = Vec::new();
    for value in values {
        writes.push((started.elapsed(), value));
        api.put(&gates_config_map(value)).unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        if value.ends_with("ture") {
            for (_, health) in &replicas {
                let metrics = tokio::task::block_in_place(|| http_get(*health, "/metrics"));
                assert!(metrics.contains("prewarm_feature_gates_config_refused 1"), "{metrics}");
                assert!(
                    metrics.contains("prewarm_feature_gate_enabled{gate=\"ImagePullJobGate\"} 1"),
                    "{metrics}"
                );
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answers = Vec::new();
    for caller in callers {
        answers.extend(caller.await.unwrap());
    }

    // What each write leaves in force: the typo keeps the value before it.
    let mut in_force = Vec::new();
    for (at, value) in &writes {
        let on = match *value {
            "ImagePullJobGate=true" => true,
            "ImagePullJobGate=false" => false,
            _ => in_force.last().map(|(_, on)| *on).unwrap(),
        };
        in_force.push((*at, on));
    }
    // An answer is decided between its sending and its receipt: it may show
    // any value in force from BOUND before it was sent until it came back.
    let value_at = |t: Duration| in_force.iter().rev().find(|(at, _)| *at <= t).map(|(_, on)| *on);
    let mut checked = 0;
    let mut slowest = Duration::ZERO;
    for (sent, received, replica, allowed) in &answers {
        let Some(at_sending) = value_at(*sent) else {
            continue;
        };
        checked += 1;
        let later = in_force
            .iter()
            .any(|(at, on)| at > sent && at <= received && on == allowed);
        if *allowed == at_sending || later {
            continue;
        }
        // The old value: allowed only within the bound after the write that changed it.
        let (written, _) = in_force.iter().rev().find(|(at, _)| at <= sent).unwrap();
        let lag = *sent - *written;
        slowest = slowest.max(lag);
        assert!(
            lag <= BOUND,
            "replica {replica} answered allowed={allowed} to a request sent {lag:?} after the gate became {at_sending}"
        );
    }
    let counted = answers.len();
    assert!(counted > 100, "too few answers to mean anything: {counted}");
    for replica in 0..2 {
        assert!(answers.iter().any(|(_, _, r, allowed)| *r == replica && *allowed));
        assert!(answers.iter().any(|(_, _, r, allowed)| *r == replica && !*allowed));
    }
    eprintln!(
        "{counted} answers ({checked} after the first write) over {} writes; the latest old value came {slowest:?} after its write",
        writes.len()
    );
}
