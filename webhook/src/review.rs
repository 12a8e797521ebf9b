//! The AdmissionReview contract, as a pure function from a request body to a
//! response body. The envelope is read first, so that the `uid` is echoed even
//! when the object inside cannot be decoded; once the uid is known every answer
//! is HTTP 200, with failures carried as `allowed: false` and a Status.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::GROUP;
use prewarm_api::admission::{self, Decision, Kind, Operation, Request};
use prewarm_api::field::FieldError;
use prewarm_api::gates::FeatureGates;
use serde_json::{Map, Value, json};

use crate::envelope::{Envelope, GroupVersionKind, RequestFields};

const REVIEW_VERSIONS: [&str; 2] = ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"];

/// Which half of admission an endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mutate => "mutate",
            Self::Validate => "validate",
        }
    }
}

/// One webhook path: `/mutate-apps-kruise-io-imagepulljob` and its siblings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    pub kind: Kind,
    pub endpoint: Endpoint,
}

impl Route {
    pub fn all() -> impl Iterator<Item = Route> {
        Kind::ALL
            .into_iter()
            .flat_map(|kind| [Endpoint::Mutate, Endpoint::Validate].map(|endpoint| Route { kind, endpoint }))
    }

    /// OpenKruise's paths, so its webhook configurations work unchanged.
    pub fn path(self) -> String {
        format!(
            "/{}-apps-kruise-io-{}",
            self.endpoint.as_str(),
            self.kind.name().to_ascii_lowercase()
        )
    }
}

/// How a request ended, for metrics and the decision log line. Every field
/// comes from a closed set except `uid`, `name` and `namespace` (logs only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub operation: &'static str,
    pub result: &'static str,
    pub dry_run: bool,
}

/// The answer: HTTP status, JSON body, and what happened.
#[derive(Debug)]
pub struct Outcome {
    pub http_status: u16,
    pub body: Vec<u8>,
    pub summary: Summary,
}

/// Result labels.
pub mod results {
    pub const ALLOWED: &str = "allowed";
    pub const PATCHED: &str = "patched";
    pub const INVALID: &str = "invalid";
    pub const FORBIDDEN: &str = "forbidden";
    pub const BAD_REQUEST: &str = "bad_request";
}

/// Handles one AdmissionReview body for `route`.
pub fn review(route: Route, body: &[u8], gates: &FeatureGates, now: &Time) -> Outcome {
    let envelope = match Envelope::parse(body) {
        Ok(envelope) => envelope,
        Err(e) => return unreadable(format!("the body is not JSON: {e}")),
    };
    let api_version = envelope.api_version.unwrap_or_default();
    let review_kind = envelope.kind.unwrap_or_default();
    if review_kind != "AdmissionReview" || !REVIEW_VERSIONS.contains(&api_version.as_str()) {
        return unreadable(format!(
            "expected an AdmissionReview of admission.k8s.io/v1 or v1beta1, got kind {review_kind:?} apiVersion {api_version:?}"
        ));
    }
    let Some(mut request) = envelope.request else {
        return unreadable("request is missing: an AdmissionReview sent to a webhook carries a request".to_owned());
    };
    let Some(uid) = request.uid.take().filter(|uid| !uid.is_empty()) else {
        return unreadable("request.uid is missing".to_owned());
    };
    let mut summary = Summary {
        uid,
        name: request.name.take().unwrap_or_default(),
        namespace: request.namespace.take().unwrap_or_default(),
        operation: "unknown",
        result: results::BAD_REQUEST,
        dry_run: request.dry_run.unwrap_or(false),
    };
    let mut response = match answer(route, &request, &mut summary, gates, now) {
        Ok(response) => response,
        Err(message) => {
            summary.result = results::BAD_REQUEST;
            denial(bad_request_status(&message))
        }
    };
    response.insert("uid".to_owned(), json!(summary.uid));
    let body = json!({"apiVersion": api_version, "kind": "AdmissionReview", "response": response});
    Outcome {
        http_status: 200,
        body: body.to_string().into_bytes(),
        summary,
    }
}

/// The response for a readable request; `Err` is a bad request, with the reason.
fn answer(
    route: Route,
    request: &RequestFields,
    summary: &mut Summary,
    gates: &FeatureGates,
    now: &Time,
) -> Result<Map<String, Value>, String> {
    let operation_text = request.operation.as_deref().unwrap_or_default();
    let operation = Operation::parse(operation_text)
        .ok_or_else(|| format!("request.operation {operation_text:?} is not one of CREATE, UPDATE, DELETE, CONNECT"))?;
    summary.operation = operation.as_str();
    check_kind(route.kind, request.kind.as_ref())?;
    let (object, old_object) = (request.object.as_ref(), request.old_object.as_ref());
    if let Some(object) = object {
        check_object(route.kind, "request.object", object)?;
    }
    if let Some(old) = old_object {
        check_object(route.kind, "request.oldObject", old)?;
    }
    if object.is_none() && matches!(operation, Operation::Create | Operation::Update) {
        return Err(format!("request.object is required for {}", operation.as_str()));
    }
    let sub_resource = request.sub_resource.as_deref().filter(|s| !s.is_empty());
    match route.endpoint {
        Endpoint::Mutate => Ok(mutate(route.kind, operation, sub_resource, object, summary, now)),
        Endpoint::Validate => {
            let request = Request {
                kind: route.kind,
                operation,
                sub_resource,
                object,
                old_object,
            };
            Ok(validate(
                route.kind,
                &admission::validate(&request, gates),
                object,
                summary,
            ))
        }
    }
}

