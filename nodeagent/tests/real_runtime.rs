//! The puller against a real containerd (Debian package, CRI plugin) and real
//! registries (Debian docker-registry: one open, one with htpasswd auth), all
//! started by this test on private sockets and loopback ports, with small
//! images pushed through the registry HTTP API by the test itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prewarm_api::reference::ImageReference;
use prewarm_nodeagent::credentials::Credential;
use prewarm_nodeagent::cri::{Cri, CriError};
use prewarm_nodeagent::puller::{Backoff, Outcome, Policy, PullSpec, pull};
use sha2::{Digest, Sha256};

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(program: &str, args: &[&str], log: &Path) -> Daemon {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e} (scripts/install-test-deps.sh installs it)"));
    Daemon(child)
}

fn registry(dir: &Path, name: &str, htpasswd: Option<&Path>) -> (Daemon, u16, PathBuf) {
    let port = free_port();
    let root = dir.join(name);
    std::fs::create_dir_all(&root).unwrap();
    let auth = htpasswd.map_or(String::new(), |p| {
        format!(
            "auth:\n  htpasswd:\n    realm: ci-registry\n    path: {}\n",
            p.display()
        )
    });
    let config = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: ci-not-secret\n{auth}",
        root.join("data").display()
    );
    let config_path = root.join("config.yml");
    std::fs::write(&config_path, config).unwrap();
    let log = root.join("registry.log");
    let daemon = spawn("docker-registry", &["serve", config_path.to_str().unwrap()], &log);
    wait_for(
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the registry to listen",
    );
    (daemon, port, log)
}

fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A one-file tar archive (ustar), the layer of the test images.
fn tar(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    octal(&mut header[100..108], 0o644);
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], content.len() as u64);
    octal(&mut header[136..148], 1_700_000_000);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let checksum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
    let mut archive = header.to_vec();
    archive.extend_from_slice(content);
    archive.resize(archive.len().div_ceil(512) * 512 + 1024, 0);
    archive
}

fn curl(args: &[&str]) -> String {
    let output = Command::new("curl")
        .args(["--silent", "--show-error"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Pushes a one-layer OCI image; returns the manifest digest.
fn push(port: u16, repository: &str, tag: &str, user: Option<&str>, dir: &Path) -> String {
    let base = format!("http://127.0.0.1:{port}/v2/{repository}");
    let auth: Vec<&str> = user.map_or(Vec::new(), |u| vec!["--user", u]);
    let layer = tar("hello.txt", format!("{repository}:{tag}\n").as_bytes());
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}},"config":{{}}}}"#,
        sha256(&layer)
    );
    for blob in [layer.as_slice(), config.as_bytes()] {
        let digest = sha256(blob);
        let headers = curl(
            &[
                &auth[..],
                &[
                    "-D",
                    "-",
                    "-o",
                    "/dev/null",
                    "-X",
                    "POST",
                    &format!("{base}/blobs/uploads/"),
                ],
            ]
            .concat(),
        );
        let location = headers
            .lines()
            .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
            .unwrap()
            .trim()
            .to_owned();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://127.0.0.1:{port}{location}")
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let file = dir.join(digest.replace(':', "_"));
        std::fs::write(&file, blob).unwrap();
        curl(
            &[
                &auth[..],
                &[
                    "-X",
                    "PUT",
                    "--fail",
                    "-H",
                    "Content-Type: application/octet-stream",
                    "--data-binary",
                    &format!("@{}", file.display()),
                    &format!("{location}{separator}digest={digest}"),
                ],
            ]
            .concat(),
        );
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        sha256(config.as_bytes()),
        config.len(),
        sha256(&layer),
        layer.len()
    );
    let file = dir.join(format!("manifest-{}", sha256(manifest.as_bytes()).replace(':', "_")));
    std::fs::write(&file, &manifest).unwrap();
    curl(
        &[
            &auth[..],
            &[
                "-X",
                "PUT",
                "--fail",
                "-H",
                "Content-Type: application/vnd.oci.image.manifest.v1+json",
                "--data-binary",
                &format!("@{}", file.display()),
                &format!("{base}/manifests/{tag}"),
            ],
        ]
        .concat(),
    );
    sha256(manifest.as_bytes())
}

fn containerd(dir: &Path) -> (Daemon, PathBuf) {
    let socket = dir.join("containerd.sock");
    let config = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{dir}/cni/bin"
    conf_dir = "{dir}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{dir}/certs.d"
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = socket.display(),
        dir = dir.display(),
    );
    let config_path = dir.join("containerd.toml");
    std::fs::write(&config_path, config).unwrap();
    let daemon = spawn(
        "containerd",
        &["--config", config_path.to_str().unwrap()],
        &dir.join("containerd.log"),
    );
    wait_for(|| socket.exists(), "the containerd socket");
    (daemon, socket)
}

fn spec(image: &str) -> PullSpec {
    PullSpec {
        reference: ImageReference::parse(image).unwrap(),
        policy: Policy::Always,
        timeout: Duration::from_secs(30),
        backoff_limit: 0,
        active_deadline: None,
        sandbox: None,
        credentials: Vec::new(),
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
