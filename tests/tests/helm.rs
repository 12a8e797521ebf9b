//! The Helm chart through the real Helm library (PyPI helm-sdkpy): it lints
//! clean; installed into the test API server it renders exactly the objects
//! kustomize renders for the same choices (so the same RBAC); the seed's own
//! Helm commands work as written; an upgrade turns the gate off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::manifests::{check_workload, helm, kustomize, refused_pods, release_objects, strings};
use common::{Kubectl, Ran, repo};
use prewarm_testapi::{Options, TestApi};
use serde_json::{Value, json};

const IMAGE: &str = concat!("localhost/prewarm:", env!("CARGO_PKG_VERSION"));

/// Objects by (kind, namespace, name), without the labels only Helm adds.
fn by_identity(objects: Vec<Value>) -> BTreeMap<(String, String, String), Value> {
    objects
        .into_iter()
        .map(|mut object| {
            // Helm's own: what `helm uninstall` keeps.
            if let Some(annotations) = object["metadata"]["annotations"].as_object_mut() {
                annotations.remove("helm.sh/resource-policy");
                if annotations.is_empty() {
                    object["metadata"].as_object_mut().map(|m| m.remove("annotations"));
                }
            }
            if let Some(labels) = object["metadata"]["labels"].as_object_mut() {
                for helm_only in [
                    "app.kubernetes.io/instance",
                    "app.kubernetes.io/managed-by",
                    "helm.sh/chart",
                ] {
                    labels.remove(helm_only);
                }
            }
            let text = |pointer: &str| {
                object
                    .pointer(pointer)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let key = (text("/kind"), text("/metadata/namespace"), text("/metadata/name"));
            (key, object)
        })
        .collect()
}

struct Cluster {
    _api: TestApi,
    kubectl: Kubectl,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A test API server that also serves cert-manager's Issuer and Certificate, as a
/// cluster with cert-manager installed does.
fn start_cluster(runtime: &tokio::runtime::Runtime) -> Cluster {
    let api = runtime
        .block_on(TestApi::start(Options {
            tls: true,
            ..Options::default()
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let crds = dir.path().join("cert-manager");
    std::fs::create_dir(&crds).unwrap();
    for (kind, plural) in [("Issuer", "issuers"), ("Certificate", "certificates")] {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.cert-manager.io")},
            "spec": {"group": "cert-manager.io", "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "listKind": format!("{kind}List")},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        });
        std::fs::write(crds.join(format!("{plural}.yaml")), crd.to_string()).unwrap();
    }
    api.load_manifests(&crds).unwrap();
    let kubectl = Kubectl::new(&api);
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig).unwrap();
    Cluster {
        _api: api,
        kubectl,
        kubeconfig,
        _dir: dir,
    }
}

impl Cluster {
    /// `helm install|upgrade prewarm charts/prewarm --set …` in the default namespace, as the seed does.
    fn helm(&self, action: &str, sets: &[&str]) -> Value {
        self.helm_in("default", action, sets)
    }

    /// The same with `-n namespace`.
    fn helm_in(&self, namespace: &str, action: &str, sets: &[&str]) -> Value {
        let ran = self.try_helm(namespace, action, "prewarm", sets);
        assert!(ran.ok, "helm {action} {sets:?}: {}", ran.stderr);
        serde_json::from_str(&ran.stdout).unwrap()
    }

    /// `helm ACTION RELEASE charts/prewarm -n NAMESPACE --set …`, however it ends.
    fn try_helm(&self, namespace: &str, action: &str, release: &str, sets: &[&str]) -> Ran {
        let chart = repo("charts/prewarm");
        let mut args = vec![
            action,
            release,
            chart.to_str().unwrap(),
            "--kubeconfig",
            self.kubeconfig.to_str().unwrap(),
            "--namespace",
            namespace,
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        helm(&args)
    }

    fn get(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl.ok(&all)).unwrap()
    }
}

/// Where two JSON values first differ (a JSON pointer and both sides), if they do.
fn first_difference(helm: &Value, kustomize: &Value, at: String) -> Option<String> {
    match (helm, kustomize) {
        (Value::Object(a), Value::Object(b)) => a.keys().chain(b.keys()).find_map(|k| {
            first_difference(
                a.get(k).unwrap_or(&Value::Null),
                b.get(k).unwrap_or(&Value::Null),
                format!("{at}/{k}"),
            )
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, format!("{at}/{i}"))),
        _ if helm == kustomize => None,
        _ => Some(format!("{at}: helm {helm}, kustomize {kustomize}")),
    }
}

/// The gates the release wrote into the ConfigMap both components read.
fn feature_gates(cluster: &Cluster) -> Value {
    let config_map = cluster.get(&["get", "configmap", "-n", "kruise-system", "prewarm-feature-gates"]);
    config_map["data"]["featureGates"].clone()
}

/// The generation of each Deployment: an upgrade that changes a Pod template bumps it.
fn generations(cluster: &Cluster) -> Vec<Value> {
    ["prewarm-webhook", "prewarm-controller"]
        .iter()
        .map(|name| cluster.get(&["get", "deployment", "-n", "kruise-system", name])["metadata"]["generation"].clone())
        .collect()
}

#[test]
fn the_chart_lints_clean_and_installs_what_kustomize_renders() {
    let lint = helm(&["lint", repo("charts/prewarm").to_str().unwrap()]);
    assert!(lint.ok, "{}", lint.stderr);
    let lint: Value = serde_json::from_str(&lint.stdout).unwrap();
    assert_eq!(lint["Errors"], Value::Null, "{lint}");
    // Severity 1 is Helm's INFO (such as "icon is recommended"); 2 and up are warnings and errors.
    for message in lint["Messages"].as_array().unwrap() {
        assert!(message["Severity"].as_u64() <= Some(1), "helm lint: {message}");
    }

    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The kustomize base installs into prewarm-system; the chart, unless told, into kruise-system.
    let namespace = "installation.namespace=prewarm-system";
    for (sets, overlay) in [
        (vec![namespace], "manifests/base"),
        (
            vec![namespace, "featureGates=ImagePullJobGate=true"],
            "manifests/overlays/image-pull-job-gate",
        ),
        (
            vec![
                namespace,
                "featureGates=ImagePullJobGate=true",
                "certificates.source=certManager",
            ],
            "manifests/overlays/cert-manager",
        ),
    ] {
        let cluster = start_cluster(&runtime);
        let release = cluster.helm("install", &sets);
        let from_helm = by_identity(release_objects(&release));
        let from_kustomize = by_identity(kustomize(&cluster.kubectl, overlay));
        assert_eq!(
            from_helm.keys().collect::<Vec<_>>(),
            from_kustomize.keys().collect::<Vec<_>>(),
            "{overlay}: different objects"
        );
        for (key, object) in &from_helm {
            if let Some(difference) = first_difference(object, &from_kustomize[key], String::new()) {
                panic!("{overlay}: {key:?} differs at {difference}");
            }
        }
        // Its Pods meet the Pod Security levels of the namespaces it labels.
        let objects: Vec<Value> = from_helm.into_values().collect();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            refused_pods(&cluster.kubectl, &objects, dir.path()),
            Vec::<String>::new()
        );
        drop(cluster);
    }
}

#[test]
fn the_seeds_helm_commands_work_and_an_upgrade_turns_the_gate_off() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster = start_cluster(&runtime);
    // The chart's schema refuses a misspelt value or a malformed gate, naming it,
    // before anything is installed.
    let chart = repo("charts/prewarm");
    for (set, named) in [
        ("featureGate=ImagePullJobGate=true", "featureGate"),
        ("featureGates=ImagePullJobGate", "featureGates"),
    ] {
        let refused = helm(&[
            "install",
            "prewarm",
            chart.to_str().unwrap(),
            "--kubeconfig",
            cluster.kubeconfig.to_str().unwrap(),
            "--set",
            set,
        ]);
        assert!(
            !refused.ok && refused.stderr.contains(named),
            "{set}: {}",
            refused.stderr
        );
    }
    // helm install … --set featureGates="ImagePullJobGate=true": into kruise-system, as OpenKruise's chart.
    cluster.helm("install", &["featureGates=ImagePullJobGate=true"]);
    assert_eq!(feature_gates(&cluster), "ImagePullJobGate=true");
    let status = release_status(&cluster);
    assert_eq!(status, "deployed");
    let before = generations(&cluster);

    // An upgrade turns the gate off in both components (an upgrade without --set
    // would keep the release's values, as Helm does) by the ConfigMap alone:
    // no Pod template changes, so nothing restarts.
    cluster.helm("upgrade", &["featureGates=ImagePullJobGate=false"]);
    assert_eq!(feature_gates(&cluster), "ImagePullJobGate=false");
    assert_eq!(generations(&cluster), before, "the upgrade changed a Deployment");
    assert_eq!(release_status(&cluster), "deployed");
    drop(cluster);

    // The seed's credential-provider steps as written: its ConfigMap, byte for
    // byte, into kruise-system made beforehand, then its helm install.
    let cluster = start_cluster(&runtime);
    let config_map = repo("api/tests/fixtures/seed/06-configmap-credential-provider.yaml");
    cluster.kubectl.ok(&["create", "namespace", "kruise-system"]);
    cluster.kubectl.ok(&["apply", "-f", config_map.to_str().unwrap()]);
    let release = cluster.helm(
        "install",
        &[
            "installation.createNamespace=false",
            "daemon.credentialProvider.enable=true",
            "daemon.credentialProvider.hostPath=/etc/eks/image-credential-provider",
            "daemon.credentialProvider.configmap=credential-provider-config",
            "daemon.credentialProvider.awsCredentialsDir=/root/.aws",
        ],
    );
    assert!(
        !release_objects(&release)
            .iter()
            .any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == "kruise-system")
    );
    let agent = cluster.get(&["get", "daemonset", "-n", "prewarm-nodeagent", "prewarm-nodeagent"]);
    check_workload("helm, credential provider", &agent, IMAGE);
    let pod = &agent["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    // The agent runs in its own namespace: it reads the ConfigMap by name through the API.
    let config_map_arg = "--credential-provider-config-map=kruise-system/credential-provider-config";
    assert!(args.contains(&config_map_arg), "{args:?}");
    assert!(
        args.contains(&"--credential-provider-bin-dir=/etc/prewarm/credential-provider-plugins"),
        "{args:?}"
    );
    let volume = |name: &str| {
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        volume("credential-provider-plugins")["hostPath"]["path"],
        "/etc/eks/image-credential-provider"
    );
    let reader = cluster.get(&[
        "get",
        "role",
        "-n",
        "kruise-system",
        "prewarm-nodeagent-credential-provider",
    ]);
    assert_eq!(
        reader["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["configmaps"],
                            "resourceNames": ["credential-provider-config"], "verbs": ["get"]}])
    );
    assert_eq!(volume("aws-credentials")["hostPath"]["path"], "/root/.aws");
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == "aws-credentials" && m["mountPath"] == "/root/.aws" && m["readOnly"] == true)
    );
    // The seed's ConfigMap holds the key the agent reads.
    let stored = cluster.get(&["get", "configmap", "-n", "kruise-system", "credential-provider-config"]);
    assert!(stored["data"]["CredentialProviderPlugin.yaml"].is_string());
    drop(cluster);

    // One webhook replica gets no PodDisruptionBudget (minAvailable 1 would
    // block every drain); the CRDs are kept by helm uninstall.
    let cluster = start_cluster(&runtime);
    let release = cluster.helm(
        "install",
        &[
            "webhook.replicas=1",
            "webhook.maxTimeoutSeconds=3600",
            "webhook.maxBackoffLimit=10",
            "networkPolicy.enabled=true",
        ],
    );
    let objects = release_objects(&release);
    // The webhook is scheduled as the admission path it is, with a quota that
    // admits its replicas (and a rollout's surge) at that priority.
    let webhook = cluster.get(&["get", "deployment", "-n", "kruise-system", "prewarm-webhook"]);
    assert_eq!(
        webhook["spec"]["template"]["spec"]["priorityClassName"],
        "system-cluster-critical"
    );
    let quota = cluster.get(&["get", "resourcequota", "-n", "kruise-system", "prewarm-critical-pods"]);
    assert_eq!(quota["spec"]["hard"]["pods"], "2");
    assert_eq!(
        quota["spec"]["scopeSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["system-cluster-critical"])
    );
    // The optional NetworkPolicy lets anyone reach the webhook port only.
    let policy = cluster.get(&["get", "networkpolicy", "-n", "kruise-system", "prewarm"]);
    let ingress = &policy["spec"]["ingress"];
    assert_eq!(
        ingress[0]["ports"],
        serde_json::json!([{"protocol": "TCP", "port": 9443}])
    );
    assert!(ingress[0].get("from").is_none(), "{policy}");
    assert_eq!(ingress[1]["from"][0]["namespaceSelector"], serde_json::json!({}));
    // An admin's caps reach the webhook; a cap below the defaults is refused by the schema.
    let webhook = cluster.get(&["get", "deployment", "-n", "kruise-system", "prewarm-webhook"]);
    let args = strings(&webhook["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(
        args.contains(&"--max-timeout-seconds=3600") && args.contains(&"--max-backoff-limit=10"),
        "{args:?}"
    );
    let low = cluster.try_helm("default", "install", "capped-low", &["webhook.maxTimeoutSeconds=300"]);
    assert!(!low.ok && low.stderr.contains("maxTimeoutSeconds"), "{}", low.stderr);
    // The agents' namespace is theirs alone: not where the CA key is, not kube-system.
    for shared in ["kruise-system", "kube-system"] {
        let set = format!("agentNamespace={shared}");
        let refused = cluster.try_helm("default", "install", "shared-agents", &[&set]);
        assert!(
            !refused.ok && refused.stderr.contains(&format!("agentNamespace is \"{shared}\"")),
            "{}",
            refused.stderr
        );
    }
    // The node agents, which need privileged, run apart from the restricted rest.
    for shared in ["kruise-system", "kruise-daemon-config"] {
        let set = format!("daemon.namespace={shared}");
        let refused = cluster.try_helm("default", "install", "shared-daemon", &[&set]);
        assert!(
            !refused.ok && refused.stderr.contains(&format!("daemon.namespace is \"{shared}\"")),
            "{}",
            refused.stderr
        );
    }
    for (namespace, level) in [
        ("kruise-daemon-config", "restricted"),
        ("kruise-system", "restricted"),
        ("prewarm-nodeagent", "privileged"),
    ] {
        let labels = &cluster.get(&["get", "namespace", namespace])["metadata"]["labels"];
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], level, "{namespace}");
    }
    assert!(
        !objects.iter().any(|o| o["kind"] == "PodDisruptionBudget"),
        "no PDB for one replica"
    );
    let crds: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect();
    assert_eq!(crds.len(), 4);
    assert!(
        crds.iter()
            .all(|c| c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"),
        "{crds:?}"
    );
    // A priorityClassName of "" leaves both out.
    cluster.helm("upgrade", &["webhook.replicas=1", "webhook.priorityClassName="]);
    let plain = cluster.get(&["get", "deployment", "-n", "kruise-system", "prewarm-webhook"]);
    assert!(
        plain["spec"]["template"]["spec"].get("priorityClassName").is_none(),
        "{plain}"
    );
    let quota = cluster
        .kubectl
        .run(&["get", "resourcequota", "-n", "kruise-system", "prewarm-critical-pods"]);
    assert!(!quota.ok, "{}", quota.stdout);
    drop(cluster);

    // The user's habit: helm install -n NS into a namespace that exists. The
    // chart installs there and leaves the namespace alone (it is Helm's).
    let cluster = start_cluster(&runtime);
    cluster.kubectl.ok(&["create", "namespace", "pre-warming"]);
    let release = cluster.helm_in("pre-warming", "install", &[]);
    assert!(
        !release_objects(&release)
            .iter()
            .any(|o| o["kind"] == "Namespace" && o["metadata"]["name"] == "pre-warming"),
        "the release namespace is not the chart's to create"
    );
    let webhook = cluster.get(&["get", "deployment", "-n", "pre-warming", "prewarm-webhook"]);
    assert_eq!(webhook["metadata"]["namespace"], "pre-warming");
    drop(cluster);
}

