//! A property test over generated request bodies: no input makes the handler
//! panic, and whenever the body carries a readable request uid, the answer is
//! an HTTP 200 AdmissionReview that echoes it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::gates::FeatureGates;
use prewarm_webhook::review::{Route, review};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A field of a known name, or something else entirely.
fn one_of(values: Vec<Value>) -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        3 => prop::sample::select(values).prop_map(Some),
        1 => any_json().prop_map(Some),
        1 => Just(None),
    ]
}

/// Plausible objects of our kinds with fields of any shape.
fn object() -> impl Strategy<Value = Option<Value>> {
    let spec_keys = [
        "image",
        "images",
        "selector",
        "podSelector",
        "parallelism",
        "pullPolicy",
        "completionPolicy",
        "imagePullPolicy",
        "pullSecrets",
    ];
    let spec = prop::collection::vec(prop::option::of(any_json()), spec_keys.len()).prop_map(move |values| {
        let spec: Map<String, Value> = spec_keys
            .iter()
            .zip(values)
            .filter_map(|(k, v)| v.map(|v| ((*k).to_owned(), v)))
            .collect();
        Value::Object(spec)
    });
    let kind = prop::sample::select(vec!["ImagePullJob", "ImageListPullJob", "NodeImage", "Pod"]);
    prop_oneof![
        3 => (kind, spec).prop_map(|(kind, spec)| Some(json!({"apiVersion": "apps.kruise.io/v1beta1", "kind": kind, "metadata": {"name": "x"}, "spec": spec}))),
        1 => any_json().prop_map(Some),
        1 => Just(None),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let gvk = |kind: &str| json!({"group": "apps.kruise.io", "version": "v1beta1", "kind": kind});
    let request = (
        one_of(vec![json!("uid-1"), json!(""), json!(7)]),
        one_of(
            ["CREATE", "UPDATE", "DELETE", "CONNECT", "PATCH"]
                .map(Value::from)
                .to_vec(),
        ),
        one_of(vec![
            gvk("ImagePullJob"),
            gvk("ImageListPullJob"),
            gvk("NodeImage"),
            json!("ImagePullJob"),
        ]),
        one_of(vec![json!("status"), json!("")]),
        object(),
        object(),
        one_of(vec![json!(true), json!(false)]),
    )
        .prop_map(|(uid, operation, kind, sub_resource, object, old_object, dry_run)| {
            let fields = [
                ("uid", uid),
                ("operation", operation),
                ("kind", kind),
                ("subResource", sub_resource),
                ("object", object),
                ("oldObject", old_object),
                ("dryRun", dry_run),
            ];
            Value::Object(
                fields
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                    .collect(),
            )
        });
    let review = (
        one_of(vec![json!("admission.k8s.io/v1"), json!("admission.k8s.io/v1beta1")]),
        one_of(vec![json!("AdmissionReview")]),
        prop_oneof![4 => request.prop_map(Some), 1 => any_json().prop_map(Some), 1 => Just(None)],
    )
        .prop_map(|(api_version, kind, request)| {
            let fields = [("apiVersion", api_version), ("kind", kind), ("request", request)];
            let review: Map<String, Value> = fields
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
                .collect();
            serde_json::to_vec(&review).unwrap()
        });
    prop_oneof![8 => review, 1 => prop::collection::vec(any::<u8>(), 0..64)]
}

/// The uid the answer must echo, if the body makes one readable.
fn readable_uid(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let versions = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];
    let envelope_ok = value["kind"] == "AdmissionReview" && versions.iter().any(|v| value["apiVersion"] == *v);
    let uid = value.get("request")?.get("uid")?.as_str()?;
    (envelope_ok && !uid.is_empty()).then(|| uid.to_owned())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn no_body_panics_and_the_uid_is_echoed(body in body(), gates_on in any::<bool>()) {
        let gates = if gates_on { FeatureGates::parse("ImagePullJobGate=true").unwrap() } else { FeatureGates::default() };
        let now = Time("2026-11-25T10:00:00Z".parse().unwrap());
        for route in Route::all() {
            let outcome = review(route, &body, &prewarm_api::admission::Policy::gates(gates), &now);
            let answer: Value = serde_json::from_slice(&outcome.body).expect("every answer is JSON");
            match readable_uid(&body) {
                Some(uid) => {
                    prop_assert_eq!(outcome.http_status, 200);
                    prop_assert_eq!(&answer["response"]["uid"], &json!(uid));
                    let response = &answer["response"];
                    prop_assert_eq!(response.get("patch").is_some(), response.get("patchType").is_some());
                    if route.path().starts_with("/validate-") {
                        prop_assert!(response.get("patch").is_none());
                    }
                }
                None => {
                    prop_assert_eq!(outcome.http_status, 400);
                    prop_assert_eq!(&answer["kind"], "Status");
                }
            }
        }
    }
}
