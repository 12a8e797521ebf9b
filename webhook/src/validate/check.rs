//! The verdict on one document, with the same `prewarm-api` calls as the
//! webhook: defaults applied first (as the mutating webhook would), then the
//! gates and rules of the validating webhook, as CREATE, or as UPDATE of the
//! matching `--old` object.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::GROUP;
use prewarm_api::admission::{self, Decision, Kind, Operation, Request};
use prewarm_api::gates::FeatureGates;
use prewarm_api::spec::Spec;
use serde_json::Value;

use super::yaml::{self, Chunk, Positions};

/// The stored objects an input may update, keyed by kind, namespace and name.
pub type OldObjects = HashMap<(String, String, String), Value>;

#[derive(Debug)]
pub struct Settings {
    pub gates: FeatureGates,
    pub reject_unknown: bool,
    pub old: OldObjects,
    pub keep_defaulted: bool,
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
        if settings.keep_defaulted {
            report.output = Some(object);
        }
        return report;
    };
    let defaulted = kind.with_defaults(&object, now);
    let key = (report.kind.clone(), report.namespace.clone(), report.name.clone());
    let old = settings.old.get(&key).map(|old| kind.with_defaults(old, now));
    let request = Request {
        kind,
        operation: if old.is_some() {
            Operation::Update
        } else {
            Operation::Create
        },
        sub_resource: None,
        object: Some(Spec::of(&defaulted)),
        old_object: old.as_ref().map(Spec::of),
    };
    match admission::validate(&request, &settings.gates) {
        Decision::Allowed { warnings } => report.warnings = warnings.iter().map(|w| warning(w, line)).collect(),
        Decision::Forbidden { message, .. } => document_error(&mut report, message),
        Decision::Invalid { errors, warnings } => {
            report.status = Status::Invalid;
            report.errors = errors
                .iter()
                .map(|e| Problem {
                    field: Some(e.path.to_string()),
                    reason: Some(e.reason.cause_type()),
                    message: e.body(),
                    line,
                    column: 1,
                })
                .collect();
            report.warnings = warnings.iter().map(|w| warning(w, line)).collect();
        }
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
