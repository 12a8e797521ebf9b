//! A webhook server started in-process on loopback ports, and a real TLS client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use prewarm_api::gates::FeatureGates;
use prewarm_webhook::server::{ServeConfig, Server};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

pub struct TestServer {
    pub addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub cert_dir: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<()>,
}

pub fn config(cert_dir: &Path) -> ServeConfig {
    ServeConfig {
        feature_gates: FeatureGates::parse("ImagePullJobGate=true").unwrap(),
        shutdown_delay: Duration::from_millis(500),
        shutdown_grace: Duration::from_secs(5),
        cert_poll_interval: Duration::from_secs(60),
        ..ServeConfig::loopback(cert_dir).unwrap()
    }
}

impl TestServer {
    pub async fn start(adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert_dir = dir.path().join("certs");
        let mut config = config(&cert_dir);
        adjust(&mut config);
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let health_addr = server.health_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            health_addr,
            cert_dir,
            _dir: dir,
            stop: Some(stop),
            handle,
        }
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.cert_dir.join("ca.crt")).unwrap()
    }

    /// Starts the shutdown sequence (as SIGTERM does).
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A rustls client trusting the given CA certificates (PEM).
pub fn client_config(cas: &[&str], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// One HTTP/1.1 keep-alive connection over TLS.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
}

#[derive(Debug)]
pub enum ConnectError {
    Tcp(std::io::Error),
    Tls(std::io::Error),
    Http(hyper::Error),
}

impl Connection {
    pub async fn open(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> Result<Self, ConnectError> {
        let tcp = TcpStream::connect(addr).await.map_err(ConnectError::Tcp)?;
        let name = ServerName::try_from("localhost").unwrap();
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(ConnectError::Tls)?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls)).await.map_err(ConnectError::Http)?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    pub fn is_open(&self) -> bool {
        !self.sender.is_closed()
    }

    /// POSTs `body` to `path`; the answer's status, `Connection` header and JSON body.
    pub async fn post(&mut self, path: &str, body: &Value) -> Result<(u16, bool, Value), hyper::Error> {
        self.sender.ready().await?;
        let request = hyper::Request::post(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
            .unwrap();
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let closes = response.headers().get("connection").is_some_and(|v| v == "close");
        let bytes = response.into_body().collect().await?.to_bytes();
        Ok((status, closes, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }
}

pub const VALIDATE_JOB: &str = "/validate-apps-kruise-io-imagepulljob";
pub const MUTATE_JOB: &str = "/mutate-apps-kruise-io-imagepulljob";

/// A CREATE review of a valid ImagePullJob with the given uid.
pub fn job_review(uid: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "operation": "CREATE", "name": "job", "namespace": "default",
            "kind": {"group": "apps.kruise.io", "version": "v1beta1", "kind": "ImagePullJob"},
            "resource": {"group": "apps.kruise.io", "version": "v1beta1", "resource": "imagepulljobs"},
            "object": {
                "apiVersion": "apps.kruise.io/v1beta1", "kind": "ImagePullJob",
                "metadata": {"name": "job", "namespace": "default"},
                "spec": {"image": "nginx:1.25", "selector": {"names": ["node-1"]}, "completionPolicy": {"type": "Always"},
                         "pullPolicy": {"timeoutSeconds": 600, "backoffLimit": 3}, "imagePullPolicy": "IfNotPresent"}
            }
        }
    })
}

/// Runs a command and returns its stdout, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e} (scripts/install-test-deps.sh installs it)"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
