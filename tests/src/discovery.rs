//! The paths that name no resource: health, version, discovery (`/api`,
//! `/apis/…`), the OpenAPI documents, and the test controls under `/testapi`.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::http::{AppState, json_response};
use crate::resources::ResourceType;

/// The answer for a non-resource path, or `None` for a resource path.
pub(crate) fn non_resource(
    state: &AppState,
    method: &Method,
    segments: &[&str],
    query: &HashMap<String, String>,
    accept: &str,
) -> Option<Result<Response, ApiError>> {
    let answer = match segments {
        ["healthz"] | ["readyz"] | ["livez"] => Ok("ok".into_response()),
        // The API surface of Kubernetes 1.37, the kubectl the tests install, so
        // kubectl prints no version-skew warning.
        ["version"] => {
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "major": "1", "minor": "37", "gitVersion": "v1.37.0-prewarm-testapi", "gitCommit": "", "gitTreeState": "clean",
                    "buildDate": "2026-11-25T00:00:00Z", "goVersion": "", "compiler": "rustc", "platform": "linux/amd64",
                }),
            ))
        }
        // kubectl and client-go ask for v2 in protobuf only (gnostic), which
        // is not served: 406 tells them so, as a server without v2 would, and
        // they use v3 or their compiled-in types. JSON clients get the document.
        ["openapi", "v2"] => {
            if crate::openapi::accepts_json(accept) {
                Ok(json_response(StatusCode::OK, &crate::openapi::v2(&state.store.types())))
            } else {
                Err(ApiError::not_acceptable(format!(
                    "/openapi/v2 is served as JSON only, not as {accept:?}; /openapi/v3 has the same schemas"
                )))
            }
        }
        ["openapi", "v3"] => {
            let root = crate::openapi::root(&state.store.types(), state.store.resource_version());
            Ok(json_response(StatusCode::OK, &root))
        }
        ["openapi", "v3", rest @ ..] => {
            crate::openapi::document(&state.store.types(), &rest.join("/"))
                .map(|document| json_response(StatusCode::OK, &document))
                .ok_or_else(|| ApiError::not_found("openapi", "", &rest.join("/")))
        }
        ["api"] => {
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            ))
        }
        ["apis"] => Ok(json_response(StatusCode::OK, &group_list(&state.store.types()))),
        ["api", "v1"] => {
            Ok(json_response(
                StatusCode::OK,
                &resource_list(&state.store.types(), "", "v1"),
            ))
        }
        ["apis", group] => {
            group_list(&state.store.types())["groups"]
                .as_array()
                .and_then(|groups| groups.iter().find(|g| g["name"] == *group).cloned())
                .map(|g| json_response(StatusCode::OK, &json!({"kind": "APIGroup", "apiVersion": "v1", "name": g["name"], "versions": g["versions"], "preferredVersion": g["preferredVersion"]})))
                .ok_or_else(|| ApiError::not_found("groups", "", group))
        }
        ["apis", group, version] => {
            let list = resource_list(&state.store.types(), group, version);
            if list["resources"].as_array().is_some_and(|r| !r.is_empty()) {
                Ok(json_response(StatusCode::OK, &list))
            } else {
                Err(ApiError::not_found("groupversions", group, version))
            }
        }
        ["testapi", "counts"] => {
            if method == Method::DELETE {
                state.store.reset_counts();
            }
            Ok(json_response(StatusCode::OK, &json!(state.store.counts())))
        }
        ["testapi", "faults"] => {
            let count = query.get("writes").and_then(|v| v.parse().ok()).unwrap_or(0);
            let code = query.get("code").and_then(|v| v.parse().ok()).unwrap_or(500);
            state.store.inject_write_faults(count, code);
            if let Some(ms) = query.get("latencyMs").and_then(|v| v.parse().ok()) {
                state.store.inject_latency(Duration::from_millis(ms));
            }
            if query.contains_key("dropWatches") {
                state.store.drop_watches();
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => return None,
    };
    Some(answer)
}

fn group_list(types: &[ResourceType]) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for rt in types.iter().filter(|t| !t.group.is_empty()) {
        let versions: Vec<String> = rt.versions.iter().map(|v| v.name.clone()).collect();
        match groups.iter_mut().find(|(g, _)| *g == rt.group) {
            Some((_, existing)) => {
                for v in versions {
                    if !existing.contains(&v) {
                        existing.push(v);
                    }
                }
            }
            None => groups.push((rt.group.clone(), versions)),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, versions)| {
            let entries: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
                .collect();
            json!({"name": group, "versions": entries, "preferredVersion": entries.first()})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Value {
    let verbs = [
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    ];
    let mut resources = Vec::new();
    for rt in types.iter().filter(|t| t.group == group && t.serves(version)) {
        resources.push(json!({
            "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced, "kind": rt.kind,
            "verbs": verbs, "shortNames": rt.short_names, "categories": rt.categories,
        }));
        if rt.status_subresource {
            resources.push(json!({"name": format!("{}/status", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": rt.kind, "verbs": ["get", "patch", "update"]}));
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}
