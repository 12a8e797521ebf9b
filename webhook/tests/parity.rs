//! The offline validator and the webhook agree: for every fixture document, the
//! same verdict, the same causes and the same defaulted object, with the gate
//! on and off, for creates and for updates.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::admission::{Kind, Policy};
use prewarm_api::caps::Caps;
use prewarm_api::gates::FeatureGates;
use prewarm_webhook::review::{Endpoint, Route, review};
use prewarm_webhook::validate::yaml::split_documents;
use prewarm_webhook::validate::{OldObjects, Settings, Status, UnknownFields, check_chunk};
use serde_json::{Value, json};

fn now() -> Time {
    Time("2026-11-25T10:00:00Z".parse().unwrap())
}

fn envelope(kind: Kind, operation: &str, object: &Value, old: Option<&Value>) -> Vec<u8> {
    let version = object["apiVersion"].as_str().unwrap().rsplit('/').next().unwrap();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "parity", "operation": operation,
            "kind": {"group": "apps.kruise.io", "version": version, "kind": kind.name()},
            "object": object, "oldObject": old,
        }
    }))
    .unwrap()
}

/// What the webhook makes of `object`: the object after the mutating webhook's
/// patch, and the validating webhook's (allowed, causes, message).
fn webhook(
    kind: Kind,
    object: &Value,
    old: Option<&Value>,
    policy: &Policy,
) -> (Value, bool, Vec<(String, String, String)>, String) {
    let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
    let mutate = review(
        Route {
            kind,
            endpoint: Endpoint::Mutate,
        },
        &envelope(kind, operation, object, old),
        policy,
        &now(),
    );
    let answer: Value = serde_json::from_slice(&mutate.body).unwrap();
    let mut defaulted = object.clone();
    if let Some(patch) = answer["response"]["patch"].as_str() {
        let patch: json_patch::Patch = serde_json::from_slice(&BASE64.decode(patch).unwrap()).unwrap();
        json_patch::patch(&mut defaulted, &patch).unwrap();
    }
    let validate = review(
        Route {
            kind,
            endpoint: Endpoint::Validate,
        },
        &envelope(kind, operation, &defaulted, old),
        policy,
        &now(),
    );
    let answer: Value = serde_json::from_slice(&validate.body).unwrap();
    let response = &answer["response"];
    let causes = response["status"]["details"]["causes"]
        .as_array()
        .map(|causes| {
            causes
                .iter()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap().to_owned(),
                        c["reason"].as_str().unwrap().to_owned(),
                        c["message"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let message = response["status"]["message"].as_str().unwrap_or_default().to_owned();
    (defaulted, response["allowed"] == true, causes, message)
}

fn documents(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect()
}

fn compare(file: &str, text: &str, policy: &Policy, old: &OldObjects) -> usize {
    let settings = Settings {
        policy: policy.clone(),
        reject_unknown: false,
        // The webhook never sees unknown fields: the API server refuses or prunes them first.
        unknown_fields: UnknownFields::Ignore,
        old: old.clone(),
        keep_defaulted: true,
    };
    let mut compared = 0;
    for (index, chunk) in split_documents(text).into_iter().enumerate() {
        for report in check_chunk(file, index, chunk, &settings, &now()) {
            let Some(output) = &report.output else { continue };
            let Some(kind) = Kind::from_type_meta(&report.api_version, &report.kind) else {
                continue;
            };
            let Ok(raw) = prewarm_webhook::validate::yaml::parse(chunk) else {
                continue;
            };
            let raw = raw.unwrap();
            let object = match report.item {
                Some(i) => raw["items"][i].clone(),
                None => raw,
            };
            let key = (report.kind.clone(), report.namespace.clone(), report.name.clone());
            let stored = old.get(&key).map(|o| kind.with_defaults(o, &now()));
            let (defaulted, allowed, causes, message) = webhook(kind, &object, stored.as_ref(), policy);
            let label = format!("{file} document {} ({})", index + 1, report.name);
            assert_eq!(output, &defaulted, "{label}: defaulted objects differ");
            assert_eq!(
                report.status == Status::Valid,
                allowed,
                "{label}: verdicts differ: {report:?} vs {message}"
            );
            let cli_causes: Vec<(String, String, String)> = report
                .errors
                .iter()
                .filter_map(|e| Some((e.field.clone()?, e.reason?.to_owned(), e.message.clone())))
                .collect();
            assert_eq!(cli_causes, causes, "{label}: causes differ");
            if !allowed && causes.is_empty() {
                assert_eq!(report.errors[0].message, message, "{label}: gate messages differ");
            }
            compared += 1;
        }
    }
    compared
}

#[test]
fn validate_and_the_webhook_agree_on_every_fixture() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = documents(&root.join("../api/tests/fixtures/seed"));
    inputs.extend(documents(&root.join("tests/fixtures/validate")));
    let mut compared = 0;
    let capped = Caps {
        max_timeout_seconds: Some(600),
        max_backoff_limit: Some(3),
    };
    for (gates, caps) in [
        ("ImagePullJobGate=true", Caps::NONE),
        ("", Caps::NONE),
        ("KruiseDaemon=false", Caps::NONE),
        ("ImagePullJobGate=true", capped),
    ] {
        let policy = Policy {
            caps,
            ..Policy::gates(FeatureGates::parse(gates).unwrap())
        };
        for (file, text) in &inputs {
            compared += compare(file, text, &policy, &OldObjects::new());
        }
    }
    assert!(compared > 60, "only {compared} documents compared");
}

#[test]
fn updates_agree_too() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/validate/old");
    let stored = std::fs::read_to_string(dir.join("stored.yaml")).unwrap();
    let mut old = OldObjects::new();
    for chunk in split_documents(&stored) {
        let value = prewarm_webhook::validate::yaml::parse(chunk).unwrap().unwrap();
        let text = |p: &str| value.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
        old.insert(
            (text("/kind"), text("/metadata/namespace"), text("/metadata/name")),
            value.clone(),
        );
    }
    let changed = std::fs::read_to_string(dir.join("changed.yaml")).unwrap();
    for gates in ["ImagePullJobGate=true", ""] {
        assert_eq!(
            compare(
                "changed.yaml",
                &changed,
                &Policy::gates(FeatureGates::parse(gates).unwrap()),
                &old
            ),
            2
        );
    }
}
