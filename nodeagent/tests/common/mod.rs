//! A fake CRI runtime (tonic, on a private unix socket), for what a real
//! runtime cannot be made to do on demand.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cluster;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prewarm_proto::runtime::v1::image_service_server::{ImageService, ImageServiceServer};
use prewarm_proto::runtime::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use prewarm_proto::runtime::v1::*;
use tonic::{Request, Response, Status};

/// What the fake runtime does, and what it saw.
#[derive(Default)]
pub struct Behaviour {
    /// How long each pull takes, in milliseconds (changeable while running).
    pub pull_delay_ms: AtomicU64,
    /// Images the runtime already has.
    pub present: Vec<String>,
    /// Usernames whose pulls succeed; others get containerd's 401 text. Empty: all succeed.
    pub accepted_users: Vec<String>,
    /// The image filesystem `ImageFsInfo` reports: a mountpoint and used bytes.
    pub image_fs: Option<(String, u64)>,
    pub pulls: Mutex<Vec<PullImageRequest>>,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

#[derive(Clone)]
struct Fake(Arc<Behaviour>);

#[tonic::async_trait]
impl RuntimeService for Fake {
    async fn version(&self, _: Request<VersionRequest>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            runtime_version: "1.0".into(),
            runtime_api_version: "v1".into(),
        }))
    }
}

#[tonic::async_trait]
impl ImageService for Fake {
    async fn list_images(&self, _: Request<ListImagesRequest>) -> Result<Response<ListImagesResponse>, Status> {
        Ok(Response::new(ListImagesResponse::default()))
    }

    async fn image_status(
        &self,
        request: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let image = request.into_inner().image.unwrap_or_default().image;
        let found = self.0.present.contains(&image).then(|| Image {
            id: format!("sha256:{:064}", 7),
            ..Image::default()
        });
        Ok(Response::new(ImageStatusResponse {
            image: found,
            info: HashMap::new(),
        }))
    }

    async fn pull_image(&self, request: Request<PullImageRequest>) -> Result<Response<PullImageResponse>, Status> {
        let request = request.into_inner();
        self.0.pulls.lock().unwrap().push(request.clone());
        let now = self.0.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(self.0.pull_delay_ms.load(Ordering::SeqCst))).await;
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        let user = request.auth.map(|a| a.username).unwrap_or_default();
        if !self.0.accepted_users.is_empty() && !self.0.accepted_users.contains(&user) {
            return Err(Status::unknown(
                "failed to pull and unpack image: failed to resolve reference: pulling from host 127.0.0.1:5001 failed with status code [manifests 1.0]: 401 Unauthorized",
            ));
        }
        Ok(Response::new(PullImageResponse {
            image_ref: "sha256:pulled".into(),
        }))
    }

    async fn remove_image(&self, _: Request<RemoveImageRequest>) -> Result<Response<RemoveImageResponse>, Status> {
        Ok(Response::new(RemoveImageResponse::default()))
    }

    async fn image_fs_info(&self, _: Request<ImageFsInfoRequest>) -> Result<Response<ImageFsInfoResponse>, Status> {
        let image_filesystems = self
            .0
            .image_fs
            .iter()
            .map(|(mountpoint, used)| FilesystemUsage {
                timestamp: 0,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: mountpoint.clone(),
                }),
                used_bytes: Some(UInt64Value { value: *used }),
                inodes_used: None,
            })
            .collect();
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems,
            container_filesystems: Vec::new(),
        }))
    }
}

pub struct Server {
    pub socket: PathBuf,
    pub behaviour: Arc<Behaviour>,
    _dir: tempfile::TempDir,
}

pub async fn serve(behaviour: Behaviour) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cri.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let behaviour = Arc::new(behaviour);
    let fake = Fake(behaviour.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RuntimeServiceServer::new(fake.clone()))
            .add_service(ImageServiceServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    Server {
        socket,
        behaviour,
        _dir: dir,
    }
}

/// A credential-provider plugin in `dir/plugins` named `name`: a shell
/// script whose body is `script`; returns the plugin directory.
pub fn plugin(dir: &std::path::Path, name: &str, script: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin_dir = dir.join("plugins");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let plugin = bin_dir.join(name);
    std::fs::write(&plugin, format!("#!/bin/sh\n{script}")).unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin_dir
}
