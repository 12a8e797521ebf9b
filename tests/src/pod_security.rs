//! Pod Security admission, as kube-apiserver's built-in PodSecurity plugin
//! applies the Pod Security Standards ("latest"): a Pod created in a namespace
//! labelled `pod-security.kubernetes.io/enforce: LEVEL` that violates LEVEL is
//! refused; `warn: LEVEL` adds warnings for Pods and for the Pod templates of
//! workloads. The checks and their wording follow
//! https://kubernetes.io/docs/concepts/security/pod-security-standards/ and
//! `k8s.io/pod-security-admission/policy`; AppArmor, SELinux options and
//! Windows fields (which prewarm's manifests do not use) are not checked.

use serde_json::Value;

use crate::admission::Operation;
use crate::error::ApiError;
use crate::http::Target;
use crate::store::Store;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "privileged" => Some(Self::Privileged),
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// Capabilities baseline lets a container add.
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Volume types restricted allows.
const RESTRICTED_VOLUMES: [&str; 8] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Sysctls baseline allows.
const SAFE_SYSCTLS: [&str; 10] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// The namespace label that sets `mode` (`enforce`, `warn`, `audit`).
pub fn level_of(namespace: Option<&Value>, mode: &str) -> Option<Level> {
    namespace?
        .pointer("/metadata/labels")?
        .get(format!("pod-security.kubernetes.io/{mode}"))?
        .as_str()
        .and_then(Level::parse)
}

