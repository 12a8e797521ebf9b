//! A CRI client over a unix socket, with a deadline on every call and errors
//! classified the way a user needs them (containerd reports a registry's 401
//! as UNKNOWN with "401 Unauthorized" in the text).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use prewarm_proto::runtime::v1::image_service_client::ImageServiceClient;
use prewarm_proto::runtime::v1::runtime_service_client::RuntimeServiceClient;
use prewarm_proto::runtime::v1::{
    AuthConfig, Image, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, PodSandboxConfig, PodSandboxMetadata,
    PullImageRequest, VersionRequest, VersionResponse,
};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::credentials::Credential;

/// What went wrong, in the categories that decide what to tell the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CriError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("deadline exceeded after {0:?}")]
    DeadlineExceeded(Duration),
    #[error("{0}")]
    Other(String),
}

/// Runtime messages can be long (containerd wraps several layers): keep them readable.
const MAX_MESSAGE: usize = 512;

fn trimmed(message: &str) -> String {
    let message = message.trim();
    match message.char_indices().nth(MAX_MESSAGE) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message.to_owned(),
    }
}

pub fn classify(status: &tonic::Status, timeout: Duration) -> CriError {
    let message = trimmed(status.message());
    let lower = message.to_ascii_lowercase();
    match status.code() {
        tonic::Code::DeadlineExceeded => CriError::DeadlineExceeded(timeout),
        // tonic's own per-request timeout ends the call this way.
        tonic::Code::Cancelled if lower.contains("timeout") => CriError::DeadlineExceeded(timeout),
        tonic::Code::NotFound => CriError::NotFound(message),
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => CriError::Unauthorized(message),
        tonic::Code::Unavailable => CriError::Unreachable(message),
        _ if lower.contains("401 unauthorized")
            || lower.contains("unauthorized")
            || lower.contains("authorization failed") =>
        {
            CriError::Unauthorized(message)
        }
        _ if lower.contains("not found") => CriError::NotFound(message),
        _ if [
            "connection refused",
            "no such host",
            "i/o timeout",
            "dial tcp",
            "network is unreachable",
        ]
        .iter()
        .any(|s| lower.contains(s)) =>
        {
            CriError::Unreachable(message)
        }
        _ => CriError::Other(message),
    }
}

/// The sandbox annotation on every pull, with kruise-daemon's value so that
/// tools that recognise OpenKruise's pre-pulls recognise prewarm's.
pub const PULLING_IMAGE_BY: &str = "apps.kruise.io/pulling-image-by";
const PULLER_NAME: &str = "kruise-daemon";

/// Pod-sandbox labels and annotations for `PullImage`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sandbox {
    pub labels: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct Cri {
    socket: PathBuf,
    images: ImageServiceClient<Channel>,
    runtime: RuntimeServiceClient<Channel>,
}

