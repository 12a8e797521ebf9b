//! The puller against a fake CRI server (tonic, on a private unix socket) for
//! what a real runtime cannot be made to do on demand: slow pulls, failures
//! per credential, concurrency, sandbox metadata.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use prewarm_api::reference::ImageReference;
use prewarm_nodeagent::credentials::Credential;
use prewarm_nodeagent::cri::{Cri, CriError, Sandbox, discover};
use prewarm_nodeagent::puller::{Backoff, Outcome, Policy, Progress, PullSpec};
use prewarm_nodeagent::slots::FairSlots;

/// One pull on its own, with a slot of its own.
async fn pull(cri: &Cri, spec: &PullSpec, backoff: Backoff, progress: impl FnMut(Progress)) -> Outcome {
    prewarm_nodeagent::puller::pull(cri, spec, backoff, &FairSlots::new(1), "", progress).await
}

mod common;

use common::{Behaviour, serve};

fn spec(image: &str) -> PullSpec {
    PullSpec {
        reference: ImageReference::parse(image).unwrap(),
        policy: Policy::Always,
        timeout: Duration::from_secs(5),
        backoff_limit: 3,
        active_deadline: None,
        sandbox: None,
        credentials: Vec::new(),
        image_fs_limit: None,
    }
}

const FAST: Backoff = Backoff {
    initial: Duration::from_millis(10),
    max: Duration::from_millis(40),
};

async fn cri(socket: &Path) -> Cri {
    Cri::connect(socket).await.unwrap()
}

#[tokio::test]
async fn a_slow_pull_hits_the_timeout_on_every_attempt() {
    let server = serve(Behaviour {
        pull_delay_ms: 3000.into(),
        ..Behaviour::default()
    })
    .await;
    let mut spec = spec("registry.example.com/slow:1");
    spec.timeout = Duration::from_millis(200);
    spec.backoff_limit = 2;
    let started = Instant::now();
    let outcome = pull(&cri(&server.socket).await, &spec, FAST, |_| {}).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            error: CriError::DeadlineExceeded(Duration::from_millis(200)),
            attempts: 3
        }
    );
    assert_eq!(
        server.behaviour.pulls.lock().unwrap().len(),
        3,
        "backoffLimit + 1 attempts"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "each attempt is cut at its timeout"
    );
}

#[tokio::test]
async fn the_active_deadline_cuts_retries() {
    let server = serve(Behaviour {
        pull_delay_ms: 3000.into(),
        ..Behaviour::default()
    })
    .await;
    let mut spec = spec("registry.example.com/slow:1");
    spec.timeout = Duration::from_millis(300);
    spec.backoff_limit = 10;
    spec.active_deadline = Some(Duration::from_millis(700));
    let started = Instant::now();
    let outcome = pull(
        &cri(&server.socket).await,
        &spec,
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(100),
        },
        |_| {},
    )
    .await;
    let Outcome::Failed { error, attempts } = outcome else {
        panic!("expected a failure")
    };
    assert!((2..11).contains(&attempts), "{attempts}");
    assert!(error.to_string().contains("activeDeadlineSeconds"), "{error}");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn if_not_present_asks_first_and_always_pulls_again() {
    let present = "docker.io/library/nginx:1.25".to_owned();
    let server = serve(Behaviour {
        present: vec![present.clone()],
        ..Behaviour::default()
    })
    .await;
    let cri = cri(&server.socket).await;
    let mut if_not_present = spec("nginx:1.25");
    if_not_present.policy = Policy::IfNotPresent;
    assert!(matches!(
        pull(&cri, &if_not_present, FAST, |_| {}).await,
        Outcome::Present { .. }
    ));
    assert!(
        server.behaviour.pulls.lock().unwrap().is_empty(),
        "no pull for a present image"
    );
    assert!(matches!(
        pull(&cri, &spec("nginx:1.25"), FAST, |_| {}).await,
        Outcome::Pulled { attempts: 1, .. }
    ));
    let digest = "nginx:1.25@sha256:c5dd085dcc7c78a296c80b87916831fd19a3f447d94b99580ccd19a052720211";
    pull(&cri, &spec(digest), FAST, |_| {}).await;
    let pulled: Vec<String> = server
        .behaviour
        .pulls
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.image.clone().unwrap().image)
        .collect();
    assert_eq!(
        pulled,
        [
            present,
            "docker.io/library/nginx@sha256:c5dd085dcc7c78a296c80b87916831fd19a3f447d94b99580ccd19a052720211"
                .to_owned()
        ]
    );
}

