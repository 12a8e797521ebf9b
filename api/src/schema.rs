//! What a kind's CRD schema (the one kube-apiserver holds) says about a
//! document: the fields it has, so that unknown and misspelt fields are found
//! as the API server's strict field validation finds them, and the type each
//! field takes, so that a value of the wrong type is reported in Kubernetes'
//! words rather than a decoder's.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::Value;

use crate::admission::Kind;
use crate::field::FieldPath;

/// `metadata` as kube-apiserver knows it (`ObjectMeta`): the CRD schema says
/// only `type: object` there, and the server checks it itself.
const OBJECT_META_FIELDS: [&str; 15] = [
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// The storage version's `openAPIV3Schema` of each kind, built once from the types.
fn schemas() -> &'static HashMap<Kind, Value> {
    static SCHEMAS: OnceLock<HashMap<Kind, Value>> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let Ok(crds) = crate::crd::all() else {
            return HashMap::new();
        };
        crds.into_iter()
            .filter_map(|(_, crd)| {
                let kind = Kind::from_name(&crd.spec.names.kind)?;
                let version = crd
                    .spec
                    .versions
                    .into_iter()
                    .find(|v| v.name == crate::crd::STORAGE_VERSION)?;
                let schema = serde_json::to_value(version.schema?.open_api_v3_schema?).ok()?;
                Some((kind, schema))
            })
            .collect()
    })
}

/// The schema of `kind`'s object root.
pub fn root(kind: Kind) -> Option<&'static Value> {
    schemas().get(&kind)
}

/// A field the schema does not have, and the one it is one edit away from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownField {
    pub path: FieldPath,
    pub suggestion: Option<FieldPath>,
}

/// Every field of `object` that `kind`'s schema does not have, in document order.
pub fn unknown_fields(kind: Kind, object: &Value) -> Vec<UnknownField> {
    let mut found = Vec::new();
    let (Some(schema), Some(members)) = (root(kind), object.as_object()) else {
        return found;
    };
    let properties = schema.get("properties").and_then(Value::as_object);
    for (name, value) in members {
        let path = FieldPath::new(name);
        if name == "metadata" {
            for field in value.as_object().into_iter().flat_map(|m| m.keys()) {
                if !OBJECT_META_FIELDS.contains(&field.as_str()) {
                    found.push(UnknownField {
                        path: path.child(field),
                        suggestion: one_edit_away(field, OBJECT_META_FIELDS.iter().copied()).map(|s| path.child(s)),
                    });
                }
            }
            continue;
        }
        match properties.and_then(|p| p.get(name)) {
            Some(child) => walk(child, value, &path, &mut found),
            None => found.push(UnknownField {
                suggestion: properties
                    .and_then(|p| one_edit_away(name, p.keys().map(String::as_str)))
                    .map(FieldPath::new),
                path,
            }),
        }
    }
    found
}

fn walk(schema: &Value, value: &Value, path: &FieldPath, found: &mut Vec<UnknownField>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(members) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, child) in members {
                    match properties.get(name) {
                        Some(child_schema) => walk(child_schema, child, &path.child(name), found),
                        None => found.push(UnknownField {
                            path: path.child(name),
                            suggestion: one_edit_away(name, properties.keys().map(String::as_str))
                                .map(|s| path.child(s)),
                        }),
                    }
                }
            } else if let Some(values) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                for (key, child) in members {
                    walk(values, child, &path.key(key), found);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &path.index(i), found);
                }
            }
        }
        _ => {}
    }
}

/// The one of `candidates` that `name` is one edit away from (an insertion,
/// deletion, substitution, swap of neighbours, or a difference of case only).
pub fn one_edit_away<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .find(|candidate| *candidate != name && within_one_edit(name, candidate))
}

fn within_one_edit(a: &str, b: &str) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (rest_a, rest_b) = (a.len() - prefix - suffix, b.len() - prefix - suffix);
    match (rest_a, rest_b) {
        (0, 1) | (1, 0) | (1, 1) => true,
        (2, 2) => a[prefix] == b[prefix + 1] && a[prefix + 1] == b[prefix],
        _ => false,
    }
}

/// One step into a document, as a decoder reports where it failed.
#[derive(Clone, Copy, Debug)]
pub enum Step<'a> {
    Member(&'a str),
    Item,
}

/// The schema of the field reached from `schema` by `steps`.
pub fn descend<'a>(schema: &'a Value, steps: &[Step<'_>]) -> Option<&'a Value> {
    steps.iter().try_fold(schema, |schema, step| match step {
        Step::Member(name) => schema
            .get("properties")
            .and_then(|p| p.get(*name))
            .or_else(|| schema.get("additionalProperties").filter(|s| s.is_object())),
        Step::Item => schema.get("items"),
    })
}

/// What a field of `schema` accepts, said as Kubernetes says it, for a
/// `value` it does not accept.
pub fn expectation(schema: &Value, value: &Value) -> String {
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let format = schema.get("format").and_then(Value::as_str);
    let beyond_int32 = value
        .as_f64()
        .is_some_and(|n| n.fract() == 0.0 && (n > f64::from(i32::MAX) || n < f64::from(i32::MIN)));
    if int_or_string {
        return if beyond_int32 {
            format!(
                "must be at most {} (an int32), or a percentage such as \"25%\"",
                i32::MAX
            )
        } else {
            "must be an integer, or a string such as \"25%\"".to_owned()
        };
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("integer") if format == Some("int32") && beyond_int32 => {
            format!("must be an integer from {} to {} (an int32)", i32::MIN, i32::MAX)
        }
        Some("integer") => "must be an integer".to_owned(),
        Some("number") => "must be a number".to_owned(),
        Some("string") if format == Some("date-time") => {
            "must be a date and time in RFC 3339 form, such as \"2026-01-02T15:04:05Z\"".to_owned()
        }
        Some("string") => "must be a string".to_owned(),
        Some("boolean") => "must be true or false".to_owned(),
        Some("array") => "must be a list".to_owned(),
        Some("object") => "must be a mapping of fields".to_owned(),
        _ => "has the wrong type".to_owned(),
    }
}

/// A value as an error message shows it: scalars as written, lists and
/// mappings by their type (as kube-apiserver does), so a message stays short.
pub fn shown(value: &Value) -> Value {
    match value {
        Value::Array(_) => Value::String("array".to_owned()),
        Value::Object(_) => Value::String("object".to_owned()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_edit_is_an_insertion_deletion_substitution_swap_or_case() {
        for (a, b) in [
            ("paralelism", "parallelism"),
            ("name", "names"),
            ("imagePulPolicy", "imagePullPolicy"),
            ("imgae", "image"),
            ("Selector", "selector"),
            ("selectr", "selector"),
        ] {
            assert!(within_one_edit(a, b), "{a} {b}");
        }
        for (a, b) in [("parallel", "parallelism"), ("abc", "cab"), ("spec", "status")] {
            assert!(!within_one_edit(a, b), "{a} {b}");
        }
    }

    #[test]
    fn every_kind_has_its_schema() {
        for kind in Kind::ALL {
            let schema = root(kind).unwrap_or_else(|| unreachable!("{kind:?} has no schema"));
            assert!(schema.pointer("/properties/spec/properties").is_some(), "{kind:?}");
        }
    }
}
