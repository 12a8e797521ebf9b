//! The install path: every kustomize overlay renders with kubectl, parses
//! strictly into its Kubernetes types, runs hardened, names the image the build
//! script makes and only flags the binaries accept; `kubectl apply -k` installs
//! prewarm idempotently, and two webhook replicas, with nothing but the shipped
//! RBAC, agree on one CA, inject it and admit through every shipped path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use std::time::Duration;

use base64::Engine;
use common::install::{Installed, SEED_JOB, apply_k, http_get, installed, replica, status_code};
use common::manifests::{check_workload, group_of, kustomize, refused_pods};
use common::{Kubectl, repo};
use prewarm_testapi::{Options, TestApi};
use prewarm_webhook::server::ServeConfig;
use serde_json::{Value, json};

const OVERLAYS: [&str; 3] = [
    "manifests/base",
    "manifests/overlays/image-pull-job-gate",
    "manifests/overlays/cert-manager",
];
const SERVICE: &str = "prewarm-system/prewarm-webhook";
const IMAGE: &str = concat!("localhost/prewarm:", env!("CARGO_PKG_VERSION"));

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_overlay_renders_strictly_typed_hardened_and_consistent_with_the_binaries() {
    let api = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(TestApi::start(Options::default()))
        .unwrap();
    let kubectl = Kubectl::new(&api);
    let build_script = std::fs::read_to_string(repo("scripts/build-images.sh")).unwrap();
    assert!(build_script.contains("IMAGE_REPOSITORY=${IMAGE_REPOSITORY:-localhost/prewarm}"));
    assert!(build_script.contains("IMAGE_TAG=${IMAGE_TAG:-$(sed -n 's/^version = "));
    for overlay in OVERLAYS {
        let objects = kustomize(&kubectl, overlay);
        for object in &objects {
            let (group, kind) = (group_of(object), object["kind"].as_str().unwrap());
            match prewarm_testapi::builtin::unknown_fields(group, kind, object) {
                Some(Ok(unknown)) => assert!(unknown.is_empty(), "{overlay}: {kind}: unknown fields {unknown:?}"),
                Some(Err(e)) => panic!("{overlay}: {kind} {}: {e}", object["metadata"]["name"]),
                None => assert_eq!(group, "cert-manager.io", "{overlay}: {kind} is not checked"),
            }
            assert_eq!(
                object["metadata"]["labels"]["app.kubernetes.io/part-of"], "prewarm",
                "{overlay}: {kind} {}",
                object["metadata"]["name"]
            );
        }
        for workload in objects
            .iter()
            .filter(|o| o["kind"] == "Deployment" || o["kind"] == "DaemonSet")
        {
            check_workload(overlay, workload, IMAGE);
        }
        // The webhook configurations call the Service, which reaches the webhook port.
        let service = named(&objects, "Service", "prewarm-webhook");
        let target = service["spec"]["ports"][0]["targetPort"].as_str().unwrap();
        let webhook = named(&objects, "Deployment", "prewarm-webhook");
        assert!(
            webhook["spec"]["template"]["spec"]["containers"][0]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == target)
        );
        let mut paths = BTreeSet::new();
        for kind in ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"] {
            let configuration = objects.iter().find(|o| o["kind"] == kind).unwrap();
            for hook in configuration["webhooks"].as_array().unwrap() {
                let reference = &hook["clientConfig"]["service"];
                assert_eq!(reference["name"], service["metadata"]["name"]);
                assert_eq!(reference["namespace"], service["metadata"]["namespace"]);
                assert_eq!(reference["port"], service["spec"]["ports"][0]["port"]);
                assert_eq!(hook["failurePolicy"], "Fail");
                assert_eq!(hook["sideEffects"], "None");
                assert_eq!(hook["matchPolicy"], "Equivalent");
                assert!(hook["timeoutSeconds"].as_u64().is_some_and(|t| t <= 10));
                assert_eq!(hook["rules"][0]["apiGroups"], json!(["apps.kruise.io"]));
                paths.insert(reference["path"].as_str().unwrap().to_owned());
            }
        }
        assert_eq!(paths.len(), 8, "{overlay}: {paths:?}");
        // The gates live in one ConfigMap that both read, not in the Pods.
        let expected = if overlay == "manifests/base" {
            ""
        } else {
            "ImagePullJobGate=true"
        };
        let config_map = named(&objects, "ConfigMap", "prewarm-feature-gates");
        assert_eq!(config_map["data"]["featureGates"], expected, "{overlay}");
        for name in ["prewarm-webhook", "prewarm-controller"] {
            let container = &named(&objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0];
            let args = container["args"].as_array().unwrap();
            assert!(
                args.contains(&json!(
                    "--feature-gates-config-map=prewarm-system/prewarm-feature-gates"
                )),
                "{overlay}: {name}"
            );
            let env = container["env"].as_array().unwrap();
            assert!(
                !env.iter().any(|e| e["name"] == "PREWARM_FEATURE_GATES"),
                "{overlay}: {name}"
            );
        }
    }
}

