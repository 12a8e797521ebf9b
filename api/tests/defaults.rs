//! Defaulting only adds what is absent: applying it twice changes nothing,
//! fields unknown to the types survive, and present values are never replaced.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::*;
use json_patch::PatchOperation;
use prewarm_api::admission::Kind;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Every leaf present before (other than null and "") keeps its value.
fn assert_only_added(before: &Value, after: &Value, path: &str) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (key, value) in b {
                let child = a.get(key).unwrap_or_else(|| panic!("{path}/{key} was removed"));
                assert_only_added(value, child, &format!("{path}/{key}"));
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            assert_eq!(b.len(), a.len(), "{path} changed length");
            for (i, (value, child)) in b.iter().zip(a).enumerate() {
                assert_only_added(value, child, &format!("{path}/{i}"));
            }
        }
        (Value::Null, _) => {}
        (Value::String(s), _) if s.is_empty() => {}
        (b, a) => assert_eq!(b, a, "{path} was replaced"),
    }
}

fn check_kind(kind: Kind, spec: Value) {
    let object =
        json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": kind.name(), "metadata": {"name": "x"}, "spec": spec});
    let operations = kind.defaults(&object, &now());
    assert!(
        operations.iter().all(|op| matches!(op, PatchOperation::Add(_))),
        "{operations:?}"
    );
    let defaulted = apply(&object, operations);
    assert_only_added(&object, &defaulted, "");
    assert!(
        kind.defaults(&defaulted, &now()).is_empty(),
        "not idempotent: {defaulted}"
    );
    assert_eq!(
        kind.defaults(&object, &now()),
        kind.defaults(&object, &now()),
        "not deterministic"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn image_pull_job_defaulting_is_additive_and_idempotent(spec in from_schema(spec_schema(Kind::ImagePullJob))) {
        check_kind(Kind::ImagePullJob, spec);
    }

    #[test]
    fn image_list_pull_job_defaulting_is_additive_and_idempotent(
        spec in from_schema(spec_schema(Kind::ImageListPullJob)),
    ) {
        check_kind(Kind::ImageListPullJob, spec);
    }

    #[test]
    fn node_image_defaulting_is_additive_and_idempotent(spec in node_image_spec()) {
        check_kind(Kind::NodeImage, spec);
    }
}

#[test]
fn a_job_without_defaults_gets_exactly_the_documented_ones() {
    let object = json!({"spec": {"image": "nginx", "x-kept": {"a": 1}, "pullPolicy": {"timeoutSeconds": 30}}});
    let operations = serde_json::to_value(Kind::ImagePullJob.defaults(&object, &now())).unwrap();
    assert_eq!(
        operations,
        json!([
            {"op": "add", "path": "/spec/completionPolicy", "value": {"type": "Always"}},
            {"op": "add", "path": "/spec/imagePullPolicy", "value": "IfNotPresent"},
            {"op": "add", "path": "/spec/pullPolicy/backoffLimit", "value": 3},
        ])
    );
    let defaulted = defaulted(Kind::ImagePullJob, &object);
    assert_eq!(defaulted["spec"]["x-kept"], json!({"a": 1}));
}

#[test]
fn node_image_keys_with_slashes_are_escaped_in_pointers() {
    let object = json!({"spec": {"images": {"myregistry:5000/team/app": {"tags": [{"tag": "v1", "createdAt": "2020-01-01T00:00:00Z"}]}}}});
    let operations = serde_json::to_value(Kind::NodeImage.defaults(&object, &now())).unwrap();
    assert_eq!(
        operations,
        json!([{"op": "add", "path": "/spec/images/myregistry:5000~1team~1app/tags/0/pullPolicy", "value": {"backoffLimit": 3, "timeoutSeconds": 600}}])
    );
}

/// The default templates are small serialised structs: every path they add
/// must be a field of the kind's schema (a misspelt name would be a bogus
/// patch the API server prunes), and the values must read back through the
/// typed spec.
#[test]
fn every_default_is_a_field_of_the_schema_and_reads_back_typed() {
    let meta = |kind: &str| json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": kind, "metadata": {"name": "x"}});
    let mut job = meta("ImagePullJob");
    job["spec"] = json!({"image": "nginx"});
    let mut list = meta("ImageListPullJob");
    list["spec"] = json!({"images": ["nginx"]});
    let mut node_image = meta("NodeImage");
    node_image["spec"] = json!({"images": {"nginx": {"tags": [{"tag": "1"}]}}});
    for (kind, object) in [
        (Kind::ImagePullJob, &job),
        (Kind::ImageListPullJob, &list),
        (Kind::NodeImage, &node_image),
    ] {
        let defaulted = defaulted(kind, object);
        assert_ne!(&defaulted, object, "{kind}: nothing defaulted");
        assert_eq!(
            prewarm_api::schema::unknown_fields(kind, &defaulted),
            [],
            "{kind}: {defaulted:#}"
        );
    }
    let job: prewarm_api::v1beta1::ImagePullJob = serde_json::from_value(defaulted(Kind::ImagePullJob, &job)).unwrap();
    let pull = job.spec.pull_policy.unwrap();
    assert_eq!((pull.timeout_seconds, pull.backoff_limit), (Some(600), Some(3)));
    assert_eq!(job.spec.completion_policy.unwrap().type_.as_deref(), Some("Always"));
    assert_eq!(job.spec.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let node_image: prewarm_api::v1beta1::NodeImage =
        serde_json::from_value(defaulted(Kind::NodeImage, &node_image)).unwrap();
    let tag = &node_image.spec.images.unwrap()["nginx"].tags[0];
    assert!(tag.created_at.is_some());
    let pull = tag.pull_policy.clone().unwrap();
    assert_eq!((pull.timeout_seconds, pull.backoff_limit), (Some(600), Some(3)));
}
