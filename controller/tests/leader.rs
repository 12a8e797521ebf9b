//! Leader election against the test API server: a leader whose renewals hang
//! steps down within the renew deadline, before a standby may take the lease.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use kube::Client;
use prewarm_controller::leader::{Elector, LeaseConfig};
use prewarm_testapi::{Options, TestApi};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_renewal_gives_the_lease_up_within_the_renew_deadline() {
    let api = TestApi::start(Options::default()).await.unwrap();
    let client = Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let duration = Duration::from_secs(3);
    let mut elector = Elector::new(
        client,
        LeaseConfig {
            namespace: "default".into(),
            name: "prewarm-controller".into(),
            identity: "leader".into(),
            duration,
            retry_period: Duration::from_millis(200),
        },
    );
    tokio::time::timeout(Duration::from_secs(5), elector.acquire())
        .await
        .unwrap()
        .unwrap();
    // Every request from now on takes a minute: the renewals hang.
    let faults = format!("{}/testapi/faults?latencyMs=60000", api.url());
    let status = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", &faults])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&status.stdout), "204");
    let started = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), elector.hold())
        .await
        .expect("hold() did not return while its renewal hung");
    let stepped_down_after = started.elapsed();
    assert!(
        stepped_down_after < duration,
        "stepped down after {stepped_down_after:?}, when the lease ({duration:?}) may already be another's"
    );
}
