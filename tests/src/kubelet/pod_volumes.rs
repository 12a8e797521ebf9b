//! A Pod's volumes from its spec and the objects they name: where each is on
//! the node, written as [`super::volumes`] lays them out. configMap, secret and
//! projected volumes are refreshed on every sync, as kubelet's periodic
//! remount does, so a changed object reaches the files atomically.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use super::volumes::{self, Payload};
use super::{Node, text};

/// The projected service-account token's lifetime when the Pod names none
/// (the ServiceAccount admission plugin's 3607 s).
const TOKEN_SECONDS: u64 = 3607;

/// What a volume source resolved to: files by path, or a failure that keeps
/// the Pod's containers from starting (kubelet's FailedMount).
type Files = Result<Vec<Payload>, String>;

fn mode(value: Option<&Value>, default: u32) -> u32 {
    value
        .and_then(Value::as_u64)
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(default)
}

/// The keys of a ConfigMap (`data` and `binaryData`) or Secret (`data`,
/// base64), as bytes.
fn object_files(object: &Value, secret: bool) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for (field, base64_encoded) in [("data", secret), ("binaryData", true)] {
        for (key, value) in object[field].as_object().into_iter().flatten() {
            let text = value.as_str().unwrap_or_default();
            let bytes = if base64_encoded {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .unwrap_or_default()
            } else {
                text.as_bytes().to_vec()
            };
            files.push((key.clone(), bytes));
        }
    }
    files
}

/// A configMap or secret source (of a volume or a projection): its keys, or
/// its `items`, with modes.
fn keyed(node: &Node, namespace: &str, source: &Value, secret: bool, default_mode: u32) -> Files {
    let (plural, name_field) = if secret {
        ("secrets", "/secretName")
    } else {
        ("configmaps", "/name")
    };
    let name = text(source, name_field);
    let optional = source["optional"] == true;
    let object = match node.get(plural, namespace, name) {
        Some(object) => object,
        None if optional => return Ok(Vec::new()),
        None => {
            let kind = if secret { "secret" } else { "configmap" };
            return Err(format!("{kind} \"{name}\" not found"));
        }
    };
    let files = object_files(&object, secret);
    let Some(items) = source["items"].as_array() else {
        return Ok(files
            .into_iter()
            .map(|(path, content)| Payload {
                path,
                content,
                mode: default_mode,
            })
            .collect());
    };
    let mut payload = Vec::new();
    for item in items {
        let key = text(item, "/key");
        match files.iter().find(|(k, _)| k == key) {
            Some((_, content)) => payload.push(Payload {
                path: text(item, "/path").to_owned(),
                content: content.clone(),
                mode: mode(item.get("mode"), default_mode),
            }),
            None if optional => {}
            None => return Err(format!("configmap references non-existent config key: {key}")),
        }
    }
    Ok(payload)
}

/// `metadata.name`, `metadata.namespace`, `metadata.uid`, labels and
/// annotations by key, `spec.nodeName`, `spec.serviceAccountName`, as the
/// downward API resolves a `fieldRef`.
pub fn field_ref(pod: &Value, path: &str) -> Option<String> {
    for (prefix, field) in [
        ("metadata.labels['", "labels"),
        ("metadata.annotations['", "annotations"),
    ] {
        if let Some(key) = path.strip_prefix(prefix).and_then(|k| k.strip_suffix("']")) {
            return Some(pod["metadata"][field][key].as_str().unwrap_or_default().to_owned());
        }
    }
    let pointer = match path {
        "metadata.name" => "/metadata/name",
        "metadata.namespace" => "/metadata/namespace",
        "metadata.uid" => "/metadata/uid",
        "spec.nodeName" => "/spec/nodeName",
        "spec.serviceAccountName" => "/spec/serviceAccountName",
        "status.podIP" => "/status/podIP",
        "status.hostIP" => "/status/hostIP",
        _ => return None,
    };
    Some(text(pod, pointer).to_owned())
}

