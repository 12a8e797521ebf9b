//! `meta.k8s.io/v1` Tables, as kube-apiserver returns them to kubectl: a NAME
//! column, then the CRD's additionalPrinterColumns, or for built-in kinds the
//! columns kube-apiserver prints for them (AGE for the others).

use serde_json::{Value, json};

use crate::resources::{Column, ResourceType};

/// `.status.desired` and friends: the simple JSONPath subset CRDs use.
fn json_path<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut node = object;
    for segment in path.trim_start_matches('.').split('.').filter(|s| !s.is_empty()) {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        node = node.get(name)?;
        if let Some(i) = index {
            node = node.get(i)?;
        }
    }
    Some(node)
}

/// "9m49s", "3h2m", "5d": kubectl's human-readable age.
pub fn age(timestamp: &str) -> String {
    let Ok(then) = timestamp.parse::<k8s_openapi::jiff::Timestamp>() else {
        return "<unknown>".to_owned();
    };
    let seconds = (crate::store::unix_now() - then.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 8 * 3600 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s if s < 2 * 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn columns(rt: &ResourceType, version: &str) -> Vec<Column> {
    let mut columns = vec![Column {
        name: "Name".to_owned(),
        type_: "string".to_owned(),
        json_path: ".metadata.name".to_owned(),
        description: "Name must be unique within a namespace.".to_owned(),
        priority: 0,
    }];
    let custom = rt.version(version).map(|v| v.columns.clone()).unwrap_or_default();
    if custom.is_empty() {
        columns.push(Column {
            name: "Age".to_owned(),
            type_: "date".to_owned(),
            json_path: ".metadata.creationTimestamp".to_owned(),
            description: "CreationTimestamp".to_owned(),
            priority: 0,
        });
    } else {
        columns.extend(custom);
    }
    columns
}

fn cell(column: &Column, object: &Value) -> Value {
    match json_path(object, &column.json_path) {
        None | Some(Value::Null) => Value::Null,
        Some(Value::String(s)) if column.type_ == "date" => json!(age(s)),
        Some(value) => value.clone(),
    }
}

/// A built-in kind's column: its name, type, and how a cell is computed.
type Computed = (&'static str, &'static str, fn(&Value) -> Value);

fn text(object: &Value, pointer: &str) -> Value {
    object.pointer(pointer).cloned().unwrap_or(json!("<none>"))
}

fn count(object: &Value, pointers: &[&str]) -> Value {
    let total: usize = pointers
        .iter()
        .filter_map(|p| object.pointer(p))
        .map(|v| {
            v.as_object()
                .map_or_else(|| v.as_array().map_or(0, Vec::len), serde_json::Map::len)
        })
        .sum();
    json!(total)
}

fn age_of(object: &Value, pointer: &str) -> Value {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .map_or(json!("<unknown>"), |t| json!(age(t)))
}

fn created(object: &Value) -> Value {
    age_of(object, "/metadata/creationTimestamp")
}

fn node_status(node: &Value) -> Value {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True");
    json!(if ready { "Ready" } else { "NotReady" })
}

fn node_roles(node: &Value) -> Value {
    let roles: Vec<&str> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    json!(if roles.is_empty() {
        "<none>".to_owned()
    } else {
        roles.join(",")
    })
}

fn pod_ready(pod: &Value) -> Value {
    let statuses = pod.pointer("/status/containerStatuses").and_then(Value::as_array);
    let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    json!(format!("{ready}/{total}"))
}

/// kubectl's STATUS of a Pod, as kube-apiserver's `printPod` computes it: the
/// phase (or `status.reason`), overridden by a container's waiting or
/// terminated reason (`CrashLoopBackOff`, `Error`, `ExitCode:N`), back to
/// Running while one container runs and the Pod is Ready; `Terminating`.
fn pod_status(pod: &Value) -> Value {
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        return json!("Terminating");
    }
    let mut reason = match pod.pointer("/status/reason").and_then(Value::as_str) {
        Some(reason) if !reason.is_empty() => reason.to_owned(),
        _ => pod
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    };
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut running = false;
    for status in statuses.iter().rev() {
        let state = &status["state"];
        if let Some(waiting) = state["waiting"]["reason"].as_str().filter(|r| !r.is_empty()) {
            reason = waiting.to_owned();
        } else if let Some(terminated) = state["terminated"]["reason"].as_str().filter(|r| !r.is_empty()) {
            reason = terminated.to_owned();
        } else if state["terminated"].is_object() {
            reason = match state["terminated"]["signal"].as_i64().filter(|s| *s != 0) {
                Some(signal) => format!("Signal:{signal}"),
                None => format!("ExitCode:{}", state["terminated"]["exitCode"].as_i64().unwrap_or(0)),
            };
        } else if status["ready"] == true && state["running"].is_object() {
            running = true;
        }
    }
    if reason == "Completed" && running {
        let ready = pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        reason = if ready { "Running" } else { "NotReady" }.to_owned();
    }
    json!(reason)
}

fn pod_restarts(pod: &Value) -> Value {
    let restarts: i64 = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["restartCount"].as_i64())
        .sum();
    json!(restarts)
}

