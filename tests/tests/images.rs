//! prewarm's container image, built by scripts/build-images.sh and run under a
//! private containerd with `ctr run` (runc): the webhook answers /healthz and a
//! TLS AdmissionReview from the host as uid 65532, and the node agent pulls an
//! image from a local registry through the bind-mounted containerd socket.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use prewarm_testapi::infra::{containerd, free_port, push, registry};
use serde_json::{Value, json};

const IMAGE: &str = concat!("localhost/prewarm:", env!("CARGO_PKG_VERSION"));
const NAMESPACE: &str = "prewarm-images";

/// Builds the image (incrementally after the first time); returns the OCI archive.
fn build() -> PathBuf {
    let built = common::build_image();
    assert_eq!(built.image, IMAGE);
    built.archive
}

fn ctr(socket: &Path, args: &[&str]) -> String {
    let out = Command::new("ctr")
        .args(["--address", socket.to_str().unwrap(), "--namespace", NAMESPACE])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stops and removes a container, so no shim outlives the test.
struct Container<'a> {
    socket: &'a Path,
    id: &'static str,
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let address = self.socket.to_str().unwrap();
        for args in [
            vec!["task", "kill", "-s", "SIGKILL", self.id],
            vec!["task", "delete", "-f", self.id],
            vec!["container", "delete", self.id],
        ] {
            let _ = Command::new("ctr")
                .args(["--address", address, "--namespace", NAMESPACE])
                .args(&args)
                .output();
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5"])
        .args(args)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_image_runs_the_webhook_and_the_node_agent_under_containerd() {
    let archive = build();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let (_registry, registry_port, _) = registry(dir, "open", None);
    push(registry_port, "test/tiny", "1.0", None, dir);
    let (_containerd, socket) = containerd(dir);
    ctr(
        &socket,
        &["images", "import", "--snapshotter", "native", archive.to_str().unwrap()],
    );
    assert!(ctr(&socket, &["images", "ls", "-q"]).lines().any(|l| l == IMAGE));

    // The webhook, as the image's unprivileged user, generating its certificate in a
    // directory laid out as kubelet lays out an emptyDir with fsGroup 65532: root's,
    // group 65532, mode 2777. The webhook writes into a directory of its own in it.
    let certs = dir.join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::os::unix::fs::lchown(&certs, None, Some(65532)).unwrap();
    std::fs::set_permissions(&certs, std::os::unix::fs::PermissionsExt::from_mode(0o2777)).unwrap();
    let (port, health) = (free_port(), free_port());
    let mount = format!("type=bind,src={},dst=/certs,options=rbind:rw", certs.display());
    ctr(
        &socket,
        &[
            "run",
            "-d",
            "--snapshotter",
            "native",
            "--net-host",
            "--mount",
            &mount,
            IMAGE,
            "webhook",
            "/prewarm-webhook",
            "serve",
            "--cert-dir=/certs",
            &format!("--listen=127.0.0.1:{port}"),
            &format!("--health-listen=127.0.0.1:{health}"),
        ],
    );
    let _webhook = Container {
        socket: &socket,
        id: "webhook",
    };
    let started = Instant::now();
    while !curl(&[&format!("http://127.0.0.1:{health}/healthz")]).0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the webhook did not come up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let tasks = ctr(&socket, &["task", "ls"]);
    let pid: u32 = tasks
        .lines()
        .find(|l| l.starts_with("webhook "))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        proc_status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("65532")),
        "{proc_status}"
    );

    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "from-the-host", "kind": {"group": "apps.kruise.io", "version": "v1alpha1", "kind": "ImagePullJob"},
        "resource": {"group": "apps.kruise.io", "version": "v1alpha1", "resource": "imagepulljobs"},
        "operation": "CREATE", "name": "job", "namespace": "default", "userInfo": {"username": "admin"},
        "object": {"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
            "metadata": {"name": "job", "namespace": "default"}, "spec": {"image": "nginx:1.9.1"}}}});
    let (ok, answer) = curl(&[
        "--cacert",
        certs.join("prewarm-65532/ca.crt").to_str().unwrap(),
        "-H",
        "Content-Type: application/json",
        "--data",
        &review.to_string(),
        &format!("https://localhost:{port}/validate-apps-kruise-io-imagepulljob"),
    ]);
    assert!(ok, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["response"]["uid"], "from-the-host");
    // ImagePullJobGate is off by default: the create is refused, with the gate named.
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("ImagePullJobGate"),
        "{answer}"
    );

    // The node agent pulls through the bind-mounted runtime socket. ctr 1.6 cannot
    // pick the user, so the socket of this private containerd is given to the
    // image's user; the DaemonSet runs the agent as root instead.
    std::os::unix::fs::chown(&socket, Some(65532), Some(65532)).unwrap();
    let jobs = dir.join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    let tiny = format!("127.0.0.1:{registry_port}/test/tiny:1.0");
    std::fs::write(jobs.join("job.yaml"), format!(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: tiny\nspec:\n  image: {tiny}\n  completionPolicy:\n    type: Always\n")).unwrap();
    let socket_mount = format!(
        "type=bind,src={},dst=/run/containerd/containerd.sock,options=rbind:rw",
        socket.display()
    );
    let jobs_mount = format!("type=bind,src={},dst=/jobs,options=rbind:ro", jobs.display());
    let _agent = Container {
        socket: &socket,
        id: "agent",
    };
    let pulled = ctr(
        &socket,
        &[
            "run",
            "--rm",
            "--snapshotter",
            "native",
            "--net-host",
            "--mount",
            &socket_mount,
            "--mount",
            &jobs_mount,
            IMAGE,
            "agent",
            "/prewarm-nodeagent",
            "pull",
            "-f",
            "/jobs/job.yaml",
            "--cri-socket",
            "/run/containerd/containerd.sock",
        ],
    );
    let images = Command::new("ctr")
        .args([
            "--address",
            socket.to_str().unwrap(),
            "--namespace",
            "k8s.io",
            "images",
            "ls",
            "-q",
        ])
        .output()
        .unwrap();
    let images = String::from_utf8_lossy(&images.stdout);
    assert!(
        images.lines().any(|l| l == tiny),
        "not pulled; agent said:\n{pulled}\nimages:\n{images}"
    );
}