/// `violates PodSecurity "LEVEL:latest": …` for a Pod spec, or `None` when it
/// meets `level`.
pub fn verdict(level: Level, pod: &Value) -> Option<String> {
    let found = violations(level, pod);
    (!found.is_empty()).then(|| format!("PodSecurity \"{}:latest\": {}", level.as_str(), found.join(", ")))
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

/// `container "a"` or `containers "a", "b"`, as the checks name them.
fn containers_named(names: &[String]) -> String {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let noun = if names.len() == 1 { "container" } else { "containers" };
    format!("{noun} {}", quoted(&names))
}

/// Every violation of `level` by the Pod spec `pod`, each as `check (detail)`.
pub fn violations(level: Level, pod: &Value) -> Vec<String> {
    if level == Level::Privileged {
        return Vec::new();
    }
    let containers: Vec<&Value> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|key| pod.get(*key).and_then(Value::as_array).into_iter().flatten())
        .collect();
    let name = |c: &Value| c.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    let security = |c: &'_ Value| c.get("securityContext").cloned().unwrap_or(Value::Null);
    let pod_security = pod.get("securityContext").cloned().unwrap_or(Value::Null);
    let volumes: Vec<&Value> = pod
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let mut found = Vec::new();
    let mut check = |label: &str, detail: Option<String>| {
        if let Some(detail) = detail {
            found.push(format!("{label} ({detail})"));
        }
    };
    let which = |test: &dyn Fn(&Value) -> bool| -> Vec<String> {
        containers.iter().filter(|c| test(c)).map(|c| name(c)).collect()
    };

    // Baseline.
    let host: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| pod.get(**k) == Some(&Value::Bool(true)))
        .map(|k| format!("{k}=true"))
        .collect();
    check("host namespaces", (!host.is_empty()).then(|| host.join(", ")));
    let privileged = which(&|c| security(c).get("privileged") == Some(&Value::Bool(true)));
    check(
        "privileged",
        (!privileged.is_empty()).then(|| {
            format!(
                "{} must not set securityContext.privileged=true",
                containers_named(&privileged)
            )
        }),
    );
    for container in &containers {
        let context = security(container);
        let added: Vec<&str> = strings(context.pointer("/capabilities/add"))
            .into_iter()
            .filter(|cap| !BASELINE_CAPABILITIES.contains(cap))
            .collect();
        check(
            "non-default capabilities",
            (!added.is_empty()).then(|| {
                format!(
                    "container {:?} must not include {} in securityContext.capabilities.add",
                    name(container),
                    quoted(&added)
                )
            }),
        );
    }
    let host_paths: Vec<&str> = volumes
        .iter()
        .filter(|v| v.get("hostPath").is_some())
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    check(
        "hostPath volumes",
        (!host_paths.is_empty()).then(|| format!("volumes {}", quoted(&host_paths))),
    );
    for container in &containers {
        let ports: Vec<String> = container
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("hostPort").and_then(Value::as_i64))
            .filter(|port| *port != 0)
            .map(|port| port.to_string())
            .collect();
        check(
            "hostPort",
            (!ports.is_empty()).then(|| format!("container {:?} uses hostPort {}", name(container), ports.join(", "))),
        );
    }
    let unconfined =
        |context: &Value| context.pointer("/seccompProfile/type").and_then(Value::as_str) == Some("Unconfined");
    if unconfined(&pod_security) {
        check(
            "seccompProfile",
            Some("pod must not set securityContext.seccompProfile.type to \"Unconfined\"".to_owned()),
        );
    }
    let proc_mount = which(&|c| {
        security(c)
            .get("procMount")
            .and_then(Value::as_str)
            .is_some_and(|m| m != "Default")
    });
    check(
        "procMount",
        (!proc_mount.is_empty()).then(|| {
            format!(
                "{} must not set securityContext.procMount to \"Unmasked\"",
                containers_named(&proc_mount)
            )
        }),
    );
    let sysctls: Vec<&str> = pod_security
        .get("sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|s| !SAFE_SYSCTLS.contains(s))
        .collect();
    check("forbidden sysctls", (!sysctls.is_empty()).then(|| sysctls.join(", ")));
    if level == Level::Baseline {
        return found;
    }

    // Restricted.
    for volume in &volumes {
        let restricted: Vec<&str> = volume
            .as_object()
            .into_iter()
            .flat_map(|v| v.keys())
            .map(String::as_str)
            .filter(|k| *k != "name" && !RESTRICTED_VOLUMES.contains(k))
            .collect();
        if let Some(kind) = restricted.first() {
            let volume_name = volume.get("name").and_then(Value::as_str).unwrap_or_default();
            check(
                "restricted volume types",
                Some(format!("volume {volume_name:?} uses restricted volume type {kind:?}")),
            );
        }
    }
    let escalating = which(&|c| security(c).get("allowPrivilegeEscalation") != Some(&Value::Bool(false)));
    check(
        "allowPrivilegeEscalation != false",
        (!escalating.is_empty()).then(|| {
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                containers_named(&escalating)
            )
        }),
    );
    for container in &containers {
        let context = security(container);
        let dropped = strings(context.pointer("/capabilities/drop"));
        let added: Vec<&str> = strings(context.pointer("/capabilities/add"))
            .into_iter()
            .filter(|cap| *cap != "NET_BIND_SERVICE")
            .collect();
        let mut details = Vec::new();
        if !dropped.contains(&"ALL") {
            details.push(format!(
                "container {:?} must set securityContext.capabilities.drop=[\"ALL\"]",
                name(container)
            ));
        }
        if !added.is_empty() {
            details.push(format!(
                "container {:?} must not include {} in securityContext.capabilities.add",
                name(container),
                quoted(&added)
            ));
        }
        check(
            "unrestricted capabilities",
            (!details.is_empty()).then(|| details.join("; ")),
        );
    }
    let pod_non_root = pod_security.get("runAsNonRoot") == Some(&Value::Bool(true));
    let root_allowed = which(&|c| match security(c).get("runAsNonRoot") {
        Some(Value::Bool(value)) => !value,
        _ => !pod_non_root,
    });
    check(
        "runAsNonRoot != true",
        (!root_allowed.is_empty() || pod_security.get("runAsNonRoot") == Some(&Value::Bool(false))).then(|| {
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                containers_named(&root_allowed)
            )
        }),
    );
    let root_user = |context: &Value| context.get("runAsUser").and_then(Value::as_i64) == Some(0);
    if root_user(&pod_security) {
        check("runAsUser=0", Some("pod must not set runAsUser=0".to_owned()));
    }
    let root_containers = which(&|c| root_user(&security(c)));
    check(
        "runAsUser=0",
        (!root_containers.is_empty())
            .then(|| format!("{} must not set runAsUser=0", containers_named(&root_containers))),
    );
    let confined = |context: &Value| {
        matches!(
            context.pointer("/seccompProfile/type").and_then(Value::as_str),
            Some("RuntimeDefault" | "Localhost")
        )
    };
    let unset = which(&|c| {
        let own = security(c);
        if own.pointer("/seccompProfile/type").is_some() {
            !confined(&own)
        } else {
            !confined(&pod_security)
        }
    });
    check(
        "seccompProfile",
        (!unset.is_empty()).then(|| {
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                containers_named(&unset)
            )
        }),
    );
    found
}

