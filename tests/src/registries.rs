#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

//! The registries of a local cluster: an open one holding small images under
//! the seed's names, an htpasswd-protected one, and a throttled proxy to the
//! open one for pulls that last seconds. Stopped on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::infra::{Daemon, push, push_with, registry};

/// The images pushed to the open registry, as `repository:tag` (the seed's).
pub const IMAGES: [&str; 7] = [
    "library/nginx:1.9.1",
    "library/nginx:1.25",
    "library/busybox:1.29.2",
    "library/busybox:1.36",
    "library/ubuntu:22.04",
    "library/ubuntu:latest",
    "library/redis:7",
];
/// An image served through a throttled proxy (`SeedRegistries::slow_image`),
/// so that a pull takes seconds: for faults in the middle of a pull.
pub const SLOW_IMAGE: &str = "library/slow:1.0";
/// Its layer's size and the proxy's rate: about four seconds a pull.
const SLOW_LAYER_BYTES: usize = 512 * 1024;
const SLOW_BYTES_PER_SECOND: usize = 128 * 1024;

/// The image of the private registry, and the user that may pull it.
pub const PRIVATE_IMAGE: &str = "team/private:1.0";
pub const PRIVATE_USER: (&str, &str) = ("ci", "s3cret-pw");

#[derive(Debug)]
pub struct SeedRegistries {
    pub open_port: u16,
    /// The open registry's log: one line per request it served.
    pub open_log: PathBuf,
    pub private_port: u16,
    /// A throttled proxy to the open registry (see [`SLOW_IMAGE`]).
    pub slow_port: u16,
    /// The manifest digest of each of [`IMAGES`].
    pub digests: BTreeMap<String, String>,
    /// Where the registries keep their data and logs.
    pub dir: PathBuf,
    _daemons: [Daemon; 2],
}

impl SeedRegistries {
    /// Starts both registries under `dir` and pushes every image.
    pub async fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let htpasswd = dir.join("htpasswd");
        let hashed = std::process::Command::new("htpasswd")
            .args(["-Bbn", PRIVATE_USER.0, PRIVATE_USER.1])
            .output()
            .unwrap();
        std::fs::write(&htpasswd, hashed.stdout).unwrap();
        let (open, open_port, open_log) = registry(dir, "open", None);
        let (private, private_port, _) = registry(dir, "private", Some(&htpasswd));
        let mut digests = BTreeMap::new();
        for image in IMAGES {
            let (repository, tag) = image.split_once(':').unwrap();
            digests.insert(image.to_owned(), push(open_port, repository, tag, None, dir));
        }
        let (repository, tag) = SLOW_IMAGE.split_once(':').unwrap();
        let noise: Vec<u8> = (0..SLOW_LAYER_BYTES as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        push_with(open_port, repository, tag, None, dir, &noise);
        let slow_port = throttled_proxy(open_port, SLOW_BYTES_PER_SECOND).await;
        let (repository, tag) = PRIVATE_IMAGE.split_once(':').unwrap();
        let user = format!("{}:{}", PRIVATE_USER.0, PRIVATE_USER.1);
        push(private_port, repository, tag, Some(&user), dir);
        Self {
            open_port,
            open_log,
            private_port,
            slow_port,
            digests,
            dir: dir.to_owned(),
            _daemons: [open, private],
        }
    }

    /// An image of the open registry, by its seed name (`nginx:1.9.1`).
    pub fn image(&self, seed_name: &str) -> String {
        format!("127.0.0.1:{}/library/{seed_name}", self.open_port)
    }

    /// An image of the open registry pinned by digest (`busybox:1.36` → `…/library/busybox@sha256:…`).
    pub fn pinned_image(&self, seed_name: &str) -> String {
        let repository = seed_name.split_once(':').map_or(seed_name, |(r, _)| r);
        let digest = &self.digests[&format!("library/{seed_name}")];
        format!("127.0.0.1:{}/library/{repository}@{digest}", self.open_port)
    }

    /// [`SLOW_IMAGE`] through the throttled proxy.
    pub fn slow_image(&self) -> String {
        format!("127.0.0.1:{}/{SLOW_IMAGE}", self.slow_port)
    }

    pub fn private_image(&self) -> String {
        format!("127.0.0.1:{}/{PRIVATE_IMAGE}", self.private_port)
    }

    /// How many times the open registry served `image`'s manifest (pulls that reached it).
    pub fn manifest_requests(&self, seed_name: &str) -> usize {
        let (repository, tag) = seed_name.split_once(':').unwrap_or((seed_name, "latest"));
        let path = format!("/v2/library/{repository}/manifests/{tag}");
        std::fs::read_to_string(&self.open_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("\"GET {path} ")) || l.contains(&format!("\"HEAD {path} ")))
            .count()
    }

    /// Where they are, for a cluster's summary.
    pub fn summary(&self) -> String {
        format!(
            "registry: 127.0.0.1:{open} (images: {images})\nprivate registry: 127.0.0.1:{private} (user {user}, password {password}, image {PRIVATE_IMAGE})\n",
            open = self.open_port,
            images = IMAGES.join(", "),
            private = self.private_port,
            user = PRIVATE_USER.0,
            // A throwaway credential of this machine's test registry, printed so it can be used.
            password = PRIVATE_USER.1,
        )
    }
}

/// A TCP proxy on a free loopback port to `upstream`, passing at most
/// `bytes_per_second` towards the client on each connection. Runs as long as
/// the runtime does.
async fn throttled_proxy(upstream: u16, bytes_per_second: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let requests = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    let _ = server_write.shutdown().await;
                });
                // Responses in chunks of a tenth of the rate, one per 100 ms.
                let mut chunk = vec![0u8; (bytes_per_second / 10).max(1)];
                while let Ok(read) = server_read.read(&mut chunk).await {
                    if read == 0 || client_write.write_all(&chunk[..read]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = client_write.shutdown().await;
                requests.abort();
            });
        }
    });
    port
}