#[tokio::test]
async fn credentials_are_tried_in_order_and_sandbox_metadata_is_sent() {
    let server = serve(Behaviour {
        accepted_users: vec!["right".into()],
        ..Behaviour::default()
    })
    .await;
    let cri = cri(&server.socket).await;
    let credential = |user: &str| Credential {
        username: user.into(),
        password: "hunter2".into(),
        identity_token: String::new(),
        source: "pull secret test/creds".to_owned(),
    };
    let mut spec = spec("127.0.0.1:5001/team/app:1.0");
    spec.credentials = vec![credential("wrong"), credential("right")];
    spec.sandbox = Some(Sandbox {
        labels: HashMap::from([("io.kubernetes.image.app".into(), "foo".into())]),
        annotations: HashMap::from([("io.kubernetes.image.metrics.tags".into(), "cluster=cn-shanghai".into())]),
    });
    assert!(matches!(
        pull(&cri, &spec, FAST, |_| {}).await,
        Outcome::Pulled { attempts: 1, .. }
    ));
    let pulls = server.behaviour.pulls.lock().unwrap().clone();
    let users: Vec<String> = pulls.iter().map(|p| p.auth.clone().unwrap().username).collect();
    assert_eq!(users, ["wrong", "right"]);
    let sandbox = pulls[1].sandbox_config.clone().unwrap();
    assert_eq!(sandbox.labels["io.kubernetes.image.app"], "foo");
    assert_eq!(
        sandbox.annotations["io.kubernetes.image.metrics.tags"],
        "cluster=cn-shanghai"
    );

    // Only wrong credentials: a 401 after exactly backoffLimit + 1 attempts.
    server.behaviour.pulls.lock().unwrap().clear();
    spec.credentials = vec![credential("wrong")];
    spec.backoff_limit = 2;
    let Outcome::Failed { error, attempts } = pull(&cri, &spec, FAST, |_| {}).await else {
        panic!("expected a failure")
    };
    assert_eq!(attempts, 3);
    assert!(
        matches!(&error, CriError::Unauthorized(m) if m.contains("401 Unauthorized")),
        "{error}"
    );
    assert_eq!(server.behaviour.pulls.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn discovery_names_what_it_tried() {
    let server = serve(Behaviour::default()).await;
    let (_, version) = discover(Some(&server.socket)).await.unwrap();
    assert_eq!(version.runtime_name, "fake");
    let error = discover(Some(Path::new("/nonexistent/cri.sock")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("/nonexistent/cri.sock") && error.contains("--cri-socket"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pull_command_limits_concurrency_and_never_prints_credentials() {
    let server = serve(Behaviour {
        pull_delay_ms: 200.into(),
        accepted_users: vec!["ci".into()],
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.yaml");
    std::fs::write(
        &job,
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImageListPullJob\nmetadata: {name: list}\nspec:\n  images: [127.0.0.1:5001/a:1, 127.0.0.1:5001/b:1, 127.0.0.1:5001/c:1, 127.0.0.1:5001/d:1]\n  completionPolicy: {type: Always}\n",
    )
    .unwrap();
    let secret = dir.path().join("secret.yaml");
    let config = base64_encode(r#"{"auths":{"127.0.0.1:5001":{"username":"ci","password":"s3cr3t-password"}}}"#);
    std::fs::write(&secret, format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: registry}}\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {config}\n")).unwrap();
    let socket = server.socket.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_prewarm-nodeagent"))
            .args([
                "pull",
                "-f",
                job.to_str().unwrap(),
                "--secret",
                secret.to_str().unwrap(),
                "--cri-socket",
                socket.to_str().unwrap(),
            ])
            .args(["--max-concurrent-pulls", "2"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert_eq!(server.behaviour.max_in_flight.load(Ordering::SeqCst), 2);
    assert_eq!(stdout.matches(": pulled sha256:pulled").count(), 4, "{stdout}");
    assert!(!stdout.contains("s3cr3t") && !stderr.contains("s3cr3t"));
    assert!(
        server
            .behaviour
            .pulls
            .lock()
            .unwrap()
            .iter()
            .all(|p| p.auth.as_ref().is_some_and(|a| a.password == "s3cr3t-password"))
    );
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_provider_plugin_supplies_cached_credentials() {
    let server = serve(Behaviour {
        accepted_users: vec!["plugin-user".into()],
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = common::plugin(
        dir.path(),
        "test-provider",
        "echo call >> \"$COUNT_FILE\"\ncat > /dev/null\nprintf '%s' '{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":\"CredentialProviderResponse\",\"cacheKeyType\":\"Registry\",\"cacheDuration\":\"5m\",\"auth\":{\"127.0.0.1:5001\":{\"username\":\"plugin-user\",\"password\":\"plugin-s3cret\"}}}'\n",
    );
    let count = dir.path().join("count");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: test-provider\n  matchImages: [\"127.0.0.1:5001\"]\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n  env:\n  - name: COUNT_FILE\n    value: {}\n",
            count.display()
        ),
    )
    .unwrap();
    let job = dir.path().join("job.yaml");
    std::fs::write(&job, "apiVersion: apps.kruise.io/v1beta1\nkind: ImageListPullJob\nmetadata: {name: l}\nspec:\n  images: [127.0.0.1:5001/a:1, 127.0.0.1:5001/b:1, docker.io/library/busybox:1]\n  completionPolicy: {type: Always}\n").unwrap();
    let socket = server.socket.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_prewarm-nodeagent"))
            .args([
                "pull",
                "-f",
                job.to_str().unwrap(),
                "--cri-socket",
                socket.to_str().unwrap(),
            ])
            .args([
                "--credential-provider-config",
                config.to_str().unwrap(),
                "--credential-provider-bin-dir",
                bin_dir.to_str().unwrap(),
            ])
            .args(["--retry-backoff", "10ms", "--max-retry-backoff", "20ms"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // busybox matches no provider: pulled anonymously, which the fake refuses.
    assert!(!output.status.success(), "{stdout}");
    assert_eq!(stdout.matches(": pulled sha256:pulled").count(), 2, "{stdout}");
    assert!(stdout.contains("busybox:1: failed"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(&count).unwrap().lines().count(),
        1,
        "the response is cached per registry"
    );
    assert!(!stdout.contains("plugin-s3cret") && !String::from_utf8_lossy(&output.stderr).contains("plugin-s3cret"));
    let users: Vec<String> = server
        .behaviour
        .pulls
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.auth.clone().map(|a| a.username).unwrap_or_default())
        .collect();
    assert_eq!(users.iter().filter(|u| *u == "plugin-user").count(), 2, "{users:?}");
}

/// One slot, two failing pulls: each gives the slot back while it backs off,
/// so their attempts interleave instead of one waiting out the other's retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_backing_off_holds_no_slot() {
    let server = serve(Behaviour {
        accepted_users: vec!["nobody-anonymous".into()],
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.yaml");
    std::fs::write(&job, "apiVersion: apps.kruise.io/v1beta1\nkind: ImageListPullJob\nmetadata: {name: l}\nspec:\n  images: [registry.example/a:1, registry.example/b:1]\n  pullPolicy: {backoffLimit: 2}\n  completionPolicy: {type: Always}\n").unwrap();
    let output = pull_cli(
        &job,
        &server.socket,
        &[
            "--max-concurrent-pulls",
            "1",
            "--retry-backoff",
            "300ms",
            "--max-retry-backoff",
            "300ms",
        ],
    )
    .await;
    assert!(
        !output.status.success(),
        "both fail: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let images: Vec<String> = server
        .behaviour
        .pulls
        .lock()
        .unwrap()
        .iter()
        .map(|p| p.image.clone().unwrap_or_default().image)
        .collect();
    assert_eq!(images.len(), 6, "{images:?}");
    assert_ne!(
        images[0], images[1],
        "the second pull went while the first backed off: {images:?}"
    );
}

/// Kubelet's rule: a provider's whole answer is cached (here under the global
/// key) and matched against each image, so credentials it gave for one host
/// are never offered to another, and an image without an entry does not make
/// the cache empty for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_globally_cached_answer_is_matched_per_image() {
    let server = serve(Behaviour {
        accepted_users: vec!["host-one".into()],
        ..Behaviour::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = common::plugin(
        dir.path(),
        "global-provider",
        "cat > /dev/null\nprintf '%s' '{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":\"CredentialProviderResponse\",\"cacheKeyType\":\"Global\",\"cacheDuration\":\"5m\",\"auth\":{\"127.0.0.1:5001\":{\"username\":\"host-one\",\"password\":\"pw\"}}}'\n",
    );
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n- name: global-provider\n  matchImages: [\"127.0.0.1:5001\", \"127.0.0.2:5001\"]\n  defaultCacheDuration: 1m\n  apiVersion: credentialprovider.kubelet.k8s.io/v1\n",
    )
    .unwrap();
    let job = dir.path().join("job.yaml");
    std::fs::write(&job, "apiVersion: apps.kruise.io/v1beta1\nkind: ImageListPullJob\nmetadata: {name: l}\nspec:\n  images: [127.0.0.2:5001/two:1, 127.0.0.1:5001/one:1, 127.0.0.1:5001/one:2]\n  pullPolicy: {backoffLimit: 0}\n  completionPolicy: {type: Always}\n").unwrap();
    let (config, bin_dir) = (config.display().to_string(), bin_dir.display().to_string());
    let args = [
        "--credential-provider-config",
        &config,
        "--credential-provider-bin-dir",
        &bin_dir,
    ];
    let output = pull_cli(
        &job,
        &server.socket,
        &[&args[..], &["--retry-backoff", "10ms", "--max-retry-backoff", "20ms"]].concat(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pulls: Vec<(String, String)> = server
        .behaviour
        .pulls
        .lock()
        .unwrap()
        .iter()
        .map(|p| {
            let image = p.image.clone().unwrap_or_default().image;
            (image, p.auth.clone().map(|a| a.username).unwrap_or_default())
        })
        .collect();
    for (image, user) in &pulls {
        let expected = if image.contains("127.0.0.1:5001") {
            "host-one"
        } else {
            ""
        };
        assert_eq!(user, expected, "{image}: {pulls:?}\n{stdout}");
    }
    assert_eq!(pulls.iter().filter(|(_, u)| u == "host-one").count(), 2, "{pulls:?}");
}

#[tokio::test]
async fn one_timeout_covers_every_credential_of_an_attempt() {
    let server = serve(Behaviour {
        pull_delay_ms: 3000.into(),
        ..Behaviour::default()
    })
    .await;
    let cri = cri(&server.socket).await;
    let mut spec = spec("127.0.0.1:5001/team/app:1.0");
    spec.credentials = (0..4)
        .map(|i| Credential {
            username: format!("user{i}"),
            password: "p".into(),
            identity_token: String::new(),
            source: "pull secret test/creds".to_owned(),
        })
        .collect();
    spec.timeout = Duration::from_millis(300);
    spec.backoff_limit = 0;
    let started = Instant::now();
    let outcome = pull(&cri, &spec, FAST, |_| {}).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            error: CriError::DeadlineExceeded(Duration::from_millis(300)),
            attempts: 1
        }
    );
    assert!(
        started.elapsed() < Duration::from_millis(1000),
        "four credentials took {:?}: each got the whole timeout",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_deadline_too_far_to_represent_is_no_deadline() {
    let server = serve(Behaviour::default()).await;
    let mut spec = spec("registry.example.com/app:1");
    spec.active_deadline = Some(Duration::from_secs(u64::MAX));
    assert!(matches!(
        pull(&cri(&server.socket).await, &spec, FAST, |_| {}).await,
        Outcome::Pulled { attempts: 1, .. }
    ));
}

#[tokio::test]
async fn every_pull_carries_the_pulling_image_by_annotation() {
    let server = serve(Behaviour::default()).await;
    let spec = spec("registry.example.com/app:1");
    assert!(spec.sandbox.is_none());
    pull(&cri(&server.socket).await, &spec, FAST, |_| {}).await;
    let pulls = server.behaviour.pulls.lock().unwrap().clone();
    let sandbox = pulls[0]
        .sandbox_config
        .clone()
        .expect("a sandbox config is always sent");
    assert_eq!(sandbox.annotations["apps.kruise.io/pulling-image-by"], "kruise-daemon");
}

/// `prewarm-nodeagent pull -f JOB --cri-socket SOCKET ARGS…`, run to the end.
async fn pull_cli(job: &std::path::Path, socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_prewarm-nodeagent"));
    command
        .arg("pull")
        .arg("-f")
        .arg(job)
        .arg("--cri-socket")
        .arg(socket)
        .args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}
