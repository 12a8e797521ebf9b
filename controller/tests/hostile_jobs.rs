//! Jobs a tenant may create that once stopped or corrupted the controller's
//! work for everyone (issue #23), against the real binary and the test API server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use kube::Api;
use kube::api::PostParams;
use prewarm_api::v1beta1::ImagePullJob;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_the_largest_deadline_stalls_no_other_job() {
    let Running {
        cluster,
        mut controller,
        _agent,
    } = running(Cluster::start().await, &[]).await;
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    // The webhook accepts any deadline at or above timeoutSeconds; this one asks
    // to be looked at again in 2^63 - 1 seconds.
    let forever = json!({"image": "nginx:1.21", "parallelism": 1,
        "completionPolicy": {"type": "Always", "activeDeadlineSeconds": i64::MAX},
        "pullPolicy": {"timeoutSeconds": 50, "backoffLimit": 1}});
    jobs.create(&PostParams::default(), &job("forever", forever))
        .await
        .unwrap();
    wait_status(&jobs, "forever", "desired 3", 5 * SECONDS, |s| s["desired"] == 3).await;

    let after = json!({"image": "nginx:1.22", "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("after", after)).await.unwrap();
    for name in ["after", "forever"] {
        let done = wait_status(&jobs, name, "completion", 20 * SECONDS, |s| {
            s["completionTime"].is_string()
        })
        .await;
        assert_eq!(done["succeeded"], 3, "{name}: {done}");
    }
    assert!(
        controller.child.try_wait().unwrap().is_none(),
        "the controller is still running"
    );
    assert!(controller.terminate().await.success());
}