impl Cri {
    /// Connects to the runtime behind `socket` (nothing is sent yet).
    pub async fn connect(socket: &Path) -> Result<Self, CriError> {
        let path = socket.to_owned();
        // The URI is required by tonic but unused: the connector dials the socket.
        let endpoint = Endpoint::from_static("http://cri.invalid").connect_timeout(Duration::from_secs(5));
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|e| CriError::Unreachable(format!("{}: {e}", socket.display())))?;
        Ok(Self {
            socket: socket.to_owned(),
            images: ImageServiceClient::new(channel.clone()).max_decoding_message_size(16 * 1024 * 1024),
            runtime: RuntimeServiceClient::new(channel),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn request<T>(message: T, timeout: Duration) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        request
    }

    pub async fn version(&self, timeout: Duration) -> Result<VersionResponse, CriError> {
        let request = Self::request(
            VersionRequest {
                version: "v1".to_owned(),
            },
            timeout,
        );
        let mut client = self.runtime.clone();
        tokio::time::timeout(timeout, client.version(request))
            .await
            .map_err(|_| CriError::DeadlineExceeded(timeout))?
            .map(tonic::Response::into_inner)
            .map_err(|s| classify(&s, timeout))
    }

    /// The runtime's image id when `image` (exactly that tag or digest) is present.
    pub async fn image_id(&self, image: &str, timeout: Duration) -> Result<Option<String>, CriError> {
        Ok(self.image_status(image, timeout).await?.map(|i| i.id))
    }

    /// The size the runtime gives `image` (a name or an id), if it has it.
    pub async fn image_size(&self, image: &str, timeout: Duration) -> Result<Option<u64>, CriError> {
        Ok(self.image_status(image, timeout).await?.map(|i| i.size))
    }

    async fn image_status(&self, image: &str, timeout: Duration) -> Result<Option<Image>, CriError> {
        let spec = ImageSpec {
            image: image.to_owned(),
            ..ImageSpec::default()
        };
        let request = Self::request(
            ImageStatusRequest {
                image: Some(spec),
                verbose: false,
            },
            timeout,
        );
        let mut client = self.images.clone();
        let response = tokio::time::timeout(timeout, client.image_status(request))
            .await
            .map_err(|_| CriError::DeadlineExceeded(timeout))?
            .map_err(|s| classify(&s, timeout))?;
        Ok(response.into_inner().image)
    }

    /// Where the runtime keeps images, and what they take there: each image
    /// filesystem's mountpoint and used bytes (CRI `ImageFsInfo`).
    pub async fn image_filesystems(&self, timeout: Duration) -> Result<Vec<(String, u64)>, CriError> {
        let request = Self::request(ImageFsInfoRequest {}, timeout);
        let mut client = self.images.clone();
        let response = tokio::time::timeout(timeout, client.image_fs_info(request))
            .await
            .map_err(|_| CriError::DeadlineExceeded(timeout))?
            .map_err(|s| classify(&s, timeout))?;
        Ok(response
            .into_inner()
            .image_filesystems
            .into_iter()
            .filter_map(|fs| {
                let mountpoint = fs.fs_id?.mountpoint;
                (!mountpoint.is_empty()).then(|| (mountpoint, fs.used_bytes.map_or(0, |u| u.value)))
            })
            .collect())
    }

    /// Pulls `image`; returns the image reference the runtime reports.
    pub async fn pull(
        &self,
        image: &str,
        credential: Option<&Credential>,
        sandbox: Option<&Sandbox>,
        timeout: Duration,
    ) -> Result<String, CriError> {
        let auth = credential.map(|c| AuthConfig {
            username: c.username.clone(),
            password: c.password.clone(),
            identity_token: c.identity_token.clone(),
            ..AuthConfig::default()
        });
        // A fresh map per request: pulls never share mutable metadata. The
        // config is always sent, as kruise-daemon does, because some runtimes
        // fail on a missing one; the annotation says who asked for the pull.
        let mut annotations = sandbox.map(|s| s.annotations.clone()).unwrap_or_default();
        annotations.insert(PULLING_IMAGE_BY.to_owned(), PULLER_NAME.to_owned());
        let sandbox_config = Some(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata::default()),
            labels: sandbox.map(|s| s.labels.clone()).unwrap_or_default(),
            annotations,
            ..PodSandboxConfig::default()
        });
        let spec = ImageSpec {
            image: image.to_owned(),
            ..ImageSpec::default()
        };
        let request = Self::request(
            PullImageRequest {
                image: Some(spec),
                auth,
                sandbox_config,
            },
            timeout,
        );
        let mut client = self.images.clone();
        tokio::time::timeout(timeout, client.pull_image(request))
            .await
            .map_err(|_| CriError::DeadlineExceeded(timeout))?
            .map(|r| r.into_inner().image_ref)
            .map_err(|s| classify(&s, timeout))
    }
}

/// Where CRI runtimes listen, in the order they are tried.
pub const CANDIDATE_SOCKETS: [&str; 6] = [
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/crio/crio.sock",
    "/run/cri-dockerd.sock",
    "/var/run/cri-dockerd.sock",
];

/// The first socket whose runtime answers `Version` with CRI v1.
/// No socket answered as a CRI v1 runtime; `tried` says what each one did.
#[derive(Debug, thiserror::Error)]
#[error("no CRI v1 runtime answered; tried {}; give the socket with --cri-socket", .tried.join("; "))]
pub struct DiscoveryError {
    pub tried: Vec<String>,
}

pub async fn discover(explicit: Option<&Path>) -> Result<(Cri, VersionResponse), DiscoveryError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(path) => vec![path.to_owned()],
        None => CANDIDATE_SOCKETS.iter().map(PathBuf::from).collect(),
    };
    let mut tried = Vec::new();
    for socket in &candidates {
        let attempt = async {
            let cri = Cri::connect(socket).await?;
            let version = cri.version(Duration::from_secs(5)).await?;
            Ok::<_, CriError>((cri, version))
        };
        match attempt.await {
            Ok((cri, version)) if version.runtime_api_version == "v1" || version.runtime_api_version.is_empty() => {
                return Ok((cri, version));
            }
            Ok((_, version)) => tried.push(format!(
                "{}: speaks CRI {:?}, not v1",
                socket.display(),
                version.runtime_api_version
            )),
            Err(e) => tried.push(format!("{}: {e}", socket.display())),
        }
    }
    Err(DiscoveryError { tried })
}
