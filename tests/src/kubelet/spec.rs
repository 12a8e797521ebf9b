//! A Pod's spec turned into CRI configs, as kubelet's kuberuntime manager turns
//! it (pkg/kubelet/kuberuntime/kuberuntime_sandbox.go, kuberuntime_container.go,
//! security_context.go, and pkg/kubelet/kubelet_pods.go for the environment):
//! pure functions of the Pod and what was resolved for it.

use std::collections::HashMap;

use serde_json::Value;

use super::cri::api;

/// Paths kubelet masks and makes read-only in unprivileged containers
/// (`DefaultMaskedPaths` / `DefaultReadonlyPaths`, pkg/securitycontext/util.go).
const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

pub fn host_network(pod: &Value) -> bool {
    pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true))
}

fn seccomp(context: &Value) -> Option<api::SecurityProfile> {
    let kind = context.pointer("/seccompProfile/type")?.as_str()?;
    let profile_type = match kind {
        "RuntimeDefault" => api::security_profile::ProfileType::RuntimeDefault,
        "Localhost" => api::security_profile::ProfileType::Localhost,
        _ => api::security_profile::ProfileType::Unconfined,
    };
    Some(api::SecurityProfile {
        profile_type: profile_type as i32,
        localhost_ref: text(context, "/seccompProfile/localhostProfile").to_owned(),
    })
}

/// Unset seccomp is Unconfined, kubelet's default (`seccompDefault: false`).
fn unconfined() -> api::SecurityProfile {
    api::SecurityProfile {
        profile_type: api::security_profile::ProfileType::Unconfined as i32,
        localhost_ref: String::new(),
    }
}

fn int(value: Option<&Value>) -> Option<i64> {
    value.and_then(Value::as_i64)
}

pub fn sandbox_config(pod: &Value, log_directory: &str) -> api::PodSandboxConfig {
    let name = text(pod, "/metadata/name");
    let pod_context = &pod["spec"]["securityContext"];
    let network = if host_network(pod) {
        api::NamespaceMode::Node
    } else {
        api::NamespaceMode::Pod
    };
    let labels: HashMap<String, String> = pod["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .chain([
            ("io.kubernetes.pod.name".to_owned(), name.to_owned()),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                text(pod, "/metadata/namespace").to_owned(),
            ),
            (
                "io.kubernetes.pod.uid".to_owned(),
                text(pod, "/metadata/uid").to_owned(),
            ),
        ])
        .collect();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.to_owned(),
            uid: text(pod, "/metadata/uid").to_owned(),
            namespace: text(pod, "/metadata/namespace").to_owned(),
            attempt: 0,
        }),
        hostname: if host_network(pod) {
            String::new()
        } else {
            name.to_owned()
        },
        log_directory: log_directory.to_owned(),
        labels,
        linux: Some(api::LinuxPodSandboxConfig {
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    network: network as i32,
                    pid: api::NamespaceMode::Container as i32,
                    ipc: api::NamespaceMode::Pod as i32,
                    target_id: String::new(),
                }),
                run_as_user: int(pod_context.get("runAsUser")).map(|value| api::Int64Value { value }),
                run_as_group: int(pod_context.get("runAsGroup")).map(|value| api::Int64Value { value }),
                supplemental_groups: supplemental_groups(pod),
                privileged: containers(pod)
                    .any(|c| c.pointer("/securityContext/privileged") == Some(&Value::Bool(true))),
                seccomp: Some(seccomp(pod_context).unwrap_or_else(unconfined)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    pod["spec"]["containers"].as_array().into_iter().flatten()
}

/// `supplementalGroups` and `fsGroup`, as kubelet adds both to every process.
fn supplemental_groups(pod: &Value) -> Vec<i64> {
    let context = &pod["spec"]["securityContext"];
    let mut groups: Vec<i64> = context["supplementalGroups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .collect();
    if let Some(fs_group) = int(context.get("fsGroup")) {
        groups.push(fs_group);
    }
    groups
}

/// A container's effective security context: its own over the Pod's.
fn effective<'a>(pod: &'a Value, container: &'a Value, field: &str) -> Option<&'a Value> {
    container["securityContext"]
        .get(field)
        .or_else(|| pod["spec"]["securityContext"].get(field))
}

/// The image's user, as `ImageStatus` reports it: a uid, or a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageUser {
    Uid(i64),
    Name(String),
}

/// kubelet's `verifyRunAsNonRoot` (pkg/kubelet/kuberuntime/security_context_others.go).
pub fn verify_run_as_non_root(pod: &Value, container: &Value, image_user: &ImageUser) -> Result<(), String> {
    if effective(pod, container, "runAsNonRoot") != Some(&Value::Bool(true)) {
        return Ok(());
    }
    let name = text(container, "/name");
    let pod_name = text(pod, "/metadata/name");
    if let Some(uid) = int(effective(pod, container, "runAsUser")) {
        return if uid == 0 {
            Err(format!(
                "container's runAsUser breaks non-root policy (pod: \"{pod_name}\", container: {name})"
            ))
        } else {
            Ok(())
        };
    }
    match image_user {
        ImageUser::Uid(0) => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: \"{pod_name}\", container: {name})"
        )),
        ImageUser::Uid(_) => Ok(()),
        ImageUser::Name(user) => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: \"{pod_name}\", container: {name})"
        )),
    }
}

