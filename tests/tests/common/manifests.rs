//! Rendering prewarm's install manifests: kustomize (through kubectl) and Helm
//! (the real Helm library, PyPI helm-sdkpy, driven by scripts/helm.py).

use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

use super::{Kubectl, Ran, repo, tools_dir};

/// `kubectl kustomize DIR`, one JSON value per object.
pub fn kustomize(kubectl: &Kubectl, dir: &str) -> Vec<Value> {
    let text = kubectl.ok(&["kustomize", repo(dir).to_str().unwrap()]);
    serde_saphyr::from_multiple::<Value>(&text).unwrap()
}

pub fn group_of(object: &Value) -> &str {
    let api_version = object["apiVersion"].as_str().unwrap();
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

pub fn helm_python() -> PathBuf {
    let path = tools_dir().join("helm-venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        path.display()
    );
    path
}

/// `scripts/helm.py ARGS`.
pub fn helm(args: &[&str]) -> Ran {
    let out = Command::new(helm_python())
        .arg(repo("scripts/helm.py"))
        .args(args)
        .output()
        .unwrap();
    Ran {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The objects of a Helm release's manifest.
pub fn release_objects(release: &Value) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(release["manifest"].as_str().unwrap())
        .unwrap()
        .into_iter()
        .filter(|o| !o.is_null())
        .collect()
}

/// Where cargo put the workspace's binaries (next to this test's directory).
pub fn binary(name: &str) -> PathBuf {
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

/// A Deployment or DaemonSet runs hardened, on `image`, and sets only flags and
/// variables its binary reads, with ports and probes that match them.
pub fn check_workload(overlay: &str, workload: &Value, image: &str) {
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
        assert_eq!(container["image"], image, "{context}");
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
        let args = strings(&container["args"]);
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
                // Read by the allocator and by credential plugins, not by prewarm's flags.
                ["MIMALLOC_PURGE_DELAY", "HOME"].contains(&var) || help.contains(&format!("[env: {var}=")),
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

/// A JSON array of strings, as `&str`s.
pub fn strings(array: &Value) -> Vec<&str> {
    array.as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect()
}

/// Creates, as the workload controllers would, one Pod from the template of
/// every Deployment and DaemonSet among `objects` in its own namespace, so the
/// API server's PodSecurity admission judges them by that namespace's labels;
/// returns what kubectl said for each refused Pod.
pub fn refused_pods(kubectl: &Kubectl, objects: &[Value], dir: &std::path::Path) -> Vec<String> {
    let mut refused = Vec::new();
    for workload in objects
        .iter()
        .filter(|o| o["kind"] == "Deployment" || o["kind"] == "DaemonSet")
    {
        let name = workload["metadata"]["name"].as_str().unwrap();
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{name}-0"), "namespace": workload["metadata"]["namespace"]},
            "spec": workload["spec"]["template"]["spec"]});
        let file = dir.join(format!("{name}-pod.json"));
        std::fs::write(&file, pod.to_string()).unwrap();
        let ran = kubectl.run(&["create", "-f", file.to_str().unwrap()]);
        if !ran.ok {
            refused.push(ran.stderr);
        }
    }
    refused
}
