//! The admission chain end to end: kubectl → test API server → prewarm-webhook
//! over TLS, registered by the shipped webhook configurations.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::*;
use prewarm_testapi::{Options, TestApi};
use prewarm_webhook::server::{ServeConfig, Server};

const SERVICE: &str = "prewarm-system/prewarm-webhook";

/// A webhook with default certificate names, which include the Service name
/// the shipped configurations call.
async fn webhook(cert_dir: &Path, gates: &str) -> SocketAddr {
    let config = ServeConfig {
        feature_gates: gates.parse().unwrap(),
        shutdown_delay: Duration::ZERO,
        shutdown_grace: Duration::from_secs(1),
        ..ServeConfig::loopback(cert_dir).unwrap()
    };
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(server.run(std::future::pending()));
    addr
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_defaults_denials_gates_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let gate_on = webhook(&certs, "ImagePullJobGate=true").await;
    // The second replica finds the certificate the first one generated.
    let gate_off = webhook(&certs, "").await;
    let api = TestApi::start(Options {
        service_endpoints: HashMap::from([(SERVICE.to_owned(), gate_on)]),
        ..Options::default()
    })
    .await
    .unwrap();
    let kubectl = Kubectl::new(&api);
    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    let configurations = std::fs::read_to_string(repo("manifests/webhook/webhook-configurations.yaml"))
        .unwrap()
        .replace(
            "  clientConfig:\n",
            &format!(
                "  clientConfig:\n    caBundle: {}\n",
                base64::engine::general_purpose::STANDARD.encode(ca)
            ),
        );
    let configurations = write(dir.path(), "webhooks.yaml", &configurations);
    let both_selectors = write(
        dir.path(),
        "both.yaml",
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: both\nspec:\n  image: Nginx\n  selector:\n    names: [node-1, node-1]\n  podSelector:\n    matchLabels: {app: web}\n",
    );

    tokio::task::block_in_place(|| {
        assert!(kubectl.apply(&repo("manifests/crds"), &[]).ok);
        let registered = kubectl.apply(&configurations, &[]);
        assert!(registered.ok, "{}", registered.stderr);

        // Defaults from the mutating webhook are stored.
        let created = kubectl.apply(
            &repo("api/tests/fixtures/seed/07-imagepulljob-sandbox-config.yaml"),
            &[],
        );
        assert!(created.ok, "{}", created.stderr);
        let yaml = kubectl.ok(&["get", "imagepulljob", "job-with-sandbox-config", "-o", "yaml"]);
        for defaulted in [
            "imagePullPolicy: IfNotPresent",
            "timeoutSeconds: 600",
            "backoffLimit: 3",
            "type: Always",
        ] {
            assert!(yaml.contains(defaulted), "{defaulted} missing from\n{yaml}");
        }

        // The webhook's warnings reach kubectl as `Warning:` headers, as kube-apiserver forwards them.
        let paused = write(
            dir.path(),
            "paused.yaml",
            "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: paused\nspec:\n  image: nginx:1.9.1\n  parallelism: 0\n",
        );
        let warned = kubectl.apply(&paused, &[]);
        assert!(warned.ok, "{}", warned.stderr);
        assert!(
            warned.stderr.contains("Warning: spec.parallelism: 0 pauses the job"),
            "kubectl prints the webhook's warning: {}",
            warned.stderr
        );

        // A denial prints the webhook's message with every field error.
        let denied = kubectl.apply(&both_selectors, &[]);
        assert!(!denied.ok);
        // kubectl lists the causes of an Invalid status, one per line, as for a real cluster.
        for expected in [
            "The ImagePullJob \"both\" is invalid: \n",
            "* spec.image: Invalid value: \"Nginx\": repository name must be lowercase (found \"Nginx\")\n",
            "* spec.selector.names[1]: Duplicate value: \"node-1\": already listed at spec.selector.names[0]\n",
            "* spec.podSelector: Forbidden: may not be set together with spec.selector",
        ] {
            assert!(
                denied.stderr.contains(expected),
                "{expected:?} missing from\n{}",
                denied.stderr
            );
        }

        // Server-side dry run goes through admission and stores nothing.
        let dry = kubectl.apply(
            &repo("api/tests/fixtures/seed/05-imagepulljob-pull-secrets.yaml"),
            &["--dry-run=server"],
        );
        assert!(
            dry.ok && dry.stdout.contains("(server dry run)"),
            "{}\n{}",
            dry.stdout,
            dry.stderr
        );
        assert!(!kubectl.run(&["get", "imagepulljob", "job-with-secrets"]).ok);
    });

    // With the gate off, creates are refused with 403, cleanup still works.
    api.set_service_endpoint(SERVICE, gate_off);
    tokio::task::block_in_place(|| {
        let refused = kubectl.apply(
            &repo("api/tests/fixtures/seed/08-imagepulljob-pull-policy-always.yaml"),
            &[],
        );
        assert!(!refused.ok);
        assert!(
            refused.stderr.contains("Error from server (Forbidden)"),
            "{}",
            refused.stderr
        );
        assert!(
            refused.stderr.contains("feature gate ImagePullJobGate is disabled"),
            "{}",
            refused.stderr
        );
        let labelled = kubectl.run(&["label", "imagepulljob", "job-with-sandbox-config", "team=a"]);
        assert!(
            labelled.ok,
            "metadata-only updates pass with the gate off: {}",
            labelled.stderr
        );
        let deleted = kubectl.run(&["delete", "imagepulljob", "job-with-sandbox-config"]);
        assert!(deleted.ok, "{}", deleted.stderr);
    });
}

/// README's "A cluster to test against", with its flags: the webhook's
/// generated certificate already names the Service the shipped configurations
/// call, and `--webhook-ca` fills their CA bundles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_recipe_works_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let webhook = webhook(&certs, "ImagePullJobGate=true").await;
    let kubeconfig = dir.path().join("kubeconfig");
    let mut testapi = std::process::Command::new(env!("CARGO_BIN_EXE_prewarm-testapi"))
        .args(["--kubeconfig-out", kubeconfig.to_str().unwrap(), "--admission-config"])
        .arg(repo("manifests/webhook"))
        .arg("--webhook-ca")
        .arg(certs.join("ca.crt"))
        .arg("--service-endpoint")
        .arg(format!("{SERVICE}={webhook}"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !kubeconfig.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "prewarm-testapi did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kubectl = |args: &[&str]| {
        std::process::Command::new(kubectl_path())
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    tokio::task::block_in_place(|| {
        let crds = kubectl(&["apply", "-k", repo("manifests/crds").to_str().unwrap()]);
        assert!(crds.status.success(), "{}", String::from_utf8_lossy(&crds.stderr));
        let seed = repo("api/tests/fixtures/seed/02-imagepulljob-names.yaml");
        let job = kubectl(&["apply", "-f", seed.to_str().unwrap()]);
        assert!(job.status.success(), "{}", String::from_utf8_lossy(&job.stderr));
        // The mutating webhook ran: the defaults are stored.
        let stored = kubectl(&[
            "get",
            "imagepulljob",
            "job-with-always",
            "-o",
            "jsonpath={.spec.imagePullPolicy}",
        ]);
        assert_eq!(String::from_utf8_lossy(&stored.stdout), "IfNotPresent");
    });
    let _ = testapi.kill();
    let _ = testapi.wait();
}
