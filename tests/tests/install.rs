//! The install path: every kustomize overlay renders with kubectl, parses
//! strictly into its Kubernetes types, runs hardened, names the image the build
//! script makes and only flags the binaries accept; `kubectl apply -k` installs
//! prewarm idempotently, and two webhook replicas, with nothing but the shipped
//! RBAC, agree on one CA, inject it and admit through every shipped path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use common::{Kubectl, repo};
use prewarm_testapi::{Options, TestApi};
use prewarm_webhook::server::{CertSource, ServeConfig, Server};
use serde_json::{Value, json};

const OVERLAYS: [&str; 3] = [
    "manifests/base",
    "manifests/overlays/image-pull-job-gate",
    "manifests/overlays/cert-manager",
];
const SERVICE: &str = "prewarm-system/prewarm-webhook";
const IMAGE: &str = concat!("localhost/prewarm:", env!("CARGO_PKG_VERSION"));

fn render(kubectl: &Kubectl, dir: &str) -> Vec<Value> {
    let text = kubectl.ok(&["kustomize", repo(dir).to_str().unwrap()]);
    serde_saphyr::from_multiple::<Value>(&text).unwrap()
}

fn group_of(object: &Value) -> &str {
    let api_version = object["apiVersion"].as_str().unwrap();
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Where cargo put the workspace's binaries (next to this test's directory).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first",
        path.display()
    );
    path
}

/// `--help` of the command a container runs.
fn help(command: &[Value]) -> String {
    let program = command[0].as_str().unwrap().trim_start_matches('/');
    let mut run = std::process::Command::new(binary(program));
    run.args(command[1..].iter().map(|a| a.as_str().unwrap())).arg("--help");
    let out = run.output().unwrap();
    assert!(out.status.success(), "{command:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

fn check_workload(overlay: &str, workload: &Value) {
    let name = workload["metadata"]["name"].as_str().unwrap();
    let pod = &workload["spec"]["template"]["spec"];
    let context = format!("{overlay}: {name}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{context}"
    );
    // Only the node agent runs as root (the CRI socket is root's).
    if name == "prewarm-nodeagent" {
        assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]), "{context}");
    } else {
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{context}");
    }
    for container in pod["containers"].as_array().unwrap() {
        assert_eq!(container["image"], IMAGE, "{context}");
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{context}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{context}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{context}");
        for side in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    container["resources"][side][resource].is_string(),
                    "{context}: {side}.{resource}"
                );
            }
        }
        // Every flag and variable the manifest sets is one the binary takes.
        let help = help(container["command"].as_array().unwrap());
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        for arg in &args {
            let flag = arg.split_once('=').map_or(*arg, |(flag, _)| flag);
            assert!(
                help.contains(&format!("{flag} "))
                    || help.contains(&format!("{flag}="))
                    || help.contains(&format!("{flag} <")),
                "{context}: {flag} is not a flag of {:?}",
                container["command"]
            );
        }
        for env in container["env"].as_array().unwrap() {
            let var = env["name"].as_str().unwrap();
            assert!(
                var == "MIMALLOC_PURGE_DELAY" || help.contains(&format!("[env: {var}=")),
                "{context}: {var} is read by no flag"
            );
        }
        // Each container port is the port of a listen flag, and probes use named ports.
        let ports: Vec<(&str, u64)> = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_u64().unwrap()))
            .collect();
        for (port_name, number) in &ports {
            assert!(
                args.iter()
                    .any(|a| a.starts_with("--") && a.contains("listen=") && a.ends_with(&format!(":{number}"))),
                "{context}: port {port_name} ({number}) is no listener's"
            );
        }
        for probe in ["readinessProbe", "livenessProbe"] {
            if let Some(get) = container[probe]["httpGet"].as_object() {
                assert!(
                    ports.iter().any(|(n, _)| Some(*n) == get["port"].as_str()),
                    "{context}: {probe}"
                );
                assert!(
                    ["/healthz", "/readyz"].contains(&get["path"].as_str().unwrap()),
                    "{context}: {probe}"
                );
            }
        }
    }
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
        let objects = render(&kubectl, overlay);
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
            check_workload(overlay, workload);
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
        assert_eq!(paths.len(), 6, "{overlay}: {paths:?}");
        let gates = |name: &str| {
            let container = &named(&objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0];
            container["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "PREWARM_FEATURE_GATES")
                .unwrap()["value"]
                .clone()
        };
        let expected = if overlay == "manifests/base" {
            ""
        } else {
            "ImagePullJobGate=true"
        };
        assert_eq!(gates("prewarm-webhook"), expected, "{overlay}");
        assert_eq!(gates("prewarm-controller"), expected, "{overlay}");
    }
}
