//! The puller against a real containerd (Debian package, CRI plugin) and real
//! registries (Debian docker-registry: one open, one with htpasswd auth), all
//! started by this test on private sockets and loopback ports, with small
//! images pushed through the registry HTTP API by the test itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use prewarm_api::reference::ImageReference;
use prewarm_nodeagent::credentials::Credential;
use prewarm_nodeagent::cri::{Cri, CriError};
use prewarm_nodeagent::puller::{Backoff, Outcome, Policy, Progress, PullSpec};
use prewarm_nodeagent::slots::FairSlots;

/// One pull on its own, with a slot of its own.
async fn pull(cri: &Cri, spec: &PullSpec, backoff: Backoff, progress: impl FnMut(Progress)) -> Outcome {
    prewarm_nodeagent::puller::pull(cri, spec, backoff, &FairSlots::new(1), "", progress).await
}
use prewarm_testapi::infra::{containerd, free_port, push, registry};

fn spec(image: &str) -> PullSpec {
    PullSpec {
        reference: ImageReference::parse(image).unwrap(),
        policy: Policy::Always,
        timeout: Duration::from_secs(30),
        backoff_limit: 0,
        active_deadline: None,
        sandbox: None,
        credentials: Vec::new(),
        image_fs_limit: None,
    }
}

const FAST: Backoff = Backoff {
    initial: Duration::from_millis(50),
    max: Duration::from_millis(200),
};

fn manifest_requests(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("/manifests/") && l.contains("GET") || l.contains("/manifests/") && l.contains("HEAD"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_through_a_real_containerd_from_real_registries() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let htpasswd = dir.join("htpasswd");
    let output = Command::new("htpasswd")
        .args(["-Bbn", "ci", "secret"])
        .output()
        .unwrap();
    std::fs::write(&htpasswd, output.stdout).unwrap();
    let (_open, open_port, open_log) = registry(dir, "open", None);
    let (_private, private_port, _) = registry(dir, "private", Some(&htpasswd));
    let digest = push(open_port, "test/tiny", "1.0", None, dir);
    push(open_port, "test/tiny", "2.0", None, dir);
    push(private_port, "team/private", "1.0", Some("ci:secret"), dir);
    let (_containerd, socket) = containerd(dir);
    let started = Instant::now();
    let cri = loop {
        if let Ok(cri) = Cri::connect(&socket).await
            && cri.version(Duration::from_secs(2)).await.is_ok()
        {
            break cri;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "containerd's CRI did not come up: {}",
            std::fs::read_to_string(dir.join("containerd.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // A pull succeeds and the image is in the runtime.
    let tiny = format!("127.0.0.1:{open_port}/test/tiny:1.0");
    let outcome = pull(&cri, &spec(&tiny), FAST, |_| {}).await;
    assert!(matches!(outcome, Outcome::Pulled { attempts: 1, .. }), "{outcome:?}");
    assert!(cri.image_id(&tiny, Duration::from_secs(5)).await.unwrap().is_some());

    // IfNotPresent skips it without asking the registry; Always asks again.
    let before = manifest_requests(&open_log);
    let mut if_not_present = spec(&tiny);
    if_not_present.policy = Policy::IfNotPresent;
    assert!(matches!(
        pull(&cri, &if_not_present, FAST, |_| {}).await,
        Outcome::Present { .. }
    ));
    assert_eq!(
        manifest_requests(&open_log),
        before,
        "IfNotPresent must not reach the registry"
    );
    assert!(matches!(
        pull(&cri, &spec(&tiny), FAST, |_| {}).await,
        Outcome::Pulled { .. }
    ));
    assert!(manifest_requests(&open_log) > before, "Always asks the registry again");

    // A digest-pinned image.
    let pinned = format!("127.0.0.1:{open_port}/test/tiny@{digest}");
    assert!(matches!(
        pull(&cri, &spec(&pinned), FAST, |_| {}).await,
        Outcome::Pulled { .. }
    ));
    assert!(cri.image_id(&pinned, Duration::from_secs(5)).await.unwrap().is_some());

    // A private image: the right secret works; a wrong one fails with the 401 after backoffLimit + 1 attempts.
    let private = format!("127.0.0.1:{private_port}/team/private:1.0");
    let credential = |password: &str| Credential {
        username: "ci".into(),
        password: password.into(),
        identity_token: String::new(),
        source: "pull secret test/creds".to_owned(),
    };
    let mut right = spec(&private);
    right.credentials = vec![credential("secret")];
    assert!(matches!(pull(&cri, &right, FAST, |_| {}).await, Outcome::Pulled { .. }));
    let mut wrong = spec(&format!("127.0.0.1:{private_port}/team/private:1.0"));
    wrong.credentials = vec![credential("wrong")];
    wrong.backoff_limit = 2;
    let mut attempts_seen = 0;
    let outcome = pull(&cri, &wrong, FAST, |p| {
        if matches!(p, prewarm_nodeagent::puller::Progress::Attempt { .. }) {
            attempts_seen += 1;
        }
    })
    .await;
    match outcome {
        Outcome::Failed {
            error: CriError::Unauthorized(message),
            attempts: 3,
        } => assert!(message.contains("401"), "{message}"),
        other => panic!("expected a 401 after 3 attempts, got {other:?}"),
    }
    assert_eq!(attempts_seen, 3);

    // A missing tag is "not found".
    let missing = pull(
        &cri,
        &spec(&format!("127.0.0.1:{open_port}/test/tiny:9.9")),
        FAST,
        |_| {},
    )
    .await;
    assert!(
        matches!(
            &missing,
            Outcome::Failed {
                error: CriError::NotFound(_),
                ..
            }
        ),
        "{missing:?}"
    );

    // An unreachable registry fails within the deadline.
    let mut unreachable = spec(&format!("127.0.0.1:{}/test/tiny:1.0", free_port()));
    unreachable.backoff_limit = 10;
    unreachable.active_deadline = Some(Duration::from_secs(3));
    let started = Instant::now();
    let outcome = pull(&cri, &unreachable, FAST, |_| {}).await;
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());

    // The command line pulls a seed-style ImagePullJob from the local registry.
    let job = dir.join("job.yaml");
    std::fs::write(
        &job,
        format!("apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: job-with-always\nspec:\n  image: 127.0.0.1:{open_port}/test/tiny:2.0\n  parallelism: 10\n  completionPolicy:\n    type: Always\n    activeDeadlineSeconds: 1200\n  pullPolicy:\n    backoffLimit: 3\n    timeoutSeconds: 300\n"),
    )
    .unwrap();
    let socket_arg = socket.to_str().unwrap().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_prewarm-nodeagent"))
            .args(["pull", "-f", job.to_str().unwrap(), "--cri-socket", &socket_arg])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("127.0.0.1:{open_port}/test/tiny:2.0: pulled")),
        "{stdout}"
    );
}
