//! In-process router tests over the AdmissionReview fixtures in
//! `tests/fixtures/admission/` (written by `tests/fixtures/generate.py`), each
//! checked against the whole response contract the API server enforces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::service::Service;
use hyper::{Request, StatusCode};
use prewarm_api::gates::FeatureGates;
use prewarm_webhook::admit::{Admission, AdmitState};
use prewarm_webhook::limits::LimitsConfig;
use prewarm_webhook::metrics::Metrics;
use serde_json::{Value, json};

async fn post(gates: FeatureGates, path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let state = Arc::new(AdmitState::new(
        prewarm_api::admission::Policy::gates(gates),
        Arc::new(Metrics::default()),
        &LimitsConfig::default(),
    ));
    let request = Request::post(path)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = Admission::new(state).call(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Replaces every "<now>" in `expected` with the value found at the same place
/// in `actual`, after checking that it is a timestamp.
fn resolve_now(expected: &mut Value, actual: &Value) {
    match expected {
        Value::String(s) if s == "<now>" => {
            let stamp = actual.as_str().unwrap_or_default();
            assert!(
                stamp.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
                "expected a timestamp, got {actual}"
            );
            *expected = actual.clone();
        }
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                resolve_now(value, actual.get(key).unwrap_or(&Value::Null));
            }
        }
        Value::Array(items) => {
            for (i, value) in items.iter_mut().enumerate() {
                resolve_now(value, actual.get(i).unwrap_or(&Value::Null));
            }
        }
        _ => {}
    }
}

fn check_fixture(name: &str, fixture: &Value, status: StatusCode, body: &Value) {
    let review = &fixture["review"];
    let expect = &fixture["expect"];
    assert_eq!(status, StatusCode::OK, "{name}: {body}");
    // The contract of VerifyAdmissionResponse.
    assert_eq!(
        body["apiVersion"], review["apiVersion"],
        "{name}: answered in another version"
    );
    assert_eq!(body["kind"], "AdmissionReview", "{name}");
    let response = &body["response"];
    assert_eq!(response["uid"], review["request"]["uid"], "{name}: uid not echoed");
    assert_eq!(response["allowed"], expect["allowed"], "{name}: {response}");
    let has_patch = response.get("patch").is_some();
    assert_eq!(
        has_patch,
        response.get("patchType").is_some(),
        "{name}: patch and patchType must come together"
    );
    let path = fixture["path"].as_str().unwrap();
    if path.starts_with("/validate-") {
        assert!(!has_patch, "{name}: a validating webhook returned a patch");
    }
    match expect.get("patchedObject") {
        Some(Value::Null) => assert!(!has_patch, "{name}: unexpected patch"),
        Some(expected) => {
            assert_eq!(response["patchType"], "JSONPatch", "{name}");
            let patch = BASE64
                .decode(response["patch"].as_str().unwrap())
                .expect("patch must be base64");
            let patch: Value = serde_json::from_slice(&patch).expect("patch must be JSON");
            assert!(
                patch.as_array().unwrap().iter().all(|op| op["op"] == "add"),
                "{name}: only add operations: {patch}"
            );
            let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
            let mut object = review["request"]["object"].clone();
            json_patch::patch(&mut object, &patch).unwrap_or_else(|e| panic!("{name}: the patch does not apply: {e}"));
            let mut expected = expected.clone();
            resolve_now(&mut expected, &object);
            assert_eq!(object, expected, "{name}: the patched object differs");
        }
        None => {}
    }
    if let Some(code) = expect.get("code") {
        let status = &response["status"];
        assert_eq!(&status["code"], code, "{name}: {status}");
        assert_eq!(status["reason"], expect["reason"], "{name}: {status}");
        assert_eq!(status["status"], "Failure", "{name}");
        let message = status["message"].as_str().unwrap();
        if let Some(fragment) = expect.get("message").and_then(Value::as_str) {
            assert!(message.contains(fragment), "{name}: {message:?} lacks {fragment:?}");
        }
        if let Some(causes) = expect.get("causes") {
            let actual: Vec<Value> = status["details"]["causes"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no causes in {status}"))
                .iter()
                .map(|c| json!([c["field"], c["reason"]]))
                .collect();
            assert_eq!(&Value::Array(actual), causes, "{name}: {status}");
            for cause in status["details"]["causes"].as_array().unwrap() {
                let line = format!(
                    "{}: {}",
                    cause["field"].as_str().unwrap(),
                    cause["message"].as_str().unwrap()
                );
                assert!(
                    message.contains(&line),
                    "{name}: the message {message:?} lacks {line:?}"
                );
            }
            assert_eq!(status["details"]["group"], "apps.kruise.io", "{name}");
        }
    } else {
        assert!(
            response.get("status").is_none_or(|s| s["code"] != 400),
            "{name}: {response}"
        );
    }
    if let Some(expected) = expect.get("warnings").and_then(Value::as_array) {
        let warnings: Vec<&str> = response["warnings"]
            .as_array()
            .map_or(Vec::new(), |w| w.iter().map(|x| x.as_str().unwrap()).collect());
        assert_eq!(warnings.len(), expected.len(), "{name}: warnings {warnings:?}");
        for (warning, fragment) in warnings.iter().zip(expected) {
            assert!(warning.contains(fragment.as_str().unwrap()), "{name}: {warning:?}");
        }
    }
}

#[tokio::test]
async fn every_fixture_meets_the_contract() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    assert!(
        names.len() >= 80,
        "fixtures missing: run python3 webhook/tests/fixtures/generate.py"
    );
    for path in names {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let fixture: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let gates = FeatureGates::parse(fixture["featureGates"].as_str().unwrap()).unwrap();
        let body = serde_json::to_vec(&fixture["review"]).unwrap();
        let (status, answer) = post(gates, fixture["path"].as_str().unwrap(), "application/json", body).await;
        check_fixture(&name, &fixture, status, &answer);
    }
}

