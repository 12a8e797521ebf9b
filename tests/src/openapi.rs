//! `/openapi/v3`: one document per group version, as kube-apiserver publishes
//! them, and `/openapi/v2`, all of them in one Swagger 2.0 document (JSON only). Each resource's write operations carry its group-version-kind and the
//! `fieldValidation` query parameter, which is how kubectl learns that the
//! server validates fields itself, so `kubectl apply` needs no client-side
//! schema. Custom resources' schemas are their CRD's; the built-in
//! kinds' come from their k8s-openapi types (`builtin::schema`), so `kubectl
//! explain` knows both. A PATCH operation lists the patch types it accepts:
//! strategic merge for built-in kinds only, whose list properties carry the
//! `x-kubernetes-patch-*` extensions of `strategic`, so `kubectl apply`
//! computes its patches from this server's documents as from a cluster's.

use serde_json::{Map, Value, json};

use crate::resources::ResourceType;

/// `api/v1`, `apis/apps.kruise.io/v1beta1`: the documents' paths under /openapi/v3.
fn group_versions(types: &[ResourceType]) -> Vec<String> {
    let mut paths: Vec<String> = types
        .iter()
        .flat_map(|rt| {
            rt.versions.iter().map(|v| {
                if rt.group.is_empty() {
                    format!("api/{}", v.name)
                } else {
                    format!("apis/{}/{}", rt.group, v.name)
                }
            })
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The patch content types a PATCH accepts: strategic merge for built-in
/// kinds only, as kube-apiserver (custom resources get 415 for it).
fn patch_types(strategic: bool) -> Value {
    let mut types = vec![
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ];
    if strategic {
        types.push("application/strategic-merge-patch+json");
    }
    let content: Map<String, Value> = types
        .into_iter()
        .map(|t| (t.to_owned(), json!({"schema": {"type": "object"}})))
        .collect();
    json!({"content": content})
}

/// Marks the list properties of the built-in schema `definition` that merge
/// by key or as a set.
fn add_patch_extensions(definition: &str, schema: &mut Value) {
    let Some(properties) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for (name, property) in properties.iter_mut() {
        if let (Some(extensions), Some(property)) = (
            crate::strategic::patch_extensions(definition, name),
            property.as_object_mut(),
        ) {
            property.extend(extensions);
        }
    }
}

/// The discovery document at `/openapi/v3`.
pub fn root(types: &[ResourceType], resource_version: u64) -> Value {
    let paths: Map<String, Value> = group_versions(types)
        .into_iter()
        .map(|gv| {
            let url = format!("/openapi/v3/{gv}?hash={resource_version}");
            (gv, json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// The document of one group version (`api/v1`, `apis/g/v`), or `None`.
pub fn document(types: &[ResourceType], group_version: &str) -> Option<Value> {
    let (group, version) = match group_version.split('/').collect::<Vec<_>>().as_slice() {
        ["api", version] => (String::new(), (*version).to_owned()),
        ["apis", group, version] => ((*group).to_owned(), (*version).to_owned()),
        _ => return None,
    };
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for rt in types.iter().filter(|t| t.group == group && t.serves(&version)) {
        let gvk = json!({"group": rt.group, "version": version, "kind": rt.kind});
        let field_validation =
            json!([{"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}}]);
        let operation = |action: &str| {
            json!({"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": action, "parameters": field_validation,
                   "responses": {"200": {"description": "OK"}}})
        };
        let prefix = if rt.group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{}/{version}", rt.group)
        };
        let collection = if rt.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
        } else {
            format!("{prefix}/{}", rt.plural)
        };
        let builtin = (!rt.from_crd)
            .then(|| crate::builtin::schema(&rt.group, &rt.kind))
            .flatten();
        let mut patch = operation("patch");
        patch["requestBody"] = patch_types(builtin.is_some());
        paths.insert(collection.clone(), json!({"post": operation("post")}));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({"put": operation("put"), "patch": patch}),
        );
        let mut schema = match builtin {
            Some((mut root, mut components)) => {
                let root_name = format!("{}.{}", rt.group, rt.kind);
                add_patch_extensions(&root_name, &mut root);
                for (name, component) in &mut components {
                    add_patch_extensions(name, component);
                }
                schemas.extend(components);
                root
            }
            None => rt
                .version(&version)
                .and_then(|v| v.schema.clone())
                .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})),
        };
        schema["x-kubernetes-group-version-kind"] = json!([gvk]);
        let id = format!(
            "{}.{version}.{}",
            if rt.group.is_empty() { "core" } else { &rt.group },
            rt.kind
        );
        schemas.insert(id, schema);
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// Whether an Accept header takes JSON (absent or `*/*` does).
pub fn accepts_json(accept: &str) -> bool {
    accept.is_empty()
        || accept.split(',').any(|part| {
            let media = part.split(';').next().unwrap_or_default().trim();
            matches!(media, "application/json" | "application/*" | "*/*")
        })
}

/// The Swagger 2.0 document at `/openapi/v2`: every group version's paths and
/// schemas, with v3's forms turned into v2's as kube-apiserver turns them
/// (`#/definitions/` references, no `nullable` or `anyOf`/`oneOf`/`not`, the
/// accepted patch types as `consumes`).
pub fn v2(types: &[ResourceType]) -> Value {
    let mut paths = Map::new();
    let mut definitions = Map::new();
    for group_version in group_versions(types) {
        let Some(mut document) = document(types, &group_version) else {
            continue;
        };
        if let Some(Value::Object(schemas)) = document.pointer_mut("/components/schemas").map(Value::take) {
            definitions.extend(schemas.into_iter().map(|(name, schema)| (name, to_v2(schema))));
        }
        let Some(Value::Object(document_paths)) = document.get_mut("paths").map(Value::take) else {
            continue;
        };
        for (path, mut operations) in document_paths {
            if let Some(operations) = operations.as_object_mut() {
                for operation in operations.values_mut().filter_map(Value::as_object_mut) {
                    operation_to_v2(operation);
                }
            }
            paths.insert(path, operations);
        }
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "definitions": definitions,
    })
}

fn operation_to_v2(operation: &mut Map<String, Value>) {
    if let Some(body) = operation.remove("requestBody") {
        let types: Vec<Value> = body["content"]
            .as_object()
            .map(|content| content.keys().map(|k| json!(k)).collect())
            .unwrap_or_default();
        operation.insert("consumes".to_owned(), Value::Array(types));
    }
    if let Some(Value::Array(parameters)) = operation.get_mut("parameters") {
        for parameter in parameters.iter_mut().filter_map(Value::as_object_mut) {
            if let Some(Value::Object(schema)) = parameter.remove("schema") {
                parameter.extend(schema);
            }
        }
    }
}

fn to_v2(schema: Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !matches!(k.as_str(), "nullable" | "anyOf" | "oneOf" | "not"))
                .map(|(k, v)| match (k.as_str(), v) {
                    ("$ref", Value::String(target)) => {
                        let target = target.replace("#/components/schemas/", "#/definitions/");
                        (k, Value::String(target))
                    }
                    (_, v) => (k, to_v2(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(to_v2).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_is_json_only() {
        for accept in ["", "application/json", "application/json, */*", "*/*;q=0.8"] {
            assert!(accepts_json(accept), "{accept}");
        }
        // What client-go sends for /openapi/v2: answered 406, as by a server without it.
        assert!(!accepts_json(
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
        ));
    }
}