/// kubelet's `$(VAR)` expansion of command, args and env values
/// (k8s.io/kubernetes/third_party/forked/golang/expansion): `$$` is a `$`, an
/// unknown `$(X)` stays as written.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, value)) => out.push_str(value),
                None => out.push_str(&rest[at..at + 1 + 1 + end + 1]),
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// What a container is created with beyond its spec.
#[derive(Debug)]
pub struct Resolved<'a> {
    pub image: &'a str,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<api::Mount>,
    pub log_path: String,
    pub attempt: u32,
}

pub fn container_config(pod: &Value, container: &Value, resolved: Resolved<'_>) -> api::ContainerConfig {
    let strings = |field: &str| -> Vec<String> {
        container[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|s| expand(s, &resolved.env))
            .collect()
    };
    let privileged = effective(pod, container, "privileged") == Some(&Value::Bool(true));
    let context = &container["securityContext"];
    let capability_list = |field: &str| -> Vec<String> {
        context["capabilities"][field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let name = text(container, "/name");
    let security = api::LinuxContainerSecurityContext {
        capabilities: Some(api::Capability {
            add_capabilities: capability_list("add"),
            drop_capabilities: capability_list("drop"),
        }),
        privileged,
        namespace_options: Some(api::NamespaceOption {
            network: if host_network(pod) {
                api::NamespaceMode::Node
            } else {
                api::NamespaceMode::Pod
            } as i32,
            pid: api::NamespaceMode::Container as i32,
            ipc: api::NamespaceMode::Pod as i32,
            target_id: String::new(),
        }),
        run_as_user: int(effective(pod, container, "runAsUser")).map(|value| api::Int64Value { value }),
        run_as_group: int(effective(pod, container, "runAsGroup")).map(|value| api::Int64Value { value }),
        readonly_rootfs: context.get("readOnlyRootFilesystem") == Some(&Value::Bool(true)),
        supplemental_groups: supplemental_groups(pod),
        // `allowPrivilegeEscalation: false` is no_new_privs.
        no_new_privs: context.get("allowPrivilegeEscalation") == Some(&Value::Bool(false)),
        masked_paths: if privileged {
            Vec::new()
        } else {
            MASKED_PATHS.map(str::to_owned).to_vec()
        },
        readonly_paths: if privileged {
            Vec::new()
        } else {
            READONLY_PATHS.map(str::to_owned).to_vec()
        },
        seccomp: Some(
            seccomp(context)
                .or_else(|| seccomp(&pod["spec"]["securityContext"]))
                .unwrap_or_else(unconfined),
        ),
        ..Default::default()
    };
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.to_owned(),
            attempt: resolved.attempt,
        }),
        image: Some(api::ImageSpec {
            image: resolved.image.to_owned(),
            user_specified_image: text(container, "/image").to_owned(),
            ..Default::default()
        }),
        command: strings("command"),
        args: strings("args"),
        working_dir: text(container, "/workingDir").to_owned(),
        envs: resolved
            .env
            .iter()
            .map(|(key, value)| api::KeyValue {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        mounts: resolved.mounts,
        labels: HashMap::from([
            ("io.kubernetes.container.name".to_owned(), name.to_owned()),
            (
                "io.kubernetes.pod.uid".to_owned(),
                text(pod, "/metadata/uid").to_owned(),
            ),
        ]),
        log_path: resolved.log_path,
        linux: Some(api::LinuxContainerConfig {
            security_context: Some(security),
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn expansion_as_kubelet_does_it() {
        let env = vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), "two".to_owned())];
        assert_eq!(expand("--a=$(A) --b=$(B)", &env), "--a=1 --b=two");
        assert_eq!(expand("$(C) $$(A) $", &env), "$(C) $(A) $");
    }

    #[test]
    fn run_as_non_root_is_checked_against_the_image_user() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"securityContext": {"runAsNonRoot": true}}});
        let container = json!({"name": "c"});
        assert_eq!(
            verify_run_as_non_root(&pod, &container, &ImageUser::Uid(0)).unwrap_err(),
            "container has runAsNonRoot and image will run as root (pod: \"p\", container: c)"
        );
        assert!(verify_run_as_non_root(&pod, &container, &ImageUser::Uid(65532)).is_ok());
        assert!(verify_run_as_non_root(&pod, &container, &ImageUser::Name("app".into())).is_err());
        let explicit = json!({"name": "c", "securityContext": {"runAsUser": 1000}});
        assert!(verify_run_as_non_root(&pod, &explicit, &ImageUser::Uid(0)).is_ok());
    }

    #[test]
    fn security_context_maps_to_the_cri() {
        let pod = json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"securityContext": {
            "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 2000, "seccompProfile": {"type": "RuntimeDefault"}}}});
        let container = json!({"name": "c", "image": "img", "command": ["/bin", "$(X)"], "securityContext": {
            "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}});
        let config = container_config(
            &pod,
            &container,
            Resolved {
                image: "sha256:1",
                env: vec![("X".into(), "y".into())],
                mounts: Vec::new(),
                log_path: "c/0.log".into(),
                attempt: 0,
            },
        );
        assert_eq!(config.command, ["/bin", "y"]);
        let security = config.linux.unwrap().security_context.unwrap();
        assert_eq!(security.run_as_user.unwrap().value, 65532);
        assert_eq!(security.supplemental_groups, [2000]);
        assert!(security.readonly_rootfs && security.no_new_privs);
        assert_eq!(security.capabilities.unwrap().drop_capabilities, ["ALL"]);
        assert_eq!(
            security.seccomp.unwrap().profile_type,
            api::security_profile::ProfileType::RuntimeDefault as i32
        );
        assert_eq!(security.masked_paths.len(), 11);
    }
}
