//! Strategic merge patch, as kube-apiserver applies it to built-in kinds (what
//! `kubectl apply` and `kubectl patch` send for them): lists of objects merge
//! element by element on their merge key (`webhooks` by `name`, `containers` by
//! `name`, `conditions` by `type`, …), `finalizers` merge as a set, other lists
//! are replaced, and the directives `$patch` (replace, delete, merge),
//! `$setElementOrder/<list>`, `$retainKeys` and `$deleteFromPrimitiveList/<list>`
//! are honoured and never stored. The merge keys are those of the built-in
//! types this server stores (their `patchMergeKey` / `patchStrategy` tags).

use serde_json::{Map, Value};

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

/// How a list field merges.
#[derive(Debug, PartialEq, Eq)]
enum Strategy {
    /// Objects matched on this key.
    MergeKey(&'static str),
    /// Scalars merged as a set, in order.
    Set,
    Replace,
}

/// The strategy of the list at `path` (`.spec.template.spec.containers[].ports`).
fn strategy(path: &str) -> Strategy {
    let field = path.rsplit('.').next().unwrap_or_default();
    let in_container = path
        .strip_suffix(".ports")
        .is_some_and(|parent| parent.ends_with("containers[]") || parent.ends_with("Containers[]"));
    field_strategy(field, in_container)
}

/// The `x-kubernetes-patch-*` extensions of the list `property` of the
/// built-in schema `definition` (`io.k8s.api.core.v1.Container`), as
/// kube-apiserver publishes them in its OpenAPI documents: kubectl computes
/// the strategic merge patches it sends from them, so they match what `apply`
/// here does with those patches.
pub fn patch_extensions(definition: &str, property: &str) -> Option<Map<String, Value>> {
    let in_container = definition.ends_with(".Container") || definition.ends_with(".EphemeralContainer");
    let mut extensions = Map::new();
    match field_strategy(property, in_container) {
        Strategy::MergeKey(key) => {
            extensions.insert("x-kubernetes-patch-merge-key".to_owned(), Value::from(key));
        }
        Strategy::Set => {}
        Strategy::Replace => return None,
    }
    extensions.insert("x-kubernetes-patch-strategy".to_owned(), Value::from("merge"));
    Some(extensions)
}

fn field_strategy(field: &str, in_container: bool) -> Strategy {
    match field {
        "webhooks"
        | "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => Strategy::MergeKey("name"),
        "ports" if in_container => Strategy::MergeKey("containerPort"),
        "ports" => Strategy::MergeKey("port"),
        "volumeMounts" => Strategy::MergeKey("mountPath"),
        "volumeDevices" => Strategy::MergeKey("devicePath"),
        "conditions" => Strategy::MergeKey("type"),
        "ownerReferences" => Strategy::MergeKey("uid"),
        "topologySpreadConstraints" => Strategy::MergeKey("topologyKey"),
        "hostAliases" => Strategy::MergeKey("ip"),
        "finalizers" => Strategy::Set,
        _ => Strategy::Replace,
    }
}

/// Applies `patch` to `current`; an error names what in the patch is wrong.
pub fn apply(current: &mut Value, patch: &Value) -> Result<(), String> {
    let Value::Object(patch) = patch else {
        return Err("a strategic merge patch must be a JSON object".to_owned());
    };
    if !current.is_object() {
        *current = Value::Object(Map::new());
    }
    if let Value::Object(map) = current
        && merge_map(map, patch, "")?
    {
        *current = Value::Object(Map::new());
    }
    Ok(())
}

/// Merges `patch` into `original`; `Ok(true)` when the patch deletes the map.
fn merge_map(original: &mut Map<String, Value>, patch: &Map<String, Value>, path: &str) -> Result<bool, String> {
    match patch.get(PATCH).map(|d| d.as_str()) {
        None | Some(Some("merge")) => {}
        Some(Some("replace")) => {
            *original = strip(patch);
            return Ok(false);
        }
        Some(Some("delete")) => return Ok(true),
        Some(other) => {
            return Err(format!(
                "{path}: unknown $patch directive {other:?}: use replace, delete or merge"
            ));
        }
    }
    let mut orders = Vec::new();
    for (key, value) in patch {
        if key == PATCH || key == RETAIN_KEYS {
            continue;
        }
        if let Some(list) = key.strip_prefix(SET_ORDER) {
            orders.push((list, value));
            continue;
        }
        if let Some(list) = key.strip_prefix(DELETE_FROM) {
            let remove = value.as_array().ok_or_else(|| format!("{path}.{key} must be a list"))?;
            if let Some(Value::Array(items)) = original.get_mut(list) {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        let child = format!("{path}.{key}");
        match value {
            Value::Null => {
                original.remove(key);
            }
            Value::Object(inner) => match original.get_mut(key) {
                Some(Value::Object(existing)) => {
                    if merge_map(existing, inner, &child)? {
                        original.remove(key);
                    }
                }
                _ if inner.get(PATCH).and_then(Value::as_str) == Some("delete") => {
                    original.remove(key);
                }
                _ => {
                    original.insert(key.clone(), Value::Object(strip(inner)));
                }
            },
            Value::Array(items) => {
                let merged = merge_list(original.remove(key), items, &child)?;
                original.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                original.insert(key.clone(), scalar.clone());
            }
        }
    }
    for (list, order) in orders {
        if let (Some(Value::Array(items)), Some(order)) = (original.get_mut(list), order.as_array()) {
            reorder(items, order, &strategy(&format!("{path}.{list}")));
        }
    }
    if let Some(keep) = patch.get(RETAIN_KEYS) {
        let keep = keep
            .as_array()
            .ok_or_else(|| format!("{path}.$retainKeys must be a list"))?;
        original.retain(|k, _| keep.iter().any(|kept| kept.as_str() == Some(k)));
    }
    Ok(false)
}

fn merge_list(original: Option<Value>, patch: &[Value], path: &str) -> Result<Vec<Value>, String> {
    let replace_all = patch.iter().any(|item| {
        item.get(PATCH).and_then(Value::as_str) == Some("replace") && item.as_object().is_some_and(|o| o.len() == 1)
    });
    let original = match original {
        Some(Value::Array(items)) if !replace_all => items,
        _ => Vec::new(),
    };
    let patch: Vec<&Value> = patch
        .iter()
        .filter(|item| !(item.get(PATCH).is_some() && item.as_object().is_some_and(|o| o.len() == 1)))
        .collect();
    match strategy(path) {
        Strategy::Replace => Ok(patch.into_iter().map(strip_value).collect()),
        Strategy::Set => {
            let mut merged = original;
            for item in patch {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            Ok(merged)
        }
        Strategy::MergeKey(key) => {
            let mut merged = original;
            for item in patch {
                let Value::Object(fields) = item else {
                    return Err(format!("{path}: elements must be objects with a {key:?} key"));
                };
                let id = fields
                    .get(key)
                    .ok_or_else(|| format!("{path}: an element has no merge key {key:?}"))?;
                let found = merged.iter().position(|m| m.get(key) == Some(id));
                let deleting = fields.get(PATCH).and_then(Value::as_str) == Some("delete");
                match (found, deleting) {
                    (Some(at), true) => {
                        merged.remove(at);
                    }
                    (None, true) => {}
                    (Some(at), false) => {
                        if let Some(Value::Object(existing)) = merged.get_mut(at)
                            && merge_map(existing, fields, &format!("{path}[]"))?
                        {
                            merged.remove(at);
                        }
                    }
                    (None, false) => merged.push(Value::Object(strip(fields))),
                }
            }
            Ok(merged)
        }
    }
}

/// Puts `items` in the order `order` gives (by merge key, or by value), the
/// ones it does not name after them, as they were.
fn reorder(items: &mut Vec<Value>, order: &[Value], strategy: &Strategy) {
    let identity = |item: &Value| -> Value {
        match strategy {
            Strategy::MergeKey(key) => item.get(*key).cloned().unwrap_or(Value::Null),
            _ => item.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(&identity).collect();
    let mut rest = std::mem::take(items);
    for id in &wanted {
        if let Some(at) = rest.iter().position(|item| identity(item) == *id) {
            items.push(rest.remove(at));
        }
    }
    items.append(&mut rest);
}

/// A patch map without its directives, as it is stored when nothing was there.
fn strip(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), strip_value(v)))
        .collect()
}

fn strip_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(strip(map)),
        Value::Array(items) => Value::Array(items.iter().map(strip_value).collect()),
        other => other.clone(),
    }
}

/// The first field name in `value` that starts with `$` (a patch directive
/// that must never be stored), as a path.
pub fn directive_key(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            let child = format!("{path}.{k}");
            if k.starts_with('$') {
                Some(child)
            } else {
                directive_key(v, &child)
            }
        }),
        Value::Array(items) => items.iter().find_map(|v| directive_key(v, &format!("{path}[]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(current: Value, patch: Value) -> Value {
        let mut current = current;
        apply(&mut current, &patch).unwrap_or_else(|e| panic!("{e}"));
        current
    }

    #[test]
    fn kubectl_reapplying_a_webhook_configuration_keeps_its_rules() {
        let stored = json!({"webhooks": [
            {"name": "a", "clientConfig": {"caBundle": "old", "service": {"name": "s"}}, "rules": [{"operations": ["CREATE"]}]},
            {"name": "b", "clientConfig": {"caBundle": "old"}, "rules": [{"operations": ["UPDATE"]}]},
        ]});
        // What kubectl apply sends when only the caBundles changed.
        let patch = json!({"$setElementOrder/webhooks": [{"name": "a"}, {"name": "b"}],
            "webhooks": [{"name": "a", "clientConfig": {"caBundle": "new"}}, {"name": "b", "clientConfig": {"caBundle": "new"}}]});
        let result = patched(stored, patch);
        assert_eq!(result["webhooks"][0]["rules"], json!([{"operations": ["CREATE"]}]));
        assert_eq!(
            result["webhooks"][0]["clientConfig"],
            json!({"caBundle": "new", "service": {"name": "s"}})
        );
        assert_eq!(result["webhooks"][1]["name"], "b");
        assert_eq!(directive_key(&result, ""), None);
    }

    #[test]
    fn directives() {
        let stored = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}},
            "spec": {"containers": [{"name": "c1", "image": "i1", "ports": [{"containerPort": 80, "name": "http"}]}, {"name": "c2", "image": "i2"}],
                     "tolerations": [{"key": "k"}]}});
        let patch = json!({
            "metadata": {"finalizers": ["c", "a"], "labels": {"$patch": "replace", "z": "3"}, "$deleteFromPrimitiveList/finalizers": ["b"]},
            "spec": {"containers": [{"name": "c2", "$patch": "delete"}, {"name": "c1", "ports": [{"containerPort": 81}]}, {"name": "c3", "image": "i3"}],
                     "tolerations": [{"key": "other"}],
                     "$setElementOrder/containers": [{"name": "c3"}, {"name": "c1"}]},
        });
        let result = patched(stored, patch);
        assert_eq!(result["metadata"]["finalizers"], json!(["a", "c"]));
        assert_eq!(result["metadata"]["labels"], json!({"z": "3"}));
        let names: Vec<&str> = result["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["c3", "c1"]);
        assert_eq!(
            result["spec"]["containers"][1]["ports"].as_array().unwrap().len(),
            2,
            "ports merge on containerPort"
        );
        assert_eq!(
            result["spec"]["tolerations"],
            json!([{"key": "other"}]),
            "lists without a merge key are replaced"
        );
        let retained = patched(
            json!({"spec": {"a": 1, "b": 2}}),
            json!({"spec": {"$retainKeys": ["b"], "b": 3}}),
        );
        assert_eq!(retained, json!({"spec": {"b": 3}}));
        assert!(apply(&mut json!({}), &json!({"$patch": "explode"})).is_err());
        assert_eq!(
            directive_key(&json!({"a": [{"$x": 1}]}), ""),
            Some(".a[].$x".to_owned())
        );
    }
}