/// The PodSecurity admission plugin: a new Pod that violates its
/// namespace's `enforce` level is refused; Pods and workload templates
/// that violate its `warn` level get a warning.
pub(crate) fn admit(
    store: &Store,
    target: &Target,
    operation: Operation,
    namespace: &str,
    object: &Value,
) -> Result<(), ApiError> {
    let template = match (target.rt.group.as_str(), target.rt.kind.as_str()) {
        ("", "Pod") => "/spec",
        ("apps", "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet") | ("batch", "Job") => "/spec/template/spec",
        ("batch", "CronJob") => "/spec/jobTemplate/spec/template/spec",
        _ => return Ok(()),
    };
    if target.subresource.is_some() || !matches!(operation, Operation::Create | Operation::Update) {
        return Ok(());
    }
    let Some(pod) = object.pointer(template) else {
        return Ok(());
    };
    let labels = store
        .resource_type("", "v1", "namespaces")
        .and_then(|rt| store.get(&rt, "", namespace).ok());
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if template == "/spec"
        && operation == Operation::Create
        && let Some(level) = level_of(labels.as_ref(), "enforce")
        && let Some(verdict) = verdict(level, pod)
    {
        return Err(ApiError::forbidden(format!(
            "pods {name:?} is forbidden: violates {verdict}"
        )));
    }
    if let Some(level) = level_of(labels.as_ref(), "warn")
        && let Some(verdict) = verdict(level, pod)
    {
        target.fields.add_warnings(vec![format!("would violate {verdict}")]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hardened() -> Value {
        json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
               "containers": [{"name": "app", "securityContext": {"allowPrivilegeEscalation": false,
                   "capabilities": {"drop": ["ALL"]}}}],
               "volumes": [{"name": "certs", "emptyDir": {}}]})
    }

    #[test]
    fn a_hardened_pod_meets_restricted() {
        assert_eq!(violations(Level::Restricted, &hardened()), Vec::<String>::new());
    }

    #[test]
    fn a_host_path_mount_is_baseline_and_restricted_violation_but_privileged_is_fine() {
        let mut pod = hardened();
        pod["volumes"] = json!([{"name": "cri-socket", "hostPath": {"path": "/run/containerd/containerd.sock"}}]);
        assert_eq!(
            violations(Level::Baseline, &pod),
            ["hostPath volumes (volumes \"cri-socket\")"]
        );
        assert_eq!(
            violations(Level::Restricted, &pod),
            [
                "hostPath volumes (volumes \"cri-socket\")",
                "restricted volume types (volume \"cri-socket\" uses restricted volume type \"hostPath\")"
            ]
        );
        assert!(violations(Level::Privileged, &pod).is_empty());
    }

    #[test]
    fn restricted_names_each_missing_setting() {
        let pod = json!({"securityContext": {"runAsUser": 0},
                          "containers": [{"name": "a", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]});
        assert_eq!(
            violations(Level::Restricted, &pod),
            [
                "non-default capabilities (container \"a\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add)",
                "allowPrivilegeEscalation != false (container \"a\" must set securityContext.allowPrivilegeEscalation=false)",
                "unrestricted capabilities (container \"a\" must set securityContext.capabilities.drop=[\"ALL\"]; container \"a\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add)",
                "runAsNonRoot != true (pod or container \"a\" must set securityContext.runAsNonRoot=true)",
                "runAsUser=0 (pod must not set runAsUser=0)",
                "seccompProfile (pod or container \"a\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            ]
        );
        assert_eq!(
            violations(Level::Baseline, &pod),
            [
                "non-default capabilities (container \"a\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add)"
            ]
        );
    }

    #[test]
    fn levels_come_from_the_namespace_labels() {
        let namespace = json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted",
                                                         "pod-security.kubernetes.io/warn": "bogus"}}});
        assert_eq!(level_of(Some(&namespace), "enforce"), Some(Level::Restricted));
        assert_eq!(level_of(Some(&namespace), "warn"), None);
        assert_eq!(level_of(None, "enforce"), None);
    }
}
