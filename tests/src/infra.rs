#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! Real registries and a real containerd for tests and benchmarks: Debian's
//! `docker-registry` (open, or with htpasswd auth) and `containerd` with its CRI
//! plugin, each on loopback ports and private sockets under a directory the
//! caller owns, and small OCI images pushed through the registry HTTP API.
//! Every process is killed when its handle is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A child process, killed on drop.
#[derive(Debug)]
pub struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The whole answer to a plain-HTTP GET of `path` at `address`, if any.
pub fn http_get(address: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `program`; its output is appended to `log`.
pub fn spawn(program: &str, args: &[&str], log: &Path) -> Daemon {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e} (scripts/install-test-deps.sh installs it)"));
    Daemon(child)
}

pub fn registry(dir: &Path, name: &str, htpasswd: Option<&Path>) -> (Daemon, u16, PathBuf) {
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

pub fn wait_for(mut ready: impl FnMut() -> bool, what: &str) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A file of an image layer: its path in the image, mode and content.
#[derive(Clone, Copy, Debug)]
pub struct LayerFile<'a> {
    pub path: &'a str,
    pub mode: u32,
    pub content: &'a [u8],
}

/// A one-file tar archive (ustar), the layer of the test images.
pub fn tar(name: &str, content: &[u8]) -> Vec<u8> {
    tar_files(&[LayerFile {
        path: name,
        mode: 0o644,
        content,
    }])
}

/// A tar archive (ustar) of regular files owned by root.
pub fn tar_files(files: &[LayerFile<'_>]) -> Vec<u8> {
    let mut archive = Vec::new();
    for file in files {
        let mut header = [0u8; 512];
        header[..file.path.len()].copy_from_slice(file.path.as_bytes());
        let octal = |field: &mut [u8], value: u64| {
            let text = format!("{value:0width$o}\0", width = field.len() - 1);
            field.copy_from_slice(text.as_bytes());
        };
        octal(&mut header[100..108], u64::from(file.mode));
        octal(&mut header[108..116], 0);
        octal(&mut header[116..124], 0);
        octal(&mut header[124..136], file.content.len() as u64);
        octal(&mut header[136..148], 1_700_000_000);
        header[156] = b'0';
        header[257..263].copy_from_slice(b"ustar\0");
        header[263..265].copy_from_slice(b"00");
        header[148..156].copy_from_slice(b"        ");
        let checksum: u32 = header.iter().map(|b| u32::from(*b)).sum();
        header[148..156].copy_from_slice(format!("{checksum:06o}\0 ").as_bytes());
        archive.extend_from_slice(&header);
        archive.extend_from_slice(file.content);
        archive.resize(archive.len().div_ceil(512) * 512, 0);
    }
    archive.resize(archive.len() + 1024, 0);
    archive
}

pub fn curl(args: &[&str]) -> String {
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
pub fn push(port: u16, repository: &str, tag: &str, user: Option<&str>, dir: &Path) -> String {
    push_with(
        port,
        repository,
        tag,
        user,
        dir,
        format!("{repository}:{tag}\n").as_bytes(),
    )
}

/// Pushes a one-layer OCI image whose only file holds `payload`; returns the manifest digest.
pub fn push_with(port: u16, repository: &str, tag: &str, user: Option<&str>, dir: &Path, payload: &[u8]) -> String {
    let file = LayerFile {
        path: "hello.txt",
        mode: 0o644,
        content: payload,
    };
    push_image(port, repository, tag, user, dir, &[file], "{}")
}

/// Pushes a one-layer OCI image of `files` with the image config `config`
/// (`{"Entrypoint": ["/pause"]}`); returns the manifest digest.
pub fn push_image(
    port: u16,
    repository: &str,
    tag: &str,
    user: Option<&str>,
    dir: &Path,
    files: &[LayerFile<'_>],
    config: &str,
) -> String {
    let base = format!("http://127.0.0.1:{port}/v2/{repository}");
    let auth: Vec<&str> = user.map_or(Vec::new(), |u| vec!["--user", u]);
    let layer = tar_files(files);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}},"config":{config}}}"#,
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

pub fn containerd(dir: &Path) -> (Daemon, PathBuf) {
    let layout = ContainerdLayout {
        config_dir: dir.to_owned(),
        root: dir.join("root"),
        state: dir.join("state"),
        socket: dir.join("containerd.sock"),
    };
    start_containerd(&layout, "registry.k8s.io/pause:3.6", &dir.join("cni/bin"))
}

/// Where one containerd keeps its configuration, images, state and socket.
#[derive(Clone, Debug)]
struct ContainerdLayout {
    config_dir: PathBuf,
    root: PathBuf,
    state: PathBuf,
    socket: PathBuf,
}

/// Where Pods of the test kubelet get their addresses: one bridge on the host,
/// one subnet, one address store shared by every node's containerd.
#[derive(Clone, Debug)]
pub struct PodNetwork {
    pub bridge: String,
    /// `10.213.0.0/16`: the bridge takes the first address.
    pub subnet: String,
    /// host-local's allocations, shared so that addresses are unique across nodes.
    pub data_dir: PathBuf,
}

impl PodNetwork {
    /// The bridge's own address, which Pods reach the host at.
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        let base = self.subnet.split('/').next().unwrap_or_default();
        let mut octets = base.parse::<std::net::Ipv4Addr>().unwrap().octets();
        octets[3] = 1;
        octets.into()
    }
}

