//! The AdmissionReview contract, as a pure function from a request body to a
//! response body. The envelope is read first, so that the `uid` is echoed even
//! when the object inside cannot be decoded; once the uid is known every answer
//! is HTTP 200, with failures carried as `allowed: false` and a Status.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::GROUP;
use prewarm_api::admission::{self, Decision, Kind, Operation, Policy, Request};
use prewarm_api::field::FieldError;
use prewarm_api::node_status::Writer;
use prewarm_api::spec::Spec;
use serde::Serialize;

use crate::envelope::{Envelope, GroupVersionKind, Object, RequestFields};

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
    pub fn path(self) -> &'static str {
        match (self.endpoint, self.kind) {
            (Endpoint::Mutate, Kind::ImagePullJob) => "/mutate-apps-kruise-io-imagepulljob",
            (Endpoint::Mutate, Kind::ImageListPullJob) => "/mutate-apps-kruise-io-imagelistpulljob",
            (Endpoint::Mutate, Kind::AdvancedCronJob) => "/mutate-apps-kruise-io-advancedcronjob",
            (Endpoint::Mutate, Kind::NodeImage) => "/mutate-apps-kruise-io-nodeimage",
            (Endpoint::Validate, Kind::ImagePullJob) => "/validate-apps-kruise-io-imagepulljob",
            (Endpoint::Validate, Kind::ImageListPullJob) => "/validate-apps-kruise-io-imagelistpulljob",
            (Endpoint::Validate, Kind::AdvancedCronJob) => "/validate-apps-kruise-io-advancedcronjob",
            (Endpoint::Validate, Kind::NodeImage) => "/validate-apps-kruise-io-nodeimage",
        }
    }
}

/// How a request ended, for metrics and the decision log line. Every field
/// comes from a closed set except `uid`, `name` and `namespace` (logs only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    /// `None` until the request's operation is read.
    pub operation: Option<Operation>,
    pub verdict: Verdict,
    pub dry_run: bool,
}

/// The answer: HTTP status, JSON body, and what happened.
#[derive(Debug)]
pub struct Outcome {
    pub http_status: u16,
    pub body: Vec<u8>,
    pub summary: Summary,
}

/// What was decided: the `result` label of metrics and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Verdict {
    Allowed,
    Patched,
    Invalid,
    Forbidden,
    #[default]
    BadRequest,
}

impl Verdict {
    pub const ALL: [Verdict; 5] = [
        Self::Allowed,
        Self::Patched,
        Self::Invalid,
        Self::Forbidden,
        Self::BadRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Patched => "patched",
            Self::Invalid => "invalid",
            Self::Forbidden => "forbidden",
            Self::BadRequest => "bad_request",
        }
    }
}

/// Handles one AdmissionReview body for `route`.
pub fn review(route: Route, body: &[u8], policy: &Policy, now: &Time) -> Outcome {
    let envelope = match Envelope::parse(body) {
        Ok(envelope) => envelope,
        Err(message) => return unreadable(message),
    };
    let api_version = envelope.api_version.unwrap_or_default();
    let review_kind = envelope.kind.unwrap_or_default();
    if review_kind != "AdmissionReview" || !REVIEW_VERSIONS.contains(&api_version.as_ref()) {
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
        uid: uid.into_owned(),
        name: request.name.take().unwrap_or_default().into_owned(),
        namespace: request.namespace.take().unwrap_or_default().into_owned(),
        operation: None,
        verdict: Verdict::BadRequest,
        dry_run: request.dry_run.unwrap_or(false),
    };
    let response = match answer(route, &request, &mut summary, policy, now) {
        Ok(response) => response,
        Err(message) => {
            summary.verdict = Verdict::BadRequest;
            Response::denied(Status::bad_request(message))
        }
    };
    let review = Review {
        api_version: &api_version,
        kind: "AdmissionReview",
        response: Response {
            uid: &summary.uid,
            ..response
        },
    };
    Outcome {
        http_status: 200,
        body: to_json(&review),
        summary,
    }
}

/// The AdmissionReview sent back.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
    api_version: &'a str,
    kind: &'static str,
    response: Response<'a>,
}

#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct Response<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<Status<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: Vec<String>,
}

impl<'a> Response<'a> {
    fn allowed(warnings: Vec<String>) -> Self {
        Self {
            allowed: true,
            warnings,
            ..Self::default()
        }
    }

    fn denied(status: Status<'a>) -> Self {
        Self {
            status: Some(status),
            ..Self::default()
        }
    }
}

/// A `metav1.Status`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_version: Option<&'static str>,
    metadata: Empty,
    status: &'static str,
    message: Cow<'a, str>,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details<'a>>,
    code: u16,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Details<'a> {
    name: Cow<'a, str>,
    group: &'static str,
    kind: &'static str,
    causes: Vec<Cause>,
}

#[derive(Serialize)]
struct Cause {
    reason: &'static str,
    message: String,
    field: String,
}

impl<'a> Status<'a> {
    fn failure(code: u16, reason: &'static str, message: impl Into<Cow<'a, str>>) -> Self {
        Self {
            kind: None,
            api_version: None,
            metadata: Empty {},
            status: "Failure",
            message: message.into(),
            reason,
            details: None,
            code,
        }
    }

    fn bad_request(message: impl Into<Cow<'a, str>>) -> Self {
        Self::failure(400, "BadRequest", message)
    }

