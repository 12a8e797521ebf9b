//! Helpers shared by the api crate's integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use json_patch::{Patch, PatchOperation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::admission::Kind;
use prewarm_api::field::{Reason, Report};
use serde_json::Value;

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
