//! Every typed field of every kind, given a value of the wrong type: the error
//! names the field, shows the value and says what the field accepts, with no
//! decoder or Rust type name in it. The fields come from the CRD schema, so a
//! field added to the types is covered without anyone listing it here.

#![allow(clippy::unwrap_used, clippy::panic)]

use prewarm_api::admission::Kind;
use prewarm_api::field::Reason;
use prewarm_api::schema;
use serde_json::{Value, json};

/// Words only a decoder says: serde's phrasing and Rust type names.
const JARGON: [&str; 14] = [
    "invalid type",
    "expected",
    "i32",
    "i64",
    "u32",
    "u64",
    "f64",
    "IntOrString",
    "sequence",
    "struct",
    "Option",
    "String",
    "BTreeMap",
    "Vec<",
];

/// One step to a field: a member of an object, or the first item of a list.
#[derive(Clone, Debug)]
enum Step {
    Member(String),
    Item,
}

/// Every field under `schema` (at `path`), with its schema.
fn fields(schema: &Value, path: &mut Vec<Step>, out: &mut Vec<(Vec<Step>, Value)>) {
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            path.push(Step::Member(name.clone()));
            out.push((path.clone(), child.clone()));
            fields(child, path, out);
            path.pop();
        }
    } else if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        path.push(Step::Member("entry".into()));
        out.push((path.clone(), values.clone()));
        fields(values, path, out);
        path.pop();
    }
    if let Some(items) = schema.get("items") {
        path.push(Step::Item);
        out.push((path.clone(), items.clone()));
        fields(items, path, out);
        path.pop();
    }
}

/// A value that the field's schema does not accept.
fn wrong_value(schema: &Value) -> Value {
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return json!(true);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => json!(5),
        Some("integer") | Some("number") => json!("five"),
        Some("boolean") => json!("yes"),
        Some("array") | Some("object") => json!("x"),
        other => panic!("a schema type the test does not know: {other:?}"),
    }
}

/// `object` with `value` placed at `steps`, making the containers on the way.
fn place(object: &mut Value, steps: &[Step], value: Value) {
    let Some((last, parents)) = steps.split_last() else {
        *object = value;
        return;
    };
    let mut at = object;
    for (i, step) in parents.iter().enumerate() {
        let next_is_item = matches!(steps[i + 1], Step::Item);
        let empty = || if next_is_item { json!([]) } else { json!({}) };
        at = match step {
            Step::Member(name) => {
                let members = at.as_object_mut().unwrap();
                let child = members.entry(name.clone()).or_insert_with(empty);
                if child.is_array() != next_is_item {
                    *child = empty();
                }
                child
            }
            Step::Item => {
                let items = at.as_array_mut().unwrap();
                if items.is_empty() {
                    items.push(empty());
                }
                &mut items[0]
            }
        };
    }
    match last {
        Step::Member(name) => {
            at.as_object_mut().unwrap().insert(name.clone(), value);
        }
        Step::Item => *at = json!([value]),
    }
}

/// The field path the rules print for `steps` (map entries in brackets).
fn field_path(steps: &[Step], schema_root: &Value) -> String {
    let mut path = String::new();
    let mut at = Some(schema_root);
    for step in steps {
        match step {
            Step::Member(name) => {
                let is_entry = at.is_some_and(|s| s.get("properties").is_none());
                if is_entry {
                    path.push_str(&format!("[{name}]"));
                } else {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(name);
                }
                at = at.and_then(|s| {
                    s.get("properties")
                        .and_then(|p| p.get(name))
                        .or_else(|| s.get("additionalProperties"))
                });
            }
            Step::Item => {
                path.push_str("[0]");
                at = at.and_then(|s| s.get("items"));
            }
        }
    }
    path
}

fn base(kind: Kind) -> Value {
    let spec = match kind {
        Kind::ImagePullJob => json!({"image": "nginx:1.9.1"}),
        Kind::ImageListPullJob => json!({"images": ["nginx:1.9.1"]}),
        Kind::AdvancedCronJob => json!({"schedule": "0 2 * * *",
            "template": {"imageListPullJobTemplate": {"spec": {"images": ["nginx:1.9.1"]}}}}),
        Kind::NodeImage => json!({"images": {"entry": {"tags": [{"tag": "1"}]}}}),
    };
    json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": kind.name(), "metadata": {"name": "x", "namespace": "default"}, "spec": spec})
}

#[test]
fn every_typed_field_given_a_wrong_type_is_explained_without_jargon() {
    let mut checked = 0;
    for kind in Kind::ALL {
        let root = schema::root(kind).unwrap();
        let spec_schema = root.pointer("/properties/spec").unwrap();
        let mut all = Vec::new();
        fields(spec_schema, &mut vec![Step::Member("spec".into())], &mut all);
        for (steps, field_schema) in all {
            let value = wrong_value(&field_schema);
            let mut object = base(kind);
            place(&mut object, &steps, value.clone());
            let report = kind.validate(&object, None);
            let expected_path = field_path(&steps, root);
            let error = report
                .errors
                .iter()
                .find(|e| e.path.as_str() == expected_path && e.reason == Reason::TypeInvalid)
                .unwrap_or_else(|| {
                    panic!(
                        "{kind:?} {expected_path} = {value}: no type error there: {:#?}",
                        report.errors
                    )
                });
            let message = error.to_string();
            assert!(
                message.contains(&format!("Invalid value: {}", schema::shown(&value))),
                "{message}"
            );
            assert!(message.contains("must be"), "says what is accepted: {message}");
            for word in JARGON {
                assert!(
                    !message.contains(word),
                    "{kind:?} {expected_path}: {word:?} in {message}"
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 40, "the schema walk found only {checked} fields");
}

#[test]
fn the_walk_places_values_where_the_schema_says() {
    let mut object = json!({"spec": {}});
    place(
        &mut object,
        &[
            Step::Member("spec".into()),
            Step::Member("a".into()),
            Step::Item,
            Step::Member("b".into()),
        ],
        json!(1),
    );
    assert_eq!(object, json!({"spec": {"a": [{"b": 1}]}}));
}