fn event_object(event: &Value) -> Value {
    let kind = event
        .pointer("/involvedObject/kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = event
        .pointer("/involvedObject/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    json!(format!("{}/{name}", kind.to_ascii_lowercase()))
}

fn event_last_seen(event: &Value) -> Value {
    ["/lastTimestamp", "/eventTime", "/metadata/creationTimestamp"]
        .iter()
        .find_map(|p| event.pointer(p).and_then(Value::as_str))
        .map_or(json!("<unknown>"), |t| json!(age(t)))
}

fn service_ports(service: &Value) -> Value {
    let ports: Vec<String> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
        .collect();
    json!(if ports.is_empty() {
        "<none>".to_owned()
    } else {
        ports.join(",")
    })
}

fn replicas(object: &Value, ready: &str, wanted: &str) -> Value {
    let number = |p: &str| object.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    json!(format!("{}/{}", number(ready), number(wanted)))
}

/// The columns kube-apiserver prints for the built-in kinds stored here.
fn builtin_columns(rt: &ResourceType) -> Option<Vec<Computed>> {
    let columns: Vec<Computed> = match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") => vec![
            ("Status", "string", |o| text(o, "/status/phase")),
            ("Age", "string", created),
        ],
        ("", "Node") => vec![
            ("Status", "string", node_status),
            ("Roles", "string", node_roles),
            ("Age", "string", created),
            ("Version", "string", |o| text(o, "/status/nodeInfo/kubeletVersion")),
        ],
        ("", "Pod") => vec![
            ("Ready", "string", pod_ready),
            ("Status", "string", pod_status),
            ("Restarts", "string", pod_restarts),
            ("Age", "string", created),
        ],
        ("", "Secret") => vec![
            ("Type", "string", |o| text(o, "/type")),
            ("Data", "string", |o| count(o, &["/data"])),
            ("Age", "string", created),
        ],
        ("", "ConfigMap") => vec![
            ("Data", "string", |o| count(o, &["/data", "/binaryData"])),
            ("Age", "string", created),
        ],
        ("", "ServiceAccount") => vec![
            ("Secrets", "string", |o| count(o, &["/secrets"])),
            ("Age", "string", created),
        ],
        ("", "Event") => vec![
            ("Last Seen", "string", event_last_seen),
            ("Type", "string", |o| text(o, "/type")),
            ("Reason", "string", |o| text(o, "/reason")),
            ("Object", "string", event_object),
            ("Message", "string", |o| text(o, "/message")),
        ],
        ("", "Service") => vec![
            ("Type", "string", |o| {
                o.pointer("/spec/type").cloned().unwrap_or(json!("ClusterIP"))
            }),
            ("Cluster-IP", "string", |o| text(o, "/spec/clusterIP")),
            ("External-IP", "string", |_| json!("<none>")),
            ("Port(s)", "string", service_ports),
            ("Age", "string", created),
        ],
        ("apps", "Deployment") => vec![
            ("Ready", "string", |o| {
                replicas(o, "/status/readyReplicas", "/spec/replicas")
            }),
            ("Up-to-date", "string", |o| {
                json!(
                    o.pointer("/status/updatedReplicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                )
            }),
            ("Available", "string", |o| {
                json!(
                    o.pointer("/status/availableReplicas")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                )
            }),
            ("Age", "string", created),
        ],
        ("coordination.k8s.io", "Lease") => vec![
            ("Holder", "string", |o| text(o, "/spec/holderIdentity")),
            ("Age", "string", created),
        ],
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            vec![("Created At", "date", |o| text(o, "/metadata/creationTimestamp"))]
        }
        _ => return None,
    };
    Some(columns)
}

/// The columns kube-apiserver adds for `-o wide` (priority 1), after the rest.
fn builtin_wide_columns(rt: &ResourceType) -> Vec<Computed> {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Pod") => vec![
            ("IP", "string", |o| text(o, "/status/podIP")),
            ("Node", "string", |o| text(o, "/spec/nodeName")),
            ("Nominated Node", "string", |_| json!("<none>")),
            ("Readiness Gates", "string", |_| json!("<none>")),
        ],
        _ => Vec::new(),
    }
}

/// Events show their name only with `-o wide` (priority 1), after the rest.
fn builtin_table(
    columns: &[Computed],
    wide: &[Computed],
    name_last: bool,
    objects: &[Value],
    resource_version: u64,
) -> Value {
    let name = json!({"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": u8::from(name_last)});
    let definition = |(name, type_, _): &Computed, priority: u8| json!({"name": name, "type": type_, "format": "", "description": "", "priority": priority});
    let mut definitions: Vec<Value> = columns.iter().map(|c| definition(c, 0)).collect();
    let at = if name_last { definitions.len() } else { 0 };
    definitions.insert(at, name);
    definitions.extend(wide.iter().map(|c| definition(c, 1)));
    let cells = |object: &Value| {
        let mut cells: Vec<Value> = columns
            .iter()
            .chain(wide)
            .map(|(_, _, compute)| compute(object))
            .collect();
        cells.insert(at, object.pointer("/metadata/name").cloned().unwrap_or(Value::Null));
        cells
    };
    assemble(definitions, objects, cells, resource_version)
}

pub fn table(rt: &ResourceType, version: &str, objects: &[Value], resource_version: u64) -> Value {
    if !rt.from_crd
        && let Some(columns) = builtin_columns(rt)
    {
        return builtin_table(
            &columns,
            &builtin_wide_columns(rt),
            rt.kind == "Event",
            objects,
            resource_version,
        );
    }
    let columns = columns(rt, version);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            let format = if c.name == "Name" { "name" } else { "" };
            json!({"name": c.name, "type": c.type_, "format": format, "description": c.description, "priority": c.priority})
        })
        .collect();
    let cells = |object: &Value| columns.iter().map(|c| cell(c, object)).collect();
    assemble(definitions, objects, cells, resource_version)
}

fn assemble(
    definitions: Vec<Value>,
    objects: &[Value],
    cells: impl Fn(&Value) -> Vec<Value>,
    resource_version: u64,
) -> Value {
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            json!({
                "cells": cells(object),
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object.get("metadata").cloned().unwrap_or(json!({}))},
            })
        })
        .collect();
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}
