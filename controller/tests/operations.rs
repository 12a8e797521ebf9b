//! The controller as an operator runs it: leader election with a standby,
//! restarts, and failing API writes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use prewarm_api::v1beta1::{ImagePullJob, NodeImage};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_dies_and_a_restart_finishes_the_job() {
    let Running {
        cluster,
        controller: mut leader,
        _agent,
    } = running(Cluster::start().await, &["--identity=first"]).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(cluster.client.clone(), "prewarm-system");
    let holder = || async {
        let lease = leases.get_opt("prewarm-controller").await.unwrap()?;
        lease.spec?.holder_identity
    };
    eventually("first holds the lease", 10 * SECONDS, || async {
        (holder().await.as_deref() == Some("first")).then_some(())
    })
    .await;
    let standby = cluster.controller(&["--identity=second"]);
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "quay.io/silent/app:1", "parallelism": 1, "completionPolicy": {"type": "Never"}});
    jobs.create(&PostParams::default(), &job("long", spec)).await.unwrap();
    wait_status(&jobs, "long", "the first node synced", 10 * SECONDS, |s| {
        s["active"] == 1
    })
    .await;
    leader.child.kill().await.unwrap();
    eventually("second takes over within the lease duration", 10 * SECONDS, || async {
        (holder().await.as_deref() == Some("second")).then_some(())
    })
    .await;
    let spec = json!({"image": "nginx:2", "completionPolicy": {"type": "Always"}, "parallelism": 3});
    jobs.create(&PostParams::default(), &job("after", spec)).await.unwrap();
    wait_status(&jobs, "after", "the new leader completes a job", 15 * SECONDS, |s| {
        s["completionTime"].is_string()
    })
    .await;
    let silent = status(&jobs, "long").await.unwrap();
    assert_eq!(silent["active"], 1, "no duplicate work after the takeover: {silent}");
    let owners = tag_owners(&cluster, "node-1", "quay.io/silent/app", "1").await.unwrap();
    assert_eq!(owners, vec!["long".to_owned()], "one owner entry, written once");
    let node_image = Api::<NodeImage>::all(cluster.client.clone())
        .get("node-1")
        .await
        .unwrap();
    let tag = &node_image.spec.images.unwrap()["quay.io/silent/app"].tags[0];
    assert_eq!(tag.version, Some(0), "the new leader did not write the tag again");
    assert_eq!(
        tag_owners(&cluster, "node-2", "quay.io/silent/app", "1").await,
        None,
        "parallelism 1 held"
    );
    let metrics = standby.metrics().await;
    assert!(metrics.contains("prewarm_controller_leader 1"));
    assert!(standby.terminate().await.success());
    let lease = leases.get("prewarm-controller").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None, "SIGTERM releases the lease");

    // Deleted while no controller runs: the next one cleans up.
    jobs.delete("long", &DeleteParams::default()).await.unwrap();
    let _restarted = cluster.controller(&["--identity=third"]);
    eventually("the restarted controller removes the tag", 15 * SECONDS, || async {
        tag_owners(&cluster, "node-1", "quay.io/silent/app", "1")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    let reasons = event_reasons(&cluster, "after").await;
    assert!(reasons.contains("Completed"), "the new leader reports: {reasons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_converge_through_failing_api_writes() {
    let Running {
        cluster,
        controller,
        _agent,
    } = running(Cluster::start().await, &[]).await;
    let jobs: Api<ImagePullJob> = Api::namespaced(cluster.client.clone(), "default");
    let spec = json!({"image": "nginx:faults", "parallelism": 3, "completionPolicy": {"type": "Always"}});
    jobs.create(&PostParams::default(), &job("faults", spec)).await.unwrap();
    // The next 6 writes of anyone (controller and agent) fail with 500.
    let faults = format!("{}/testapi/faults?writes=6&code=500", cluster.api.url());
    let injected = std::process::Command::new("curl")
        .args(["-sf", &faults])
        .status()
        .unwrap();
    assert!(injected.success());
    let done = wait_status(
        &jobs,
        "faults",
        "completion despite failing writes",
        30 * SECONDS,
        |s| s["completionTime"].is_string(),
    )
    .await;
    assert_eq!(done["succeeded"], 3, "{done}");
    assert!(controller.terminate().await.success());
}

/// README's out-of-cluster command against a cluster without the Lease's
/// namespace: one line naming the flag, exit 2, rather than retrying forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_lease_namespace_is_one_clear_line() {
    use tokio::io::AsyncReadExt;
    let cluster = Cluster::start_without_webhook().await;
    // README's out-of-cluster form: the cluster named by --kubeconfig, whatever $KUBECONFIG says.
    let kubeconfig = format!("--kubeconfig={}", cluster.kubeconfig.display());
    let elsewhere = cluster.kubeconfig.with_file_name("no-such-kubeconfig");
    let mut controller = cluster.controller_as(&elsewhere, &[&kubeconfig, "--leader-elect-namespace=nowhere"]);
    let status = tokio::time::timeout(10 * SECONDS, controller.child.wait())
        .await
        .expect("the controller exits")
        .unwrap();
    let mut stderr = String::new();
    controller
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("namespace \"nowhere\" for the leader-election Lease does not exist")
            && last.contains("--leader-elect-namespace"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("ErrorResponse"),
        "no dump of the API's Status: {stderr}"
    );
}
