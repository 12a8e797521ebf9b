//! The install under test: overlays applied to a TLS test API server, and
//! webhook replicas run as the shipped Deployment runs them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use prewarm_testapi::{Options, TestApi};
use prewarm_webhook::server::{CertSource, ServeConfig, Server};

use super::{Kubectl, repo};

pub const SEED_JOB: &str = "apiVersion: apps.kruise.io/v1alpha1
kind: ImagePullJob
metadata:
  name: job-with-always
spec:
  image: nginx:1.9.1
  parallelism: 10
  selector:
    names: [node-1, node-2]
  completionPolicy:
    type: Always
    activeDeadlineSeconds: 1200
    ttlSecondsAfterFinished: 300
  pullPolicy:
    backoffLimit: 3
    timeoutSeconds: 300
";

/// A webhook replica as the shipped Deployment runs it (`--cert-source secret`,
/// the gates from the shipped ConfigMap), authenticated as the shipped ServiceAccount.
pub async fn replica(dir: &Path, kubeconfig: &Path, adjust: impl FnOnce(&mut ServeConfig)) -> (Server, PathBuf) {
    let cert_dir = dir.join("certs");
    let mut config = ServeConfig {
        cert_source: CertSource::Secret,
        feature_gates_config_map: Some(
            prewarm_process::live_gates::ConfigMapRef::parse("prewarm-system/prewarm-feature-gates").unwrap(),
        ),
        shutdown_delay: Duration::ZERO,
        shutdown_grace: Duration::from_secs(1),
        ..ServeConfig::loopback(&cert_dir).unwrap()
    };
    config.secret_source.kubeconfig = Some(kubeconfig.to_owned());
    adjust(&mut config);
    (Server::bind(config).await.unwrap(), cert_dir)
}

pub fn apply_k(kubectl: &Kubectl, overlay: &str) -> String {
    kubectl.ok(&["apply", "-k", repo(overlay).to_str().unwrap()])
}

/// GET `path` over plain HTTP; returns the whole answer.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The status code of an HTTP answer.
pub fn status_code(answer: &str) -> u16 {
    answer.split(' ').nth(1).unwrap().parse().unwrap()
}

/// An overlay applied to a TLS test API server, and a kubeconfig of the
/// webhook's shipped ServiceAccount for replicas to run as.
pub struct Installed {
    pub api: std::sync::Arc<TestApi>,
    pub kubectl: Kubectl,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

pub async fn installed(overlay: &str) -> Installed {
    let api = std::sync::Arc::new(
        TestApi::start(Options {
            tls: true,
            ..Options::default()
        })
        .await
        .unwrap(),
    );
    let kubectl = Kubectl::new(&api);
    let dir = tempfile::tempdir().unwrap();
    tokio::task::block_in_place(|| apply_k(&kubectl, overlay));
    let kubeconfig = dir.path().join("webhook-kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig_for("prewarm-system", "prewarm-webhook")).unwrap();
    Installed {
        api,
        kubectl,
        dir,
        kubeconfig,
    }
}
