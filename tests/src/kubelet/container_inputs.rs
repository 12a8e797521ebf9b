//! What a container is created with, resolved as kubelet resolves it: its
//! image (pulled by `imagePullPolicy`) and the image's user, its environment
//! (the API server's service variables, then `env` with fieldRefs, ConfigMap
//! and Secret keys and `$(VAR)` expansion), and its mounts.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;

use super::cri::{Cri, api};
use super::pod_volumes;
use super::spec::{self, ImageUser};
use super::status::State;
use super::worker::waiting;
use super::{Node, text};

/// The image's ID and user, pulled first when `imagePullPolicy` says so.
pub(super) async fn ensure_image(cri: &mut Cri, container: &Value) -> Result<(String, ImageUser), State> {
    let image = text(container, "/image").to_owned();
    let policy = match text(container, "/imagePullPolicy") {
        "" if image.ends_with(":latest") || !image.rsplit('/').next().unwrap_or_default().contains(':') => "Always",
        "" => "IfNotPresent",
        other => other,
    };
    let spec = || api::ImageSpec {
        image: image.clone(),
        ..Default::default()
    };
    let status = |cri: &mut Cri| {
        let mut images = cri.images.clone();
        let request = api::ImageStatusRequest {
            image: Some(spec()),
            verbose: false,
        };
        async move {
            images
                .image_status(request)
                .await
                .ok()
                .and_then(|r| r.into_inner().image)
        }
    };
    let present = status(cri).await;
    let found = match (present, policy) {
        (Some(found), "IfNotPresent" | "Never") => Some(found),
        (None, "Never") => {
            return Err(waiting(
                "ErrImageNeverPull",
                format!("Container image \"{image}\" is not present with pull policy of Never"),
            ));
        }
        _ => None,
    };
    let found = match found {
        Some(found) => found,
        None => {
            cri.images
                .pull_image(api::PullImageRequest {
                    image: Some(spec()),
                    auth: None,
                    sandbox_config: None,
                })
                .await
                .map_err(|e| {
                    waiting(
                        "ErrImagePull",
                        format!("failed to pull image \"{image}\": {}", e.message()),
                    )
                })?;
            status(cri)
                .await
                .ok_or_else(|| waiting("ErrImagePull", format!("image \"{image}\" is missing after its pull")))?
        }
    };
    let user = match (&found.uid, found.username.as_str()) {
        (Some(uid), _) => ImageUser::Uid(uid.value),
        (None, "") => ImageUser::Uid(0),
        (None, name) => ImageUser::Name(name.to_owned()),
    };
    Ok((found.id, user))
}

/// The container's environment: the API server's service variables, then
/// its `env` in order, each able to refer to those before it.
pub(super) fn environment(
    node: &Node,
    pod: &Value,
    container: &Value,
    pod_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut env = vec![
        ("KUBERNETES_SERVICE_HOST".to_owned(), node.api_host.clone()),
        ("KUBERNETES_SERVICE_PORT".to_owned(), node.api_port.to_string()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".to_owned(), node.api_port.to_string()),
        (
            "KUBERNETES_PORT".to_owned(),
            format!("tcp://{}:{}", node.api_host, node.api_port),
        ),
    ];
    let namespace = text(pod, "/metadata/namespace");
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = text(variable, "/name").to_owned();
        let value = if let Some(value) = variable.get("value").and_then(Value::as_str) {
            spec::expand(value, &env)
        } else if let Some(path) = variable
            .pointer("/valueFrom/fieldRef/fieldPath")
            .and_then(Value::as_str)
        {
            if path == "status.podIP" {
                pod_ip.to_owned()
            } else if path == "status.hostIP" {
                node.host_ip.clone()
            } else {
                pod_volumes::field_ref(pod, path).ok_or_else(|| format!("unsupported fieldRef {path:?}"))?
            }
        } else if let Some(reference) = variable.pointer("/valueFrom/configMapKeyRef") {
            let object = node.get("configmaps", namespace, text(reference, "/name"));
            match object
                .as_ref()
                .and_then(|o| o["data"][text(reference, "/key")].as_str())
            {
                Some(value) => value.to_owned(),
                None if reference["optional"] == true => continue,
                None => {
                    return Err(format!(
                        "couldn't find key {} in ConfigMap {namespace}/{}",
                        text(reference, "/key"),
                        text(reference, "/name")
                    ));
                }
            }
        } else if let Some(reference) = variable.pointer("/valueFrom/secretKeyRef") {
            use base64::Engine;
            let object = node.get("secrets", namespace, text(reference, "/name"));
            let value = object
                .as_ref()
                .and_then(|o| o["data"][text(reference, "/key")].as_str())
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok());
            match value {
                Some(value) => String::from_utf8_lossy(&value).into_owned(),
                None if reference["optional"] == true => continue,
                None => {
                    return Err(format!(
                        "couldn't find key {} in Secret {namespace}/{}",
                        text(reference, "/key"),
                        text(reference, "/name")
                    ));
                }
            }
        } else {
            String::new()
        };
        env.push((name, value));
    }
    Ok(env)
}

pub(super) fn mounts(volumes: &HashMap<String, PathBuf>, container: &Value) -> Result<Vec<api::Mount>, String> {
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = text(mount, "/name");
        let mut host = volumes
            .get(name)
            .cloned()
            .ok_or_else(|| format!("volumeMount {name:?} names no volume of the Pod"))?;
        let sub_path = text(mount, "/subPath");
        if !sub_path.is_empty() {
            host = host.join(sub_path);
        }
        mounts.push(api::Mount {
            container_path: text(mount, "/mountPath").to_owned(),
            host_path: host.display().to_string(),
            readonly: mount["readOnly"] == true,
            ..Default::default()
        });
    }
    Ok(mounts)
}
