//! `meta.k8s.io/v1` Tables, as kube-apiserver returns them to kubectl: a NAME
//! column, then the CRD's additionalPrinterColumns (or AGE for built-ins).

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

pub fn table(rt: &ResourceType, version: &str, objects: &[Value], resource_version: u64) -> Value {
    let columns = columns(rt, version);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            let format = if c.name == "Name" { "name" } else { "" };
            json!({"name": c.name, "type": c.type_, "format": format, "description": c.description, "priority": c.priority})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let cells: Vec<Value> = columns.iter().map(|c| cell(c, object)).collect();
            json!({
                "cells": cells,
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
