//! `GET …/pods/NAME/log`: a container's output as kube-apiserver returns it
//! from the kubelet of the Pod's node (plain text; `container` needed when
//! the Pod has more than one; `previous=true` for the instance before;
//! `tailLines`), read here from the node's CRI log files.

use std::collections::HashMap;

use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::ApiError;
use crate::http::AppState;

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

pub(crate) fn get(
    state: &AppState,
    identity: &crate::rbac::Identity,
    method: &Method,
    namespace: &str,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    if method != Method::GET {
        return Err(ApiError::method_not_allowed("pods/log takes GET"));
    }
    let attributes = crate::rbac::Attributes {
        verb: "get".to_owned(),
        resource: "pods".to_owned(),
        subresource: Some("log".to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        ..crate::rbac::Attributes::default()
    };
    if !state.authorize(identity, &attributes) {
        return Err(crate::rbac::denial(identity, &attributes));
    }
    let pods = state
        .store
        .resource_type("", "v1", "pods")
        .ok_or_else(|| ApiError::not_found("pods", "", name))?;
    let pod = state.store.get(&pods, namespace, name)?;
    let containers: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| text(c, "/name"))
        .collect();
    let container = match (query.get("container"), containers.as_slice()) {
        (Some(container), _) => container.as_str(),
        (None, [only]) => only,
        (None, _) => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let Some(status) = pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == container))
    else {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    };
    let restarts = status["restartCount"].as_u64().unwrap_or(0);
    let previous = query.get("previous").is_some_and(|p| p == "true");
    let instance = match (previous, restarts) {
        (true, 0) => {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        (true, n) => n - 1,
        (false, n) => n,
    };
    let node = text(&pod, "/spec/nodeName");
    let root = state
        .node_roots
        .read()
        .ok()
        .and_then(|roots| roots.get(node).cloned())
        .ok_or_else(|| ApiError::bad_request(format!("no kubelet serves node {node:?}")))?;
    let log = crate::kubelet::read_log(&root, &pod, container, u32::try_from(instance).unwrap_or(u32::MAX));
    let log = match query.get("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        Some(tail) => {
            let lines: Vec<&str> = log.lines().collect();
            let kept = &lines[lines.len().saturating_sub(tail)..];
            kept.iter().map(|l| format!("{l}\n")).collect()
        }
        None => log,
    };
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], log).into_response())
}
