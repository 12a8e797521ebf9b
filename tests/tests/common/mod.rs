//! kubectl (from PyPI, installed by scripts/install-test-deps.sh) against a test API server.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prewarm_testapi::TestApi;

pub mod e2e;
pub mod install;
pub mod manifests;

/// Where scripts/install-test-deps.sh puts the tools the tests run.
pub fn tools_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache"));
    cache.join("prewarm-test-tools")
}

pub fn kubectl_path() -> PathBuf {
    let path = tools_dir().join("kubectl-venv/bin/kubectl");
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        path.display()
    );
    path
}

/// A kubectl bound to one test API server through its own kubeconfig.
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    pub fn new(api: &TestApi) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig).unwrap();
        Self {
            binary: kubectl_path(),
            kubeconfig,
            _dir: dir,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self._dir.path())
            .args(args);
        command
    }

    pub fn run(&self, args: &[&str]) -> Ran {
        let Output { status, stdout, stderr } = self.command(args).output().unwrap();
        Ran {
            ok: status.success(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }

    /// Runs and insists on success.
    pub fn ok(&self, args: &[&str]) -> String {
        let ran = self.run(args);
        assert!(ran.ok, "kubectl {args:?} failed:\n{}\n{}", ran.stdout, ran.stderr);
        ran.stdout
    }

    /// The stored resourceVersion of one object (`kind`, `namespace`, `name`).
    pub fn resource_version(&self, kind: &str, namespace: &str, name: &str) -> String {
        self.ok(&[
            "get",
            kind,
            "-n",
            namespace,
            name,
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
    }

    /// `kubectl apply -f PATH` (`-k` for a kustomize directory), validated by
    /// the server (`fieldValidation=Strict`).
    pub fn apply(&self, path: &Path, extra: &[&str]) -> Ran {
        let flag = if path.join("kustomization.yaml").exists() {
            "-k"
        } else {
            "-f"
        };
        let mut args = vec!["apply", flag, path.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.run(&args)
    }
}

pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A ConfigMap named `name` with `labels` and one data key.
pub fn config_map(name: &str, labels: serde_json::Value) -> k8s_openapi::api::core::v1::ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}))
        .unwrap()
}

/// The HTTP status of an API error.
pub fn code(error: kube::Error) -> u16 {
    match error {
        kube::Error::Api(status) => status.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// What scripts/build-images.sh built: the image (in buildah's store) and its OCI archive.
pub struct BuiltImage {
    pub image: String,
    pub archive: PathBuf,
}

/// Runs scripts/build-images.sh (incremental after the first time), one
/// build at a time in this test binary (builds share the cargo target and
/// buildah's store).
pub fn build_image() -> BuiltImage {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _building = BUILD.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = Command::new(repo("scripts/build-images.sh")).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "build-images.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_owned()
    };
    BuiltImage {
        image: field("image "),
        archive: repo("").join(field("archive ")),
    }
}
