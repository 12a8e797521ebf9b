//! JSON merge patches (RFC 7386) computed from two states, so that a write
//! carries only what changed.

use serde_json::{Map, Value};

/// The merge patch that turns `old` into `new`, or `None` when they are equal.
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, value) in new {
                let change = match old.get(key) {
                    Some(before) => merge_diff(before, value),
                    None => Some(value.clone()),
                };
                if let Some(change) = change {
                    patch.insert(key.clone(), change);
                }
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Some(Value::Object(patch))
        }
        _ => Some(new.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn applying_the_diff_gives_the_new_value() {
        let cases = [
            (
                json!({"a": 1, "b": {"c": 2, "d": 3}}),
                json!({"a": 1, "b": {"c": 2, "e": [1]}}),
            ),
            (json!({"images": {"nginx": {"tags": [1, 2]}}}), json!({"images": {}})),
            (json!({}), json!({"x": {"y": null}})),
            (json!([1]), json!({"a": 1})),
        ];
        for (old, new) in cases {
            let mut patched = old.clone();
            if let Some(patch) = merge_diff(&old, &new) {
                json_patch_merge(&mut patched, &patch);
            }
            let expected = strip_nulls(new.clone());
            assert_eq!(patched, expected, "{old} → {new}");
        }
        assert_eq!(merge_diff(&json!({"a": 1}), &json!({"a": 1})), None);
        assert_eq!(
            merge_diff(&json!({"a": 1, "b": 2}), &json!({"a": 1})),
            Some(json!({"b": null}))
        );
    }

    /// RFC 7386 merge, as the API server applies it.
    fn json_patch_merge(target: &mut Value, patch: &Value) {
        match patch {
            Value::Object(fields) => {
                if !target.is_object() {
                    *target = json!({});
                }
                if let Value::Object(map) = target {
                    for (key, value) in fields {
                        if value.is_null() {
                            map.remove(key);
                        } else {
                            json_patch_merge(map.entry(key.clone()).or_insert(Value::Null), value);
                        }
                    }
                }
            }
            other => *target = other.clone(),
        }
    }

    fn strip_nulls(value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, strip_nulls(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}