fn check_kind(expected: Kind, kind: Option<&GroupVersionKind>) -> Result<(), String> {
    let field =
        |value: fn(&GroupVersionKind) -> &Option<String>| kind.and_then(|k| value(k).as_deref()).unwrap_or_default();
    let (group, version, name) = (field(|k| &k.group), field(|k| &k.version), field(|k| &k.kind));
    if group == GROUP && Kind::VERSIONS.contains(&version) && name == expected.name() {
        Ok(())
    } else {
        Err(format!(
            "this webhook admits {expected} of {GROUP} {}; request.kind is {group}/{version} {name:?}",
            Kind::VERSIONS.join(" and ")
        ))
    }
}

fn check_object(expected: Kind, field: &str, object: &Value) -> Result<(), String> {
    let Some(object) = object.as_object() else {
        return Err(format!("{field} must be a JSON object"));
    };
    match object.get("kind").and_then(Value::as_str) {
        None => Ok(()),
        Some(kind) if kind == expected.name() => Ok(()),
        Some(kind) => Err(format!("{field}.kind is {kind:?}, but this webhook admits {expected}")),
    }
}

fn mutate(
    kind: Kind,
    operation: Operation,
    sub_resource: Option<&str>,
    object: Option<&Value>,
    summary: &mut Summary,
    now: &Time,
) -> Map<String, Value> {
    let mut response = allowed();
    summary.result = results::ALLOWED;
    let Some(object) = object.filter(|_| sub_resource.is_none()) else {
        return response;
    };
    if !matches!(operation, Operation::Create | Operation::Update) {
        return response;
    }
    let operations = kind.defaults(object, now);
    if operations.is_empty() {
        return response;
    }
    // Serialising plain add operations cannot fail; an empty patch is never sent.
    let patch = serde_json::to_vec(&operations).unwrap_or_default();
    response.insert("patch".to_owned(), json!(BASE64.encode(patch)));
    response.insert("patchType".to_owned(), json!("JSONPatch"));
    summary.result = results::PATCHED;
    response
}

fn validate(kind: Kind, decision: &Decision, object: Option<&Value>, summary: &mut Summary) -> Map<String, Value> {
    match decision {
        Decision::Allowed { warnings } => {
            summary.result = results::ALLOWED;
            with_warnings(allowed(), warnings)
        }
        Decision::Forbidden { message, .. } => {
            summary.result = results::FORBIDDEN;
            denial(json!({
                "metadata": {},
                "status": "Failure",
                "message": message,
                "reason": "Forbidden",
                "code": 403,
            }))
        }
        Decision::Invalid { errors, warnings } => {
            summary.result = results::INVALID;
            let name = object
                .and_then(|o| o.pointer("/metadata/name"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(&summary.name);
            with_warnings(denial(invalid_status(kind, name, errors)), warnings)
        }
    }
}

/// A Status shaped like the API server's own for a failed validation.
fn invalid_status(kind: Kind, name: &str, errors: &[FieldError]) -> Value {
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let summary = match listed.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let causes: Vec<Value> = errors
        .iter()
        .map(|e| json!({"reason": e.reason.cause_type(), "message": e.body(), "field": e.path.as_str()}))
        .collect();
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("{kind}.{GROUP} {name:?} is invalid: {summary}"),
        "reason": "Invalid",
        "details": {"name": name, "group": GROUP, "kind": kind.name(), "causes": causes},
        "code": 422,
    })
}

fn bad_request_status(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "BadRequest", "code": 400})
}

fn allowed() -> Map<String, Value> {
    let mut response = Map::new();
    response.insert("allowed".to_owned(), json!(true));
    response
}

fn denial(status: Value) -> Map<String, Value> {
    let mut response = Map::new();
    response.insert("allowed".to_owned(), json!(false));
    response.insert("status".to_owned(), status);
    response
}

fn with_warnings(mut response: Map<String, Value>, warnings: &[String]) -> Map<String, Value> {
    if !warnings.is_empty() {
        response.insert("warnings".to_owned(), json!(warnings));
    }
    response
}

/// An HTTP 400 for a body that is not an AdmissionReview at all.
fn unreadable(message: String) -> Outcome {
    let mut status = bad_request_status(&message);
    status["kind"] = json!("Status");
    status["apiVersion"] = json!("v1");
    Outcome {
        http_status: 400,
        body: status.to_string().into_bytes(),
        summary: Summary {
            operation: "unknown",
            result: results::BAD_REQUEST,
            ..Summary::default()
        },
    }
}