/// containerd able to run pods, laid out in a node's root directory as on a
/// node (`/run/containerd/containerd.sock`, `/var/lib/containerd`,
/// `/etc/containerd`): the sandbox image `sandbox_image`, Debian's CNI
/// plugins, and `network` (bridge + host-local) as its only CNI network.
/// `localhost/…` and Docker Hub images are pulled from the registry at
/// `localhost_registry` (`127.0.0.1:5000`), as a node's mirror configuration would.
pub fn containerd_for_pods(
    node_root: &Path,
    sandbox_image: &str,
    network: &PodNetwork,
    localhost_registry: &str,
) -> (PodRuntime, PathBuf) {
    let dir = node_root.join("etc/containerd");
    let conf_dir = dir.join("cni/net.d");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "prewarm-pods",
        "plugins": [{
            "type": "bridge",
            "bridge": network.bridge,
            "isGateway": true,
            // Nothing leaves the machine: no masquerading, no iptables.
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": network.subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": network.data_dir,
            }
        }]
    });
    std::fs::write(conf_dir.join("10-prewarm-pods.conflist"), conflist.to_string()).unwrap();
    // Images named as users write them (`localhost/prewarm:…`, `nginx:1.9.1`)
    // come from the local registry, as a node's mirror configuration does it.
    for host in ["localhost", "docker.io"] {
        let hosts = dir.join("certs.d").join(host);
        std::fs::create_dir_all(&hosts).unwrap();
        std::fs::write(
            hosts.join("hosts.toml"),
            format!(
                "server = \"http://{localhost_registry}\"\n[host.\"http://{localhost_registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
            ),
        )
        .unwrap();
    }
    let layout = ContainerdLayout {
        config_dir: dir.clone(),
        root: node_root.join("var/lib/containerd"),
        state: node_root.join("run/containerd/state"),
        socket: node_root.join("run/containerd/containerd.sock"),
    };
    let (daemon, socket) = start_containerd(&layout, sandbox_image, Path::new(CNI_PLUGINS));
    let runtime = PodRuntime {
        daemon: Some(daemon),
        socket: socket.clone(),
        layout,
        sandbox_image: sandbox_image.to_owned(),
    };
    (runtime, socket)
}

/// Where Debian's containernetworking-plugins are.
const CNI_PLUGINS: &str = "/usr/lib/cni";

/// containerd running Pods: on drop, every sandbox is stopped and removed
/// through the CRI (so containers, network namespaces and addresses go with
/// them, as containerd's shims outlive containerd itself), then containerd
/// is killed.
#[derive(Debug)]
pub struct PodRuntime {
    daemon: Option<Daemon>,
    socket: PathBuf,
    layout: ContainerdLayout,
    sandbox_image: String,
}

impl PodRuntime {
    /// Kills containerd (a runtime gone down); the containers go on under their shims.
    pub fn stop(&mut self) {
        self.daemon = None;
    }

    fn start(&mut self) {
        if self.daemon.is_none() {
            let _ = std::fs::remove_file(&self.socket);
            self.daemon = Some(start_containerd(&self.layout, &self.sandbox_image, Path::new(CNI_PLUGINS)).0);
        }
    }

    /// Stops and removes every sandbox, until the runtime lists none: a
    /// containerd just restarted may still be loading the sandboxes it had.
    async fn remove_sandboxes(socket: &Path) -> Result<(), String> {
        use crate::kubelet::cri::{Cri, api};
        let mut cri = Cri::connect(socket).await?;
        for _ in 0..20 {
            let listed = cri
                .runtime
                .list_pod_sandbox(api::ListPodSandboxRequest { filter: None })
                .await;
            let sandboxes = match listed {
                Ok(listed) => listed.into_inner().items,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            };
            if sandboxes.is_empty() {
                return Ok(());
            }
            for sandbox in sandboxes {
                let id = sandbox.id;
                let _ = cri
                    .runtime
                    .stop_pod_sandbox(api::StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await;
                let _ = cri
                    .runtime
                    .remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: id })
                    .await;
            }
        }
        Err("sandboxes left after 20 attempts".to_owned())
    }
}

impl Drop for PodRuntime {
    fn drop(&mut self) {
        // A stopped runtime comes back to remove what its shims still run.
        self.start();
        let socket = self.socket.clone();
        // Its own thread and runtime: drop may run inside a test's runtime.
        let cleaned = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|runtime| runtime.block_on(Self::remove_sandboxes(&socket)))
        })
        .join();
        if let Ok(Err(e)) = cleaned {
            eprintln!("removing the pod sandboxes of {}: {e}", self.socket.display());
        }
        self.daemon.take();
    }
}

fn start_containerd(layout: &ContainerdLayout, sandbox_image: &str, cni_bin: &Path) -> (Daemon, PathBuf) {
    let (dir, socket) = (&layout.config_dir, layout.socket.clone());
    std::fs::create_dir_all(dir).unwrap();
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
  sandbox_image = "{sandbox_image}"
  # This machine may not lower OOM scores (no CAP_SYS_RESOURCE): keep
  # containerd from asking runc for the sandbox's -998.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{dir}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{dir}/certs.d"
"#,
        root = layout.root.display(),
        state = layout.state.display(),
        socket = socket.display(),
        cni_bin = cni_bin.display(),
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