fn release_status(cluster: &Cluster) -> String {
    // Helm keeps the release in a Secret of the release namespace, labelled with its status.
    let secrets = cluster.get(&["get", "secrets", "-n", "default", "-l", "owner=helm,name=prewarm"]);
    let items = secrets["items"].as_array().unwrap();
    let latest = items
        .iter()
        .max_by_key(|s| {
            s["metadata"]["labels"]["version"]
                .as_str()
                .unwrap()
                .parse::<u32>()
                .unwrap()
        })
        .unwrap();
    latest["metadata"]["labels"]["status"].as_str().unwrap().to_owned()
}

/// `advancedCronJob.otherTemplates`: with `leaveToOpenKruise`, an AdvancedCronJob
/// of batch Jobs skips prewarm's webhooks (here no webhook Pod runs, so a call
/// would fail), while one of ImageListPullJobs still goes through them.
#[test]
fn batch_cron_jobs_can_be_left_to_openkruise() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cron = |name: &str, template: &str| {
        format!(
            "apiVersion: apps.kruise.io/v1beta1\nkind: AdvancedCronJob\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  schedule: \"@daily\"\n  template:\n    {template}\n"
        )
    };
    let batch = cron(
        "batch",
        "jobTemplate: {spec: {template: {spec: {containers: [{name: c, image: busybox}]}}}}",
    );
    let prewarming = cron(
        "prewarming",
        "imageListPullJobTemplate: {spec: {images: [nginx], completionPolicy: {type: Always}}}",
    );
    for (sets, batch_admitted) in [
        (vec!["featureGates=ImagePullJobGate=true"], false),
        (
            vec![
                "featureGates=ImagePullJobGate=true",
                "advancedCronJob.otherTemplates=leaveToOpenKruise",
            ],
            true,
        ),
    ] {
        let cluster = start_cluster(&runtime);
        cluster.helm("install", &sets);
        let dir = tempfile::tempdir().unwrap();
        let apply = |manifest: &str| {
            let file = dir.path().join("cron.yaml");
            std::fs::write(&file, manifest).unwrap();
            cluster.kubectl.apply(&file, &[])
        };
        let ran = apply(&batch);
        assert_eq!(ran.ok, batch_admitted, "{sets:?}: {}", ran.stderr);
        if !batch_admitted {
            assert!(
                ran.stderr.contains("prewarm.io"),
                "the webhook was called: {}",
                ran.stderr
            );
        }
        let ran = apply(&prewarming);
        assert!(!ran.ok && ran.stderr.contains("prewarm.io"), "{sets:?}: {}", ran.stderr);
    }
    let cluster = start_cluster(&runtime);
    let refused = cluster.try_helm("default", "install", "prewarm", &["advancedCronJob.otherTemplates=yes"]);
    assert!(
        !refused.ok && refused.stderr.contains("otherTemplates"),
        "{}",
        refused.stderr
    );
}
