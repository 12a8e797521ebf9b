//! The verdict on one document, with the same `prewarm-api` calls as the
//! webhook: defaults applied first (as the mutating webhook would), then the
//! gates and rules of the validating webhook, as CREATE, or as UPDATE of the
//! matching `--old` object.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::GROUP;
use prewarm_api::admission::{self, Decision, Kind, Operation, Policy, Request};
use prewarm_api::spec::Spec;
use serde_json::Value;

use super::yaml::{self, Chunk, Positions};

/// The stored objects an input may update, keyed by kind, namespace and name.
pub type OldObjects = HashMap<(String, String, String), Value>;

#[derive(Debug)]
pub struct Settings {
    pub policy: Policy,
    pub reject_unknown: bool,
    pub unknown_fields: UnknownFields,
    pub old: OldObjects,
    pub keep_defaulted: bool,
}

/// What `validate` makes of a field the kind's schema does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UnknownFields {
    /// An error, as the API server's strict field validation (kubectl's default) refuses it.
    Error,
    /// A warning, as with `kubectl apply --validate=warn`.
    Warn,
    /// Nothing, as with `--validate=false` (the API server then drops the field).
    Ignore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Valid,
    Invalid,
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Skipped => "skipped",
        }
    }
}

/// One error or warning, located in the file where possible.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub field: Option<String>,
    /// The Kubernetes cause type (`FieldValueInvalid`, …), for errors with a field.
    pub reason: Option<&'static str>,
    pub message: String,
    pub line: usize,
    pub column: usize,
}

#[derive(Clone, Debug)]
pub struct DocumentReport {
    pub file: String,
    /// 0-based index of the document in its file.
    pub index: usize,
    /// For an item of a `kind: List`: its index in `items`.
    pub item: Option<usize>,
    pub line: usize,
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub status: Status,
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
    /// The document after defaulting (or as written, for other kinds).
    pub output: Option<Value>,
}

impl DocumentReport {
    fn new(file: &str, index: usize, line: usize) -> Self {
        Self {
            file: file.to_owned(),
            index,
            item: None,
            line,
            api_version: String::new(),
            kind: String::new(),
            namespace: String::new(),
            name: String::new(),
            status: Status::Valid,
            errors: Vec::new(),
            warnings: Vec::new(),
            output: None,
        }
    }
}

/// Judges one document of `file`; a `List` yields one report per item, an
/// empty document none.
pub fn check_chunk(file: &str, index: usize, chunk: Chunk<'_>, settings: &Settings, now: &Time) -> Vec<DocumentReport> {
    let value = match yaml::parse(chunk) {
        Ok(Some(value)) => value,
        Ok(None) => return Vec::new(),
        Err(e) => {
            let mut report = DocumentReport::new(file, index, e.line);
            report.status = Status::Invalid;
            report.errors.push(Problem {
                field: None,
                reason: None,
                message: format!("YAML syntax error: {}", e.message),
                line: e.line,
                column: e.column,
            });
            return vec![report];
        }
    };
    let is_list =
        value.get("kind").and_then(Value::as_str) == Some("List") && value.get("items").is_some_and(Value::is_array);
    let mut reports = match value {
        Value::Object(mut list) if is_list => {
            let items = match list.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            let mut reports = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let mut report = judge(file, index, chunk.content_line(), item, settings, now);
                report.item = Some(i);
                reports.push(report);
            }
            reports
        }
        value => vec![judge(file, index, chunk.content_line(), value, settings, now)],
    };
    // Positions cost a second parse: only documents with something to report need them.
    if reports.iter().any(needs_positions) {
        let positions = yaml::positions(chunk);
        for report in &mut reports {
            let node = match report.item {
                Some(i) => positions
                    .as_ref()
                    .and_then(|p| p.child("items"))
                    .and_then(|items| items.item(i)),
                None => positions.as_ref(),
            };
            place(report, node);
        }
    }
    reports
}

/// Problems in the order a reader meets them in the file.
fn in_file_order(problems: &mut [Problem]) {
    problems.sort_by_key(|p| (p.line, p.column));
}

