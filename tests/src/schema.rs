//! Structural-schema pruning and defaulting of custom resources, which
//! kube-apiserver does while decoding, before admission. The pruned fields are
//! the "unknown fields" that `fieldValidation` reports.

use serde_json::{Map, Value};

use crate::resources::ResourceType;

const ROOT_FIELDS: [&str; 3] = ["apiVersion", "kind", "metadata"];

/// Prunes and defaults `object`; returns the paths of the fields pruned
/// (`.spec.imagePullPolicyy`).
pub fn prune_and_default(rt: &ResourceType, version: &str, object: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if !rt.from_crd {
        return unknown;
    }
    let Some(schema) = rt.version(version).and_then(|v| v.schema.as_ref()) else {
        return unknown;
    };
    let Some(map) = object.as_object_mut() else {
        return unknown;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    if schema.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true)) {
        map.retain(|key, _| {
            let known = ROOT_FIELDS.contains(&key.as_str()) || properties.is_some_and(|p| p.contains_key(key));
            if !known {
                unknown.push(format!(".{key}"));
            }
            known
        });
    }
    drop_non_nullable_nulls(map, |key| {
        properties
            .filter(|_| !ROOT_FIELDS.contains(&key))
            .and_then(|p| p.get(key))
    });
    for (key, value) in map.iter_mut() {
        if let Some(property) = properties.and_then(|p| p.get(key))
            && !ROOT_FIELDS.contains(&key.as_str())
        {
            prune(value, property, &format!(".{key}"), &mut unknown);
        }
    }
    add_defaults(map, properties);
    unknown
}

/// apiextensions' `PruneNonNullableNullsWithoutDefaults` and `Default`: a
/// `null` where the schema is not `nullable` is dropped, then defaulted like
/// an absent field (null array items are left for validation to refuse).
fn drop_non_nullable_nulls<'s>(map: &mut Map<String, Value>, schema_of: impl Fn(&str) -> Option<&'s Value>) {
    map.retain(|key, value| {
        !value.is_null() || schema_of(key).is_none_or(|schema| schema.get("nullable") == Some(&Value::Bool(true)))
    });
}

fn add_defaults(map: &mut Map<String, Value>, properties: Option<&Map<String, Value>>) {
    for (key, property) in properties.into_iter().flatten() {
        if !map.contains_key(key)
            && let Some(default) = property.get("default")
        {
            let mut default = default.clone();
            prune(&mut default, property, "", &mut Vec::new());
            map.insert(key.clone(), default);
        }
    }
}

fn prune(value: &mut Value, schema: &Value, path: &str, unknown: &mut Vec<String>) {
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return;
    }
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            drop_non_nullable_nulls(map, |key| additional.or_else(|| properties.and_then(|p| p.get(key))));
            if let Some(additional) = additional {
                for (key, item) in map.iter_mut() {
                    prune(item, additional, &format!("{path}.{key}"), unknown);
                }
                return;
            }
            if !preserve {
                map.retain(|key, _| {
                    let known = properties.is_some_and(|p| p.contains_key(key));
                    if !known {
                        unknown.push(format!("{path}.{key}"));
                    }
                    known
                });
            }
            for (key, item) in map.iter_mut() {
                if let Some(property) = properties.and_then(|p| p.get(key)) {
                    prune(item, property, &format!("{path}.{key}"), unknown);
                }
            }
            add_defaults(map, properties);
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item, item_schema, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}
