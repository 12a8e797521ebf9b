//! Comparing an update with the stored object in place: a stored NodeImage is
//! a tree of thousands of values, too many to clone for a comparison.

use serde_json::{Map, Value};

/// Whether `a` and `b` are equal in every top-level field but `ignored`.
fn equal_except(a: &Value, b: &Value, ignored: &[&str]) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let kept = |map: &'_ Map<String, Value>| map.iter().filter(|(k, _)| !ignored.contains(&k.as_str())).count();
    kept(a) == kept(b)
        && a.iter()
            .filter(|(k, _)| !ignored.contains(&k.as_str()))
            .all(|(k, v)| b.get(k) == Some(v))
}

/// Everything but metadata and status is equal: what `generation` tracks.
pub(super) fn same_spec(a: &Value, b: &Value) -> bool {
    equal_except(a, b, &["metadata", "status", "apiVersion", "kind"])
}

/// Equal but for the resourceVersion: a write that changes nothing.
pub(super) fn same_but_resource_version(a: &Value, b: &Value) -> bool {
    equal_except(a, b, &["metadata"])
        && equal_except(
            a.get("metadata").unwrap_or(&Value::Null),
            b.get("metadata").unwrap_or(&Value::Null),
            &["resourceVersion"],
        )
}