fn needs_positions(report: &DocumentReport) -> bool {
    !report.errors.is_empty() || !report.warnings.is_empty()
}

/// Puts the document's start line and each problem's line and column in place.
fn place(report: &mut DocumentReport, node: Option<&Positions>) {
    let Some(node) = node else { return };
    report.line = node.start().0;
    for problem in report.errors.iter_mut().chain(report.warnings.iter_mut()) {
        let (line, column) = match &problem.field {
            Some(field) => node.locate(field),
            None => node.start(),
        };
        problem.line = line;
        problem.column = column;
    }
    in_file_order(&mut report.errors);
    in_file_order(&mut report.warnings);
}

fn text(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn judge(file: &str, index: usize, line: usize, object: Value, settings: &Settings, now: &Time) -> DocumentReport {
    let mut report = DocumentReport::new(file, index, line);
    report.api_version = text(&object, "/apiVersion");
    report.kind = text(&object, "/kind");
    report.namespace = text(&object, "/metadata/namespace");
    report.name = text(&object, "/metadata/name");
    let document_error = |report: &mut DocumentReport, message: String| {
        report.status = Status::Invalid;
        report.errors.push(Problem {
            field: None,
            reason: None,
            message,
            line,
            column: 1,
        });
    };
    if !object.is_object() {
        document_error(
            &mut report,
            "a document must be a mapping with apiVersion and kind".to_owned(),
        );
        return report;
    }
    let Some(kind) = Kind::from_type_meta(&report.api_version, &report.kind) else {
        let ours = report.api_version.split('/').next() == Some(GROUP) && Kind::from_name(&report.kind).is_some();
        let near = near_miss(&report.api_version, &report.kind);
        if ours {
            let message = format!(
                "{} is not served for {}: use {GROUP}/v1alpha1 or {GROUP}/v1beta1",
                report.api_version, report.kind
            );
            document_error(&mut report, message);
        } else if settings.reject_unknown {
            let message = format!(
                "{} {} is not a kind prewarm validates (--reject-unknown)",
                report.api_version, report.kind
            );
            document_error(&mut report, message);
        } else {
            report.status = Status::Skipped;
        }
        if let Some(meant) = near {
            report.warnings.push(Problem {
                field: None,
                reason: None,
                message: format!(
                    "{} {} is not a kind prewarm validates, so it was not checked: did you mean {meant}?",
                    report.api_version, report.kind
                ),
                line,
                column: 1,
            });
        }
        if settings.keep_defaulted {
            report.output = Some(object);
        }
        return report;
    };
    let mut found = metadata_errors(kind, &object);
    let unknown = match settings.unknown_fields {
        UnknownFields::Ignore => Vec::new(),
        UnknownFields::Error | UnknownFields::Warn => unknown_field_problems(kind, &object),
    };
    if settings.unknown_fields == UnknownFields::Error {
        found.extend(unknown);
    } else {
        report.warnings.extend(unknown);
    }
    let defaulted = kind.with_defaults(&object, now);
    let key = (report.kind.clone(), report.namespace.clone(), report.name.clone());
    let old = settings.old.get(&key).map(|old| kind.with_defaults(old, now));
    let operation = if old.is_some() {
        Operation::Update
    } else {
        Operation::Create
    };
    // The name too, as the webhook reads it: a kind's own name rule (AdvancedCronJob's).
    let request = Request {
        name: &report.name,
        ..Request::of(kind, operation, Some(Spec::of(&defaulted)), old.as_ref().map(Spec::of))
    };
    match admission::validate(&request, &settings.policy) {
        Decision::Allowed { warnings } => report.warnings.extend(warnings.iter().map(|w| warning(w, line))),
        Decision::Forbidden { message, .. } => document_error(&mut report, message),
        Decision::Invalid { errors, warnings } => {
            report.status = Status::Invalid;
            report.errors.extend(errors.iter().map(|e| Problem {
                field: Some(e.path.to_string()),
                reason: Some(e.reason.cause_type()),
                message: e.body(),
                line,
                column: 1,
            }));
            report.warnings.extend(warnings.iter().map(|w| warning(w, line)));
        }
    }
    if !found.is_empty() {
        report.status = Status::Invalid;
        // Metadata and unknown fields first: the API server refuses those before any webhook runs.
        found.append(&mut report.errors);
        report.errors = found;
    }
    if settings.keep_defaulted {
        report.output = Some(defaulted);
    }
    report
}

/// Warnings read `field: message`.
fn warning(text: &str, line: usize) -> Problem {
    let (field, message) = match text.split_once(": ") {
        Some((field, message)) if field.starts_with("spec") => (Some(field.to_owned()), message.to_owned()),
        _ => (None, text.to_owned()),
    };
    Problem {
        field,
        reason: None,
        message,
        line,
        column: 1,
    }
}

/// A group or kind one edit away from one prewarm validates (`ImagePulljob`,
/// `apps.kruse.io/v1alpha1`): the kind the author most likely meant.
fn near_miss(api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let group_meant = if group == GROUP {
        Some(GROUP)
    } else {
        prewarm_api::schema::one_edit_away(group, [GROUP])
    };
    let kinds = Kind::ALL.map(Kind::name);
    let kind_meant = if kinds.contains(&kind) {
        Some(kinds.iter().copied().find(|k| *k == kind).unwrap_or(kind))
    } else {
        prewarm_api::schema::one_edit_away(kind, kinds)
    };
    match (group_meant, kind_meant) {
        // Both right is a kind prewarm validates, or a version it does not serve (reported apart).
        (Some(meant_group), Some(meant_kind)) if meant_group != group || meant_kind != kind => {
            let version = if Kind::VERSIONS.contains(&version) {
                version
            } else {
                "v1beta1"
            };
            Some(format!("{meant_group}/{version} {meant_kind}"))
        }
        _ => None,
    }
}

/// What kube-apiserver refuses in `metadata` before admission: a missing name
/// (without `generateName`), a name that is not a DNS subdomain, a namespace
/// that is not a DNS label. In its words.
fn metadata_errors(kind: Kind, object: &Value) -> Vec<Problem> {
    const SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
    const LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
    let problem = |field: &str, reason: &'static str, message: String| Problem {
        field: Some(field.to_owned()),
        reason: Some(reason),
        message,
        line: 1,
        column: 1,
    };
    let mut problems = Vec::new();
    let metadata = object.get("metadata");
    let text = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str);
    match (text("name"), text("generateName")) {
        (None | Some(""), None | Some("")) => problems.push(problem(
            "metadata.name",
            "FieldValueRequired",
            "Required value: name or generateName is required".to_owned(),
        )),
        (Some(name), _) if !name.is_empty() => {
            if let Err(detail) = prewarm_api::names::dns_subdomain(name) {
                let detail = if detail.starts_with("a lowercase") {
                    SUBDOMAIN.to_owned()
                } else {
                    detail
                };
                problems.push(problem(
                    "metadata.name",
                    "FieldValueInvalid",
                    format!("Invalid value: {name:?}: {detail}"),
                ));
            }
        }
        _ => {}
    }
    if let Some(namespace) = text("namespace").filter(|n| !n.is_empty() && kind.namespaced()) {
        let label = namespace.len() <= 63
            && namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !namespace.starts_with('-')
            && !namespace.ends_with('-');
        if !label {
            let detail = if namespace.len() > 63 {
                "must be no more than 63 characters"
            } else {
                LABEL
            };
            problems.push(problem(
                "metadata.namespace",
                "FieldValueInvalid",
                format!("Invalid value: {namespace:?}: {detail}"),
            ));
        }
    }
    problems
}

/// The fields `kind`'s schema does not have, each with the one it is one edit away from.
fn unknown_field_problems(kind: Kind, object: &Value) -> Vec<Problem> {
    prewarm_api::schema::unknown_fields(kind, object)
        .into_iter()
        .map(|unknown| Problem {
            message: match &unknown.suggestion {
                Some(meant) => format!("unknown field; did you mean {meant}?"),
                None => "unknown field".to_owned(),
            },
            field: Some(unknown.path.to_string()),
            reason: Some("FieldValueInvalid"),
            line: 1,
            column: 1,
        })
        .collect()
}