/// A projected volume's sources, in order.
fn projected(node: &Node, pod: &Value, tokens: &mut TokenCache, volume: &Value) -> Files {
    let namespace = text(pod, "/metadata/namespace");
    let default_mode = mode(volume["projected"].get("defaultMode"), 0o644);
    let mut payload = Vec::new();
    for source in volume["projected"]["sources"].as_array().into_iter().flatten() {
        if let Some(token) = source.get("serviceAccountToken") {
            let seconds = token["expirationSeconds"].as_u64().unwrap_or(TOKEN_SECONDS);
            payload.push(Payload {
                path: text(token, "/path").to_owned(),
                content: tokens.get(node, pod, seconds)?.into_bytes(),
                mode: default_mode,
            });
        } else if let Some(config_map) = source.get("configMap") {
            payload.extend(keyed(node, namespace, config_map, false, default_mode)?);
        } else if let Some(secret) = source.get("secret") {
            let secret = serde_json::json!({"secretName": secret["name"], "items": secret["items"], "optional": secret["optional"]});
            payload.extend(keyed(node, namespace, &secret, true, default_mode)?);
        } else if let Some(downward) = source.get("downwardAPI") {
            for item in downward["items"].as_array().into_iter().flatten() {
                let path = text(item, "/fieldRef/fieldPath");
                let value = field_ref(pod, path).ok_or_else(|| format!("unsupported fieldRef {path:?}"))?;
                payload.push(Payload {
                    path: text(item, "/path").to_owned(),
                    content: value.into_bytes(),
                    mode: mode(item.get("mode"), default_mode),
                });
            }
        }
    }
    Ok(payload)
}

/// The Pod's bound service-account token, requested again once 80 % of its
/// life is gone (kubelet's token manager's `requiresRefresh`).
#[derive(Debug, Default)]
pub struct TokenCache {
    token: Option<(String, std::time::Instant, std::time::Duration)>,
}

impl TokenCache {
    fn get(&mut self, node: &Node, pod: &Value, seconds: u64) -> Result<String, String> {
        if let Some((token, issued, life)) = &self.token
            && issued.elapsed() < life.mul_f64(0.8)
        {
            return Ok(token.clone());
        }
        let token = node.token_for(pod)?;
        self.token = Some((
            token.clone(),
            std::time::Instant::now(),
            std::time::Duration::from_secs(seconds),
        ));
        Ok(token)
    }
}

/// Prepares every volume of `pod` under `pod_dir`; returns where each is.
pub fn prepare(
    node: &Node,
    pod: &Value,
    pod_dir: &Path,
    tokens: &mut TokenCache,
    stamp: &str,
) -> Result<HashMap<String, PathBuf>, String> {
    let namespace = text(pod, "/metadata/namespace");
    let fs_group = pod
        .pointer("/spec/securityContext/fsGroup")
        .and_then(Value::as_u64)
        .and_then(|g| u32::try_from(g).ok());
    let mut paths = HashMap::new();
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let name = text(volume, "/name");
        let failed = |e: String| format!("MountVolume.SetUp failed for volume \"{name}\" : {e}");
        let path = if let Some(empty) = volume.get("emptyDir") {
            volumes::empty_dir(pod_dir, name, fs_group, empty["medium"] == "Memory").map_err(failed)?
        } else if let Some(host) = volume.get("hostPath") {
            volumes::host_path(&node.root, text(host, "/path"), text(host, "/type")).map_err(failed)?
        } else {
            let (plugin, files) = if let Some(source) = volume.get("configMap") {
                let default_mode = mode(source.get("defaultMode"), 0o644);
                ("configmap", keyed(node, namespace, source, false, default_mode))
            } else if let Some(source) = volume.get("secret") {
                let default_mode = mode(source.get("defaultMode"), 0o644);
                ("secret", keyed(node, namespace, source, true, default_mode))
            } else if volume.get("projected").is_some() {
                ("projected", projected(node, pod, tokens, volume))
            } else {
                return Err(failed("the test kubelet does not mount this volume type".to_owned()));
            };
            let dir = pod_dir.join(format!("volumes/kubernetes.io~{plugin}")).join(name);
            volumes::atomic_write(&dir, &files.map_err(failed)?, fs_group, stamp).map_err(failed)?;
            dir
        };
        paths.insert(name.to_owned(), path);
    }
    Ok(paths)
}
