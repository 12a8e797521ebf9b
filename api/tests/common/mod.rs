//! Helpers shared by the api crate's integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use json_patch::{Patch, PatchOperation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::admission::Kind;
use prewarm_api::field::{Reason, Report};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

pub fn kind_of(object: &Value) -> Option<Kind> {
    Kind::from_type_meta(object["apiVersion"].as_str()?, object["kind"].as_str()?)
}

pub fn now() -> Time {
    Time("2026-11-25T10:00:00Z".parse().unwrap())
}

/// Applies `operations` to a copy of `object`.
pub fn apply(object: &Value, operations: Vec<PatchOperation>) -> Value {
    let mut patched = object.clone();
    json_patch::patch(&mut patched, &Patch(operations)).expect("defaults must apply");
    patched
}

/// The object after defaulting, as the mutating webhook would leave it.
pub fn defaulted(kind: Kind, object: &Value) -> Value {
    kind.with_defaults(object, &now())
}

/// `(path, reason)` of every error, in the reported order.
pub fn error_keys(report: &Report) -> Vec<(String, Reason)> {
    report.errors.iter().map(|e| (e.path.to_string(), e.reason)).collect()
}

/// Values a field might hold in the wild: absent-like, wrong-typed, partial objects.
pub fn field_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        Just(json!("")),
        Just(json!("Never")),
        Just(json!("Always")),
        any::<i32>().prop_map(Value::from),
        Just(json!([])),
        Just(json!(true)),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop::collection::btree_map(
            prop_oneof![
                Just("type".to_owned()),
                Just("timeoutSeconds".to_owned()),
                Just("backoffLimit".to_owned()),
                Just("ttlSecondsAfterFinished".to_owned()),
                "[a-z]{1,6}",
            ],
            inner,
            0..4,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect()))
    })
}

pub fn tag() -> impl Strategy<Value = Value> {
    (
        prop::option::of(field_value()),
        prop::option::of(field_value()),
        prop::option::of("[a-z0-9.]{1,8}"),
    )
        .prop_map(|(created_at, pull_policy, tag)| {
            let mut object = Map::new();
            object.insert("tag".into(), json!(tag.unwrap_or_default()));
            if let Some(v) = created_at {
                object.insert("createdAt".into(), v);
            }
            if let Some(v) = pull_policy {
                object.insert("pullPolicy".into(), v);
            }
            object.insert("x-unknown".into(), json!(1));
            Value::Object(object)
        })
}

pub fn node_image_spec() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop_oneof![
            Just("nginx".to_owned()),
            Just("myregistry:5000/team/app".to_owned()),
            Just("a~b".to_owned()),
            "[a-z]{1,5}"
        ],
        prop::collection::vec(tag(), 0..3).prop_map(|tags| json!({"tags": tags})),
        0..4,
    )
    .prop_map(|images| json!({"images": images}))
}

/// The schema of `kind`'s spec.
pub fn spec_schema(kind: Kind) -> &'static Value {
    &prewarm_api::schema::root(kind).expect("every kind has a schema")["properties"]["spec"]
}

/// Values of the shape `schema` describes, derived from it so that a field
/// added to the API is generated without anyone listing it: any subset of an
/// object's properties (and an unknown one at times), values that fit, and
/// now and then a value of another type, a number beyond i32, a float, or a
/// string with escapes.
pub fn from_schema(schema: &Value) -> BoxedStrategy<Value> {
    let fitting = fitting(schema);
    prop_oneof![8 => fitting, 1 => field_value(), 1 => odd_value()].boxed()
}

fn odd_value() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(json!(1.5)),
        Just(json!(i64::from(i32::MAX) + 1)),
        Just(json!(-1)),
        Just(json!("a\u{e9}\"\\\u{1}")),
        Just(json!("25%")),
    ]
    .boxed()
}

fn fitting(schema: &Value) -> BoxedStrategy<Value> {
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return prop_oneof![any::<i32>().prop_map(Value::from), Just(json!("50%")), Just(json!("x"))].boxed();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => {
            let properties: Vec<(String, BoxedStrategy<Option<Value>>)> = schema
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(name, property)| (name.clone(), prop::option::of(from_schema(property)).boxed()))
                .collect();
            let additional = schema
                .get("additionalProperties")
                .filter(|a| a.is_object())
                .map(|values| prop::collection::btree_map("[a-z/~:.0-9]{1,8}", from_schema(values), 0..3).boxed());
            let names: Vec<String> = properties.iter().map(|(name, _)| name.clone()).collect();
            let values: Vec<BoxedStrategy<Option<Value>>> = properties.into_iter().map(|(_, v)| v).collect();
            let unknown = prop::option::weighted(0.1, from_leaf());
            (
                values,
                unknown,
                additional.unwrap_or_else(|| Just(Default::default()).boxed()),
            )
                .prop_map(move |(values, unknown, extra)| {
                    let mut object: Map<String, Value> = names
                        .iter()
                        .zip(values)
                        .filter_map(|(name, value)| value.map(|v| (name.clone(), v)))
                        .collect();
                    object.extend(extra);
                    if let Some(value) = unknown {
                        object.insert("futureField".to_owned(), value);
                    }
                    Value::Object(object)
                })
                .boxed()
        }
        Some("array") => {
            let items = schema.get("items").cloned().unwrap_or(Value::Null);
            prop::collection::vec(from_schema(&items), 0..3)
                .prop_map(Value::Array)
                .boxed()
        }
        Some("integer") => prop_oneof![0i64..700, any::<i32>().prop_map(i64::from)]
            .prop_map(Value::from)
            .boxed(),
        Some("boolean") => any::<bool>().prop_map(Value::from).boxed(),
        Some("string") => match schema.get("enum").and_then(Value::as_array) {
            Some(values) => prop::sample::select(values.clone()).boxed(),
            None => prop_oneof![
                Just(json!("")),
                Just(json!("nginx:1.25")),
                Just(json!("Always")),
                "[a-z0-9:./-]{0,10}".prop_map(Value::from),
            ]
            .boxed(),
        },
        _ => from_leaf(),
    }
}

fn from_leaf() -> BoxedStrategy<Value> {
    prop_oneof![Just(Value::Null), Just(json!("")), any::<i32>().prop_map(Value::from)].boxed()
}
