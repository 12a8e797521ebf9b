//! Defaulting as RFC 6902 `add` operations computed on the raw object: only absent
//! fields are added (an empty string counts as absent for the string enums, as
//! in OpenKruise), so fields unknown to our types survive, and defaulting an
//! already-defaulted object yields no operation.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use crate::job::{COMPLETION_ALWAYS, PULL_IF_NOT_PRESENT};

pub const DEFAULT_TIMEOUT_SECONDS: i32 = 600;
pub const DEFAULT_BACKOFF_LIMIT: i32 = 3;

/// `completionPolicy.type=Always`, `pullPolicy{timeoutSeconds 600, backoffLimit 3}`
/// and `imagePullPolicy=IfNotPresent`.
pub fn image_pull_job(object: &Value) -> Vec<PatchOperation> {
    let mut template = job_template();
    template["imagePullPolicy"] = json!(PULL_IF_NOT_PRESENT);
    spec_defaults(object, &template)
}

/// As ImagePullJob but without `imagePullPolicy`: each child ImagePullJob gets it.
pub fn image_list_pull_job(object: &Value) -> Vec<PatchOperation> {
    spec_defaults(object, &job_template())
}

/// Every tag of every image gets `createdAt` (`now`) and
/// `pullPolicy{timeoutSeconds 600, backoffLimit 3}`.
pub fn node_image(object: &Value, now: &Time) -> Vec<PatchOperation> {
    let mut operations = Vec::new();
    let Some(images) = object.pointer("/spec/images").and_then(Value::as_object) else {
        return operations;
    };
    let template = json!({
        "createdAt": now,
        "pullPolicy": {"timeoutSeconds": DEFAULT_TIMEOUT_SECONDS, "backoffLimit": DEFAULT_BACKOFF_LIMIT},
    });
    for (name, image) in images {
        let Some(tags) = image.get("tags").and_then(Value::as_array) else {
            continue;
        };
        for (i, tag) in tags.iter().enumerate() {
            let pointer = PointerBuf::from_tokens(["spec", "images", name.as_str(), "tags", &i.to_string()]);
            add_missing(&mut operations, &pointer, tag, &template);
        }
    }
    operations
}

fn job_template() -> Value {
    json!({
        "completionPolicy": {"type": COMPLETION_ALWAYS},
        "pullPolicy": {"timeoutSeconds": DEFAULT_TIMEOUT_SECONDS, "backoffLimit": DEFAULT_BACKOFF_LIMIT},
    })
}

fn spec_defaults(object: &Value, template: &Value) -> Vec<PatchOperation> {
    let mut operations = Vec::new();
    if let Some(spec) = object.get("spec") {
        add_missing(&mut operations, &PointerBuf::from_tokens(["spec"]), spec, template);
    }
    operations
}

/// Adds each member of `template` that `actual` lacks; recurses into objects
/// both have. A non-object `actual` is left alone for validation to report.
fn add_missing(operations: &mut Vec<PatchOperation>, pointer: &PointerBuf, actual: &Value, template: &Value) {
    let (Some(actual), Some(template)) = (actual.as_object(), template.as_object()) else {
        return;
    };
    for (key, default) in template {
        let mut child = pointer.clone();
        child.push_back(key.as_str());
        match actual.get(key) {
            None | Some(Value::Null) => push_add(operations, child, default),
            Some(Value::String(s)) if s.is_empty() && default.is_string() => push_add(operations, child, default),
            Some(present) if default.is_object() => add_missing(operations, &child, present, default),
            Some(_) => {}
        }
    }
}

fn push_add(operations: &mut Vec<PatchOperation>, path: PointerBuf, value: &Value) {
    operations.push(PatchOperation::Add(AddOperation {
        path,
        value: value.clone(),
    }));
}
