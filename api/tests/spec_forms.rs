//! A spec read from its JSON text (the webhook) and the same spec read from a
//! parsed tree (the offline validator) get the same defaults and the same
//! report, whatever the spec holds and however its text is spelled.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::*;
use prewarm_api::admission::Kind;
use prewarm_api::spec::Spec;
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Spellings of one spec: compact, indented, and with a member written twice
/// (a tree keeps the last one).
fn spellings(spec: &Value) -> Vec<String> {
    let compact = serde_json::to_string(spec).unwrap();
    let mut texts = vec![serde_json::to_string_pretty(spec).unwrap()];
    if let Some(first) = spec.as_object().and_then(|members| members.keys().next()) {
        let key = serde_json::to_string(first).unwrap();
        texts.push(format!("{{{key}: {{\"shadowed\": [1]}}, {}", &compact[1..]));
    }
    texts.push(compact);
    texts
}

fn check_forms(kind: Kind, spec: &Value, old: &Value) {
    let old_text = serde_json::to_string(old).unwrap();
    let old_raw = RawValue::from_string(old_text).unwrap();
    for text in spellings(spec) {
        let raw = RawValue::from_string(text.clone()).unwrap();
        let tree: Value = serde_json::from_str(&text).unwrap();
        let (as_text, as_tree) = (Spec::Text(Some(&raw)), Spec::Tree(Some(&tree)));
        assert_eq!(
            kind.spec_defaults(as_text, &now()),
            kind.spec_defaults(as_tree, &now()),
            "defaults of {text}"
        );
        assert_eq!(
            kind.validate_spec(as_text, None),
            kind.validate_spec(as_tree, None),
            "report on {text}"
        );
        assert_eq!(
            kind.validate_spec(as_text, Some(Spec::Text(Some(&old_raw)))),
            kind.validate_spec(as_tree, Some(Spec::Tree(Some(old)))),
            "report on an update to {text}"
        );
        assert!(as_text.same_as(as_tree) && as_tree.same_as(as_text), "{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn node_image_specs_read_alike(spec in node_image_spec()) {
        check_forms(Kind::NodeImage, &spec, &Value::Null);
    }

    /// Specs derived from each kind's schema: every field, including ones
    /// added later, with values that fit and values that do not.
    #[test]
    fn image_pull_job_specs_from_the_schema_read_alike(
        spec in from_schema(spec_schema(Kind::ImagePullJob)),
        old in from_schema(spec_schema(Kind::ImagePullJob)),
    ) {
        check_forms(Kind::ImagePullJob, &spec, &old);
    }

    #[test]
    fn image_list_pull_job_specs_from_the_schema_read_alike(
        spec in from_schema(spec_schema(Kind::ImageListPullJob)),
        old in from_schema(spec_schema(Kind::ImageListPullJob)),
    ) {
        check_forms(Kind::ImageListPullJob, &spec, &old);
    }

    #[test]
    fn node_image_specs_from_the_schema_read_alike(spec in from_schema(spec_schema(Kind::NodeImage))) {
        check_forms(Kind::NodeImage, &spec, &Value::Null);
    }

    #[test]
    fn specs_of_any_json_shape_read_alike(spec in field_value()) {
        for kind in Kind::ALL {
            check_forms(kind, &spec, &spec);
        }
    }
}

#[test]
fn absent_and_null_specs_read_alike() {
    let null = RawValue::from_string("null".to_owned()).unwrap();
    for kind in Kind::ALL {
        for (text, tree) in [
            (Spec::Text(None), Spec::Tree(None)),
            (Spec::Text(Some(&null)), Spec::Tree(Some(&Value::Null))),
        ] {
            assert_eq!(kind.spec_defaults(text, &now()), kind.spec_defaults(tree, &now()));
            assert_eq!(
                kind.validate_spec(text, None),
                kind.validate_spec(tree, None),
                "{kind} {text:?}"
            );
        }
    }
}

#[test]
fn a_spec_too_deep_to_read_is_one_error_at_spec() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let raw = RawValue::from_string(deep).unwrap();
    for kind in Kind::ALL {
        let report = kind.validate_spec(Spec::Text(Some(&raw)), None);
        assert_eq!(report.errors.len(), 1, "{report:?}");
        assert_eq!(report.errors[0].path.as_str(), "spec");
        assert!(report.errors[0].detail.contains("recursion limit"), "{report:?}");
        assert!(kind.spec_defaults(Spec::Text(Some(&raw)), &now()).is_empty());
    }
}

#[test]
fn pull_secret_changes_read_alike() {
    let variants = [
        json!(null),
        json!([]),
        json!(["a"]),
        json!(["a", "b"]),
        json!(["b", "a"]),
        json!("a"),
        json!([1]),
    ];
    for new in &variants {
        for old in &variants {
            let with = |secrets: &Value| json!({"image": "nginx:1.25", "completionPolicy": {"type": "Always"}, "pullSecrets": secrets});
            check_forms(Kind::ImagePullJob, &with(new), &with(old));
            let (spec, old_spec) = (with(new), with(old));
            let report = Kind::ImagePullJob.validate_spec(Spec::Tree(Some(&spec)), Some(Spec::Tree(Some(&old_spec))));
            let immutable = report.errors.iter().any(|e| e.detail == "field is immutable");
            let empty = |v: &Value| v.is_null() || v == &json!([]);
            let same = new == old || (empty(new) && empty(old));
            let decodes = new.is_null() || new.as_array().is_some_and(|a| a.iter().all(Value::is_string));
            assert_eq!(immutable, decodes && !same, "{new} after {old}: {report:?}");
        }
    }
}

/// The schema-derived generator reaches every property of every kind's spec
/// (selector, podSelector, sandboxConfig…), so a field added to the API is
/// in the comparisons above without anyone listing it.
#[test]
fn the_schema_generator_reaches_every_spec_property() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for kind in Kind::ALL {
        let schema = spec_schema(kind);
        let wanted: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        let strategy = from_schema(schema);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..300 {
            let value = strategy.new_tree(&mut runner).unwrap().current();
            seen.extend(value.as_object().into_iter().flat_map(|o| o.keys().cloned()));
        }
        for name in wanted {
            assert!(seen.contains(name), "{kind}: spec.{name} never generated");
        }
    }
}