fn decode(text: &str) -> String {
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).unwrap()).unwrap()
}

/// A key of the CA Secret, decoded.
fn ca_secret(kubectl: &Kubectl, key: &str) -> String {
    let secret: Value = serde_json::from_str(&kubectl.ok(&[
        "get",
        "secret",
        "-n",
        "prewarm-system",
        "prewarm-webhook-ca",
        "-o",
        "json",
    ]))
    .unwrap();
    decode(secret["data"][key].as_str().unwrap())
}

/// The caBundle of every webhook of both configurations.
fn injected_bundles(kubectl: &Kubectl) -> Vec<String> {
    let mut bundles = Vec::new();
    for kind in ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"] {
        let list: Value = serde_json::from_str(&kubectl.ok(&["get", kind, "-o", "json"])).unwrap();
        for hook in list["items"][0]["webhooks"].as_array().unwrap() {
            bundles.push(
                hook["clientConfig"]["caBundle"]
                    .as_str()
                    .map(decode)
                    .unwrap_or_default(),
            );
        }
    }
    bundles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn apply_k_installs_idempotently_and_two_replicas_share_one_injected_ca() {
    let api = TestApi::start(Options {
        tls: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let kubectl = Kubectl::new(&api);
    let dir = tempfile::tempdir().unwrap();
    let overlay = "manifests/overlays/image-pull-job-gate";
    let first = tokio::task::block_in_place(|| apply_k(&kubectl, overlay));
    assert!(first.contains("deployment.apps/prewarm-webhook created"), "{first}");

    let kubeconfig = dir.path().join("webhook-kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig_for("prewarm-system", "prewarm-webhook")).unwrap();
    // Both replicas start at once: one creates the CA, the other adopts it.
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let ((a, a_certs), (b, b_certs)) = tokio::join!(
        replica(&a_dir, &kubeconfig, |_| {}),
        replica(&b_dir, &kubeconfig, |_| {})
    );
    api.set_service_endpoint(SERVICE, a.local_addr().unwrap());
    let health = a.health_addr().unwrap();
    tokio::spawn(a.run(std::future::pending()));
    tokio::spawn(b.run(std::future::pending()));

    tokio::task::block_in_place(|| {
        let bundle = ca_secret(&kubectl, "ca-bundle.crt");
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 1, "one CA");
        for certs in [&a_certs, &b_certs] {
            assert_eq!(std::fs::read_to_string(certs.join("ca.crt")).unwrap(), bundle);
        }
        let injected = injected_bundles(&kubectl);
        assert_eq!(injected.len(), 9);
        assert!(injected.iter().all(|b| *b == bundle), "every webhook carries the CA");

        // The probes' paths answer.
        for path in ["/healthz", "/readyz"] {
            let status = status_code(&http_get(health, path));
            assert_eq!(status, 200, "{path}");
        }

        // All six paths admit through the injected CA: mutating defaults, validating refuses.
        let job = dir.path().join("job.yaml");
        std::fs::write(&job, SEED_JOB).unwrap();
        kubectl.ok(&["apply", "-f", job.to_str().unwrap()]);
        let stored: Value =
            serde_json::from_str(&kubectl.ok(&["get", "imagepulljob", "job-with-always", "-o", "json"])).unwrap();
        assert_eq!(stored["spec"]["imagePullPolicy"], "IfNotPresent", "defaulted: {stored}");
        for (manifest, defaulted, invalid) in [
            (
                "apiVersion: apps.kruise.io/v1alpha1\nkind: ImageListPullJob\nmetadata:\n  name: list\nspec:\n  images: [nginx:1.9.1, busybox:1.36]\n  completionPolicy:\n    type: Never\n",
                ("imagelistpulljob", "list", "/spec/pullPolicy/backoffLimit", json!(3)),
                "apiVersion: apps.kruise.io/v1alpha1\nkind: ImageListPullJob\nmetadata:\n  name: bad-list\nspec:\n  images: []\n",
            ),
            (
                "apiVersion: apps.kruise.io/v1alpha1\nkind: NodeImage\nmetadata:\n  name: node-1\nspec:\n  images:\n    nginx:\n      tags:\n      - tag: 1.9.1\n        pullPolicy:\n          ttlSecondsAfterFinished: 300\n",
                (
                    "nodeimage",
                    "node-1",
                    "/spec/images/nginx/tags/0/pullPolicy/timeoutSeconds",
                    json!(600),
                ),
                "apiVersion: apps.kruise.io/v1alpha1\nkind: NodeImage\nmetadata:\n  name: bad-node\nspec:\n  images:\n    nginx:\n      tags:\n      - tag: \"\"\n",
            ),
            (
                SEED_JOB,
                (
                    "imagepulljob",
                    "job-with-always",
                    "/spec/completionPolicy/type",
                    json!("Always"),
                ),
                "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: bad-job\nspec:\n  image: nginx\n  parallelism: -1\n",
            ),
        ] {
            let file = dir.path().join("object.yaml");
            std::fs::write(&file, manifest).unwrap();
            kubectl.ok(&["apply", "-f", file.to_str().unwrap()]);
            let (resource, name, pointer, value) = defaulted;
            let stored: Value = serde_json::from_str(&kubectl.ok(&["get", resource, name, "-o", "json"])).unwrap();
            assert_eq!(stored.pointer(pointer), Some(&value), "{resource} defaulted: {stored}");
            std::fs::write(&file, invalid).unwrap();
            let refused = kubectl.run(&["apply", "-f", file.to_str().unwrap()]);
            assert!(
                !refused.ok && (refused.stderr.contains("is invalid") || refused.stderr.contains("denied the request")),
                "{resource}: {}",
                refused.stderr
            );
        }

        // Applying again changes nothing, and leaves the injected caBundles alone.
        // kubectl always sends a PodDisruptionBudget's selector (its patch strategy
        // is `replace`), so it says "configured"; the server stores nothing new.
        let pdb_version = || kubectl.resource_version("pdb", "prewarm-system", "prewarm-webhook");
        let before = pdb_version();
        let again = apply_k(&kubectl, overlay);
        for line in again.lines() {
            assert!(
                line.ends_with(" unchanged") || line == "poddisruptionbudget.policy/prewarm-webhook configured",
                "not idempotent: {line}"
            );
        }
        assert_eq!(pdb_version(), before, "the PodDisruptionBudget was rewritten");
        assert!(injected_bundles(&kubectl).iter().all(|b| *b == bundle));
        // The CA Secret ships empty: applying it again keeps what the replicas wrote.
        assert_eq!(ca_secret(&kubectl, "ca-bundle.crt"), bundle);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forced_ca_rotation_under_load_loses_no_request() {
    let Installed {
        api,
        kubectl,
        dir,
        kubeconfig,
    } = installed("manifests/overlays/image-pull-job-gate").await;
    // A CA lives 24 s: the next is staged 8 s in, and signs 2 s later.
    let fast = |config: &mut ServeConfig| {
        let secret = &mut config.secret_source;
        secret.ca_lifetime = Duration::from_secs(24);
        secret.ca_renew_before = Duration::from_secs(16);
        secret.ca_overlap = Duration::from_secs(2);
        secret.ca_check_interval = Duration::from_millis(250);
        config.cert_poll_interval = Duration::from_millis(250);
    };
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    let ((a, _), (b, _)) = tokio::join!(replica(&a_dir, &kubeconfig, fast), replica(&b_dir, &kubeconfig, fast));
    let addresses = [a.local_addr().unwrap(), b.local_addr().unwrap()];
    tokio::spawn(a.run(std::future::pending()));
    tokio::spawn(b.run(std::future::pending()));
    let first_ca = tokio::task::block_in_place(|| ca_secret(&kubectl, "ca.crt"));

    // The Service's endpoints alternate between the replicas, as kube-proxy spreads calls.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (api_state, stop) = (api.clone(), stop.clone());
        tokio::spawn(async move {
            let mut next = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                api_state.set_service_endpoint(SERVICE, addresses[next % 2]);
                next += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::from_yaml(&api.kubeconfig()).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let job: kube::api::DynamicObject = serde_saphyr::from_str(SEED_JOB).unwrap();
    let resource = kube::discovery::ApiResource {
        group: "apps.kruise.io".into(),
        version: "v1alpha1".into(),
        api_version: "apps.kruise.io/v1alpha1".into(),
        kind: "ImagePullJob".into(),
        plural: "imagepulljobs".into(),
    };
    let jobs: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(client, "default", &resource);
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (jobs, job, stop) = (jobs.clone(), job.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut admitted, mut failed) = (0u32, Vec::new());
                let dry_run = kube::api::PostParams {
                    dry_run: true,
                    ..Default::default()
                };
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match jobs.create(&dry_run, &job).await {
                        Ok(_) => admitted += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (admitted, failed)
            })
        })
        .collect();

    // Until the second CA has signed for a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut promoted_at = None;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now_signing = tokio::task::block_in_place(|| ca_secret(&kubectl, "ca.crt"));
        if now_signing != first_ca && promoted_at.is_none() {
            promoted_at = Some(tokio::time::Instant::now());
        }
        if promoted_at.is_some_and(|at| at.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.await.unwrap();
    let (mut admitted, mut failed) = (0, Vec::new());
    for caller in callers {
        let (ok, errors) = caller.await.unwrap();
        admitted += ok;
        failed.extend(errors);
    }
    assert!(promoted_at.is_some(), "the CA was not rotated within 30 s");
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        admitted as usize + failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert!(admitted > 50, "too little load to mean anything: {admitted}");
    // Both CAs were trusted through the rotation, and the new one serves now.
    let bundle = tokio::task::block_in_place(|| ca_secret(&kubectl, "ca-bundle.crt"));
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "{bundle}");
    // Each replica reissued its certificate from the new CA, with that bundle beside it.
    for replica in [&a_dir, &b_dir] {
        let beside = std::fs::read_to_string(replica.join("certs/ca.crt")).unwrap();
        assert_eq!(beside, bundle, "{}", replica.display());
    }
    eprintln!("{admitted} admission requests through one CA rotation, none failed");

    // Creating, rotating and injecting the CA, reading the gates and looking
    // for OpenKruise at start needed every rule of the webhook's shipped
    // RBAC, and nothing else.
    let shipped = tokio::task::block_in_place(|| kustomize(&kubectl, "manifests/base"));
    let report = prewarm_testapi::rbac::least_privilege(&api.audit(), &shipped, "prewarm-system", "prewarm-webhook");
    assert_eq!(report.rules.len(), 7, "{:#?}", report.rules);
    assert_eq!(report.problems(), Vec::<String>::new());
}

/// Pod Security: every overlay's Pods are admitted in the namespaces it makes
/// (prewarm-system restricted, the agents' own privileged), and the agent's Pod
/// would be refused where the rest run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_overlay_s_pods_meet_their_namespaces_pod_security() {
    for overlay in OVERLAYS {
        let api = TestApi::start(Options::default()).await.unwrap();
        let kubectl = Kubectl::new(&api);
        let dir = tempfile::tempdir().unwrap();
        tokio::task::block_in_place(|| {
            let objects = kustomize(&kubectl, overlay);
            // The namespaces and ServiceAccounts as the overlay makes them (cert-manager's
            // kinds are not served here): a Pod naming a missing ServiceAccount is refused.
            let namespaces: Vec<String> = objects
                .iter()
                .filter(|o| o["kind"] == "Namespace" || o["kind"] == "ServiceAccount")
                .map(Value::to_string)
                .collect();
            let file = dir.path().join("namespaces.yaml");
            std::fs::write(&file, namespaces.join("\n---\n")).unwrap();
            kubectl.ok(&["apply", "-f", file.to_str().unwrap()]);
            assert_eq!(
                refused_pods(&kubectl, &objects, dir.path()),
                Vec::<String>::new(),
                "{overlay}"
            );
            let mut agent = named(&objects, "DaemonSet", "prewarm-nodeagent").clone();
            agent["metadata"]["namespace"] = json!("prewarm-system");
            agent["metadata"]["name"] = json!("misplaced-agent");
            // An account of that namespace, or the ServiceAccount plugin refuses it first.
            agent["spec"]["template"]["spec"]["serviceAccountName"] = json!("default");
            let refused = refused_pods(&kubectl, &[agent], dir.path());
            assert_eq!(refused.len(), 1, "{overlay}");
            assert!(
                refused[0]
                    .contains("violates PodSecurity \"restricted:latest\": hostPath volumes (volumes \"cri-socket\""),
                "{}",
                refused[0]
            );
        });
    }
}