    /// Shaped like the API server's own for a failed validation.
    fn invalid(kind: Kind, name: Cow<'a, str>, errors: &[FieldError]) -> Self {
        let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let summary = match listed.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let causes = errors
            .iter()
            .map(|e| Cause {
                reason: e.reason.cause_type(),
                message: e.body(),
                field: e.path.to_string(),
            })
            .collect();
        let message = format!("{kind}.{GROUP} {name:?} is invalid: {summary}");
        Self {
            details: Some(Details {
                name,
                group: GROUP,
                kind: kind.name(),
                causes,
            }),
            ..Self::failure(422, "Invalid", message)
        }
    }
}

/// Serialising these plain structs into memory cannot fail.
fn to_json(value: &impl Serialize) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    let _ = serde_json::to_writer(&mut body, value);
    body
}

/// The response for a readable request; `Err` is a bad request, with the reason.
fn answer<'a>(
    route: Route,
    request: &'a RequestFields<'a>,
    summary: &mut Summary,
    policy: &Policy,
    now: &Time,
) -> Result<Response<'a>, String> {
    let operation_text = request.operation.as_deref().unwrap_or_default();
    let operation = Operation::parse(operation_text)
        .ok_or_else(|| format!("request.operation {operation_text:?} is not one of CREATE, UPDATE, DELETE, CONNECT"))?;
    summary.operation = Some(operation);
    check_kind(route.kind, request.kind.as_ref())?;
    check_object(route.kind, "request.object", &request.object)?;
    check_object(route.kind, "request.oldObject", &request.old_object)?;
    let (object, old_object) = (request.object.fields(), request.old_object.fields());
    if object.is_none() && matches!(operation, Operation::Create | Operation::Update) {
        return Err(format!("request.object is required for {}", operation.as_str()));
    }
    let sub_resource = request.sub_resource.as_deref().filter(|s| !s.is_empty());
    let response = match route.endpoint {
        Endpoint::Mutate => {
            let spec = object
                .filter(|_| sub_resource.is_none() && matches!(operation, Operation::Create | Operation::Update))
                .map(|object| object.spec());
            mutate(route.kind, spec, summary, now)
        }
        Endpoint::Validate => {
            let name = object.and_then(|o| o.name.as_deref()).filter(|n| !n.is_empty());
            let user = request.user_info.as_ref();
            let request = Request {
                kind: route.kind,
                operation,
                sub_resource,
                object: object.map(|o| o.spec()),
                old_object: old_object.map(|o| o.spec()),
                name: name.unwrap_or(&summary.name),
                status: object.map(|o| o.status()),
                writer: Writer {
                    username: user.and_then(|u| u.username.as_deref()).unwrap_or_default(),
                    node_names: user.and_then(|u| u.node_names.as_deref()).unwrap_or_default(),
                },
            };
            validate(route.kind, admission::validate(&request, policy), name, summary)
        }
    };
    Ok(response)
}

fn check_kind(expected: Kind, kind: Option<&GroupVersionKind<'_>>) -> Result<(), String> {
    let field = |value: for<'k> fn(&'k GroupVersionKind<'_>) -> &'k Option<Cow<'k, str>>| {
        kind.and_then(|k| value(k).as_deref()).unwrap_or_default()
    };
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

fn check_object(expected: Kind, field: &str, object: &Object<'_>) -> Result<(), String> {
    match object {
        Object::Absent => Ok(()),
        Object::NotAnObject => Err(format!("{field} must be a JSON object")),
        Object::Fields(fields) => match fields.kind.as_deref() {
            None => Ok(()),
            Some(kind) if kind == expected.name() => Ok(()),
            Some(kind) => Err(format!("{field}.kind is {kind:?}, but this webhook admits {expected}")),
        },
    }
}

/// `spec` is that of the object to default, if it is defaulted at all.
fn mutate<'a>(kind: Kind, spec: Option<Spec<'_>>, summary: &mut Summary, now: &Time) -> Response<'a> {
    summary.verdict = Verdict::Allowed;
    let Some(spec) = spec else {
        return Response::allowed(Vec::new());
    };
    let operations = kind.spec_defaults(spec, now);
    if operations.is_empty() {
        return Response::allowed(Vec::new());
    }
    summary.verdict = Verdict::Patched;
    Response {
        patch: Some(BASE64.encode(to_json(&operations))),
        patch_type: Some("JSONPatch"),
        ..Response::allowed(Vec::new())
    }
}

fn validate<'a>(kind: Kind, decision: Decision, name: Option<&'a str>, summary: &mut Summary) -> Response<'a> {
    match decision {
        Decision::Allowed { warnings } => {
            summary.verdict = Verdict::Allowed;
            Response::allowed(warnings)
        }
        Decision::Forbidden { message, .. } => {
            summary.verdict = Verdict::Forbidden;
            Response::denied(Status::failure(403, "Forbidden", message))
        }
        Decision::Invalid { errors, warnings } => {
            summary.verdict = Verdict::Invalid;
            let name = name.map_or_else(|| Cow::Owned(summary.name.clone()), Cow::Borrowed);
            Response {
                warnings,
                ..Response::denied(Status::invalid(kind, name, &errors))
            }
        }
    }
}

/// An HTTP 400 for a body that is not an AdmissionReview at all.
fn unreadable(message: String) -> Outcome {
    let status = Status {
        kind: Some("Status"),
        api_version: Some("v1"),
        ..Status::bad_request(message)
    };
    Outcome {
        http_status: 400,
        body: to_json(&status),
        summary: Summary::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_openkruise_s() {
        for route in Route::all() {
            let derived = format!(
                "/{}-apps-kruise-io-{}",
                route.endpoint.as_str(),
                route.kind.name().to_ascii_lowercase()
            );
            assert_eq!(route.path(), derived);
        }
    }
}
