//! The hand-written envelope reader against an oracle: the same body parsed
//! into a `serde_json::Value` and read with the documented leniency (a member
//! of the wrong JSON type counts as absent, the last of repeated keys wins).
//! Bodies are generated as text, so that keys repeat, are written with
//! `\u` escapes, and values have every type where the reader expects one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use prewarm_webhook::envelope::{Envelope, Object};
use proptest::prelude::*;
use serde_json::Value;

/// A JSON value as text is generated: objects keep key order and repeats.
#[derive(Clone, Debug)]
enum Json {
    Null,
    Bool(bool),
    Number(i64),
    Text(String),
    Array(Vec<Json>),
    Object(Vec<(Key, Json)>),
}

/// An object key, possibly written with its first character `\u`-escaped.
#[derive(Clone, Debug)]
struct Key {
    name: String,
    escaped: bool,
}

impl Json {
    fn write(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Self::Number(n) => out.push_str(&n.to_string()),
            Self::Text(s) => out.push_str(&serde_json::to_string(s).unwrap()),
            Self::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Self::Object(members) => {
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&key.written());
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

impl Key {
    fn written(&self) -> String {
        let mut chars = self.name.chars();
        match (self.escaped, chars.next()) {
            (true, Some(first)) => {
                let rest: String = chars.collect();
                let rest = serde_json::to_string(&rest).unwrap();
                format!("\"\\u{:04x}{}", u32::from(first), &rest[1..])
            }
            _ => serde_json::to_string(&self.name).unwrap(),
        }
    }
}

fn scalar() -> BoxedStrategy<Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::Number),
        prop_oneof![
            Just("UPDATE".to_owned()),
            Just("status".to_owned()),
            Just("a\"b\\c\u{e9}".to_owned()),
            "[a-z]{0,6}",
        ]
        .prop_map(Json::Text),
    ]
    .boxed()
}

/// Any value, a few levels deep.
fn any_json() -> BoxedStrategy<Json> {
    scalar()
        .prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
                prop::collection::vec((key(&["a", "b"]), inner), 0..4).prop_map(Json::Object),
            ]
        })
        .boxed()
}

fn key(names: &'static [&'static str]) -> impl Strategy<Value = Key> {
    (prop::sample::select(names), prop::bool::weighted(0.2)).prop_map(|(name, escaped)| Key {
        name: name.to_owned(),
        escaped,
    })
}

/// An object whose members are mostly `names`, repeated at times, with
/// values from `value` or of any other type.
fn object_of(names: &'static [&'static str], value: BoxedStrategy<Json>) -> BoxedStrategy<Json> {
    let member = (key(names), prop_oneof![3 => value, 1 => any_json()]);
    prop::collection::vec(member, 0..8).prop_map(Json::Object).boxed()
}

fn user_info() -> BoxedStrategy<Json> {
    let node_names = prop::collection::vec(prop_oneof![4 => "[a-z]{1,5}".prop_map(Json::Text), 1 => scalar()], 0..3)
        .prop_map(Json::Array)
        .boxed();
    let extra = object_of(&["authentication.kubernetes.io/node-name", "other"], node_names);
    object_of(&["username", "extra", "groups"], prop_oneof![scalar(), extra].boxed())
}

fn admitted_object() -> BoxedStrategy<Json> {
    let metadata = object_of(&["name", "labels"], scalar());
    object_of(
        &["kind", "metadata", "spec", "status"],
        prop_oneof![scalar(), metadata, any_json()].boxed(),
    )
}

fn body() -> BoxedStrategy<Json> {
    let gvk = object_of(&["group", "version", "kind"], scalar());
    let request = object_of(
        &[
            "uid",
            "name",
            "namespace",
            "operation",
            "subResource",
            "dryRun",
            "kind",
            "object",
            "oldObject",
            "userInfo",
        ],
        prop_oneof![scalar(), gvk, admitted_object(), user_info()].boxed(),
    );
    object_of(
        &["apiVersion", "kind", "request"],
        prop_oneof![scalar(), request].boxed(),
    )
}

/// What the oracle reads: the members the reader keeps, by the documented rules.
fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

fn object_view(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "absent".to_owned(),
        Some(Value::Object(map)) => {
            let name = text(
                map.get("metadata")
                    .and_then(|m| m.as_object())
                    .and_then(|m| m.get("name")),
            );
            format!(
                "kind={:?} name={name:?} spec={:?} status={:?}",
                text(map.get("kind")),
                map.get("spec"),
                map.get("status")
            )
        }
        Some(_) => "not an object".to_owned(),
    }
}