fn minimal_review() -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "abc", "operation": "CREATE",
            "kind": {"group": "apps.kruise.io", "version": "v1beta1", "kind": "ImagePullJob"},
            "object": {"spec": {"image": "nginx:1", "completionPolicy": {"type": "Always"}}}
        }
    })
}

#[tokio::test]
async fn unreadable_bodies_get_a_4xx_status() {
    let gates = FeatureGates::default();
    let path = "/validate-apps-kruise-io-imagepulljob";
    let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "application/json",
            b"not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "not JSON",
        ),
        (
            "application/json",
            b"{}".to_vec(),
            StatusCode::BAD_REQUEST,
            "expected an AdmissionReview",
        ),
        (
            "application/json",
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"Admission\xffReview\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "the body is not UTF-8 text: invalid utf-8 sequence of 1 bytes from index 53",
        ),
        (
            "application/json",
            br#"{"apiVersion":"admission.k8s.io/v1"} trailing"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "the body is not JSON: trailing characters at line 1 column 38",
        ),
        (
            "application/json",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "request is missing",
        ),
        (
            "application/json",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"operation":"CREATE"}}"#
                .to_vec(),
            StatusCode::BAD_REQUEST,
            "request.uid",
        ),
        (
            "application/json",
            br#"{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{"uid":"x"}}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "admission.k8s.io/v1",
        ),
        (
            "text/plain",
            serde_json::to_vec(&minimal_review()).unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type",
        ),
        (
            "application/json",
            vec![b' '; 8 * 1024 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than",
        ),
    ];
    for (content_type, body, expected, fragment) in cases {
        let (status, answer) = post(gates, path, content_type, body).await;
        assert_eq!(status, expected, "{fragment}: {answer}");
        assert_eq!(answer["kind"], "Status");
        assert!(answer["message"].as_str().unwrap().contains(fragment), "{answer}");
    }
    // A charset parameter is fine.
    let (status, _) = post(
        gates,
        path,
        "application/json; charset=utf-8",
        serde_json::to_vec(&minimal_review()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn deeply_nested_and_huge_values_are_answered() {
    let gates = FeatureGates::parse("ImagePullJobGate=true").unwrap();
    let path = "/validate-apps-kruise-io-imagepulljob";
    // Nesting far beyond serde_json's recursion limit: skipped without recursion
    // (no crash) and refused with the uid echoed and the reason.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_review = |object: &str| {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"deep","operation":"CREATE","kind":{{"group":"apps.kruise.io","version":"v1beta1","kind":"ImagePullJob"}},"object":{object}}}}}"#
        )
        .into_bytes()
    };
    let (status, answer) = post(gates, path, "application/json", deep_review(&deep)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"]["uid"], "deep");
    assert_eq!(answer["response"]["allowed"], false);
    assert_eq!(
        answer["response"]["status"]["message"],
        "request.object must be a JSON object"
    );
    let (status, answer) = post(
        gates,
        path,
        "application/json",
        deep_review(&format!(r#"{{"spec":{deep}}}"#)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("spec: Invalid value") && message.contains("recursion limit"),
        "{answer}"
    );
    let mutate = "/mutate-apps-kruise-io-imagepulljob";
    let (status, answer) = post(
        gates,
        mutate,
        "application/json",
        deep_review(&format!(r#"{{"spec":{{"pullPolicy":{deep}}}}}"#)),
    )
    .await;
    assert_eq!(
        (status, &answer["response"]["allowed"]),
        (StatusCode::OK, &json!(true)),
        "{answer}"
    );
    // The deep member is present, so left alone; the absent ones are defaulted.
    let patch = BASE64
        .decode(answer["response"]["patch"].as_str().unwrap_or_default())
        .unwrap();
    let paths: Vec<Value> = serde_json::from_slice::<Vec<Value>>(&patch)
        .unwrap()
        .into_iter()
        .map(|op| op["path"].clone())
        .collect();
    assert_eq!(
        paths,
        [json!("/spec/completionPolicy"), json!("/spec/imagePullPolicy")],
        "{answer}"
    );
    // A 6 MiB annotation is within the limit and judged normally.
    let mut review = minimal_review();
    review["request"]["object"]["metadata"] = json!({"annotations": {"big": "x".repeat(6 * 1024 * 1024)}});
    let (status, answer) = post(gates, path, "application/json", serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["response"]["uid"], "abc");
    assert_eq!(answer["response"]["allowed"], true);
    // Nesting within the limit inside an unknown field is kept and allowed.
    let mut review = minimal_review();
    let mut nested = json!("leaf");
    for _ in 0..100 {
        nested = json!({"n": nested});
    }
    review["request"]["object"]["spec"]["x-deep"] = nested;
    let (status, answer) = post(gates, path, "application/json", serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(
        (status, &answer["response"]["allowed"]),
        (StatusCode::OK, &json!(true)),
        "{answer}"
    );
}

#[tokio::test]
async fn timeout_query_is_understood() {
    let gates = FeatureGates::parse("ImagePullJobGate=true").unwrap();
    let body = serde_json::to_vec(&minimal_review()).unwrap();
    let (status, _) = post(
        gates,
        "/validate-apps-kruise-io-imagepulljob?timeout=10s",
        "application/json",
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, answer) = post(
        gates,
        "/validate-apps-kruise-io-imagepulljob?timeout=soon",
        "application/json",
        body,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["message"].as_str().unwrap().contains("timeout"), "{answer}");
}

#[tokio::test]
async fn unknown_paths_and_methods_are_refused() {
    let state = Arc::new(AdmitState::new(
        prewarm_api::admission::Policy::gates(FeatureGates::default()),
        Arc::new(Metrics::default()),
        &LimitsConfig::default(),
    ));
    let admission = Admission::new(state);
    let get = Request::get("/validate-apps-kruise-io-imagepulljob")
        .body(Full::<Bytes>::default())
        .unwrap();
    let answer = admission.call(get).await.unwrap();
    assert_eq!(answer.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers()["allow"], "POST");
    let other = Request::post("/validate-apps-v1-deployment")
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(admission.call(other).await.unwrap().status(), StatusCode::NOT_FOUND);
}