fn reader_object_view(object: &Object<'_>) -> String {
    match object {
        Object::Absent => "absent".to_owned(),
        Object::NotAnObject => "not an object".to_owned(),
        Object::Fields(fields) => {
            let raw = |raw: Option<&serde_json::value::RawValue>| {
                raw.map(|r| serde_json::from_str::<Value>(r.get()).unwrap())
            };
            format!(
                "kind={:?} name={:?} spec={:?} status={:?}",
                fields.kind.as_deref().map(str::to_owned),
                fields.name.as_deref().map(str::to_owned),
                raw(fields.spec).as_ref(),
                raw(fields.status).as_ref()
            )
        }
    }
}

fn oracle(body: &Value) -> Vec<String> {
    let request = body.get("request").and_then(Value::as_object);
    let mut seen = vec![
        format!("apiVersion={:?}", text(body.get("apiVersion"))),
        format!("kind={:?}", text(body.get("kind"))),
        format!("request={}", request.is_some()),
    ];
    let Some(request) = request else {
        return seen;
    };
    for member in ["uid", "name", "namespace", "operation", "subResource"] {
        seen.push(format!("{member}={:?}", text(request.get(member))));
    }
    seen.push(format!("dryRun={:?}", request.get("dryRun").and_then(Value::as_bool)));
    let gvk = request.get("kind").and_then(Value::as_object);
    seen.push(format!(
        "gvk={:?}",
        gvk.map(|g| (text(g.get("group")), text(g.get("version")), text(g.get("kind"))))
    ));
    seen.push(format!("object={}", object_view(request.get("object"))));
    seen.push(format!("oldObject={}", object_view(request.get("oldObject"))));
    let user = request.get("userInfo").and_then(Value::as_object);
    let node_names = |user: &serde_json::Map<String, Value>| -> Option<Vec<String>> {
        let values = user
            .get("extra")?
            .as_object()?
            .get("authentication.kubernetes.io/node-name")?;
        serde_json::from_value(values.clone()).ok()
    };
    seen.push(format!(
        "userInfo={:?}",
        user.map(|u| (text(u.get("username")), node_names(u)))
    ));
    seen
}

fn read(envelope: &Envelope<'_>) -> Vec<String> {
    let owned = |value: &Option<std::borrow::Cow<'_, str>>| value.as_deref().map(str::to_owned);
    let mut seen = vec![
        format!("apiVersion={:?}", owned(&envelope.api_version)),
        format!("kind={:?}", owned(&envelope.kind)),
        format!("request={}", envelope.request.is_some()),
    ];
    let Some(request) = &envelope.request else {
        return seen;
    };
    for (member, value) in [
        ("uid", &request.uid),
        ("name", &request.name),
        ("namespace", &request.namespace),
        ("operation", &request.operation),
        ("subResource", &request.sub_resource),
    ] {
        seen.push(format!("{member}={:?}", owned(value)));
    }
    seen.push(format!("dryRun={:?}", request.dry_run));
    seen.push(format!(
        "gvk={:?}",
        request
            .kind
            .as_ref()
            .map(|g| (owned(&g.group), owned(&g.version), owned(&g.kind)))
    ));
    seen.push(format!("object={}", reader_object_view(&request.object)));
    seen.push(format!("oldObject={}", reader_object_view(&request.old_object)));
    seen.push(format!(
        "userInfo={:?}",
        request
            .user_info
            .as_ref()
            .map(|u| (owned(&u.username), u.node_names.clone()))
    ));
    seen
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn the_reader_agrees_with_the_oracle(generated in body()) {
        let mut text = String::new();
        generated.write(&mut text);
        let tree: Value = serde_json::from_str(&text).unwrap();
        let envelope = Envelope::parse(text.as_bytes()).unwrap();
        prop_assert_eq!(read(&envelope), oracle(&tree), "{}", text);
    }
}

/// A spec nested beyond what a tree may hold (serde_json's 128 levels) is
/// kept as text, without recursion, for the rules to refuse by name; the
/// oracle's tree cannot hold it at all.
#[test]
fn a_deeply_nested_spec_is_kept_as_text() {
    let depth = 100_000;
    let spec = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let deep = format!("{{\"request\": {{\"object\": {{\"spec\": {spec}}}}}}}");
    assert!(serde_json::from_str::<Value>(&deep).is_err());
    let envelope = Envelope::parse(deep.as_bytes()).unwrap();
    let request = envelope.request.unwrap();
    let Object::Fields(object) = &request.object else {
        panic!("the object was not read");
    };
    assert_eq!(object.spec.unwrap().get(), spec);
}
