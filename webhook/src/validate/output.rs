//! The report formats: `text` for people, `json` for tools (shape documented in
//! the README), `junit` for CI test tabs, `github` for workflow annotations.

use std::fmt::Write;

use serde_json::{Value, json};

use super::check::{DocumentReport, Problem, Status};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Junit,
    Github,
}

/// Counts over all documents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub files: usize,
    pub documents: usize,
    pub valid: usize,
    pub invalid: usize,
    pub skipped: usize,
    pub errors: usize,
    pub warnings: usize,
}

impl Summary {
    pub fn of(files: usize, reports: &[DocumentReport]) -> Self {
        let count = |status| reports.iter().filter(|r| r.status == status).count();
        Self {
            files,
            documents: reports.len(),
            valid: count(Status::Valid),
            invalid: count(Status::Invalid),
            skipped: count(Status::Skipped),
            errors: reports.iter().map(|r| r.errors.len()).sum(),
            warnings: reports.iter().map(|r| r.warnings.len()).sum(),
        }
    }

    fn line(&self) -> String {
        let plural = |n: usize, word: &str| {
            if n == 1 {
                format!("{n} {word}")
            } else {
                format!("{n} {word}s")
            }
        };
        format!(
            "{} in {}: {} valid, {} invalid, {} skipped ({}, {})",
            plural(self.documents, "document"),
            plural(self.files, "file"),
            self.valid,
            self.invalid,
            self.skipped,
            plural(self.errors, "error"),
            plural(self.warnings, "warning"),
        )
    }
}

pub fn render(format: Format, reports: &[DocumentReport], summary: &Summary) -> String {
    match format {
        Format::Text => text(reports, summary),
        Format::Json => json(reports, summary),
        Format::Junit => junit(reports, summary),
        Format::Github => github(reports, summary),
    }
}

/// `ImagePullJob default/job` (or the kind alone when unnamed).
fn object_label(report: &DocumentReport) -> String {
    let kind = if report.kind.is_empty() {
        "document"
    } else {
        &report.kind
    };
    match (report.namespace.as_str(), report.name.as_str()) {
        (_, "") => kind.to_owned(),
        ("", name) => format!("{kind} {name}"),
        (namespace, name) => format!("{kind} {namespace}/{name}"),
    }
}

/// `document 2` or `document 2, items[3]`.
fn position_label(report: &DocumentReport) -> String {
    match report.item {
        Some(item) => format!("document {}, items[{item}]", report.index + 1),
        None => format!("document {}", report.index + 1),
    }
}

fn problem_text(problem: &Problem) -> String {
    match &problem.field {
        Some(field) => format!("{field}: {}", problem.message),
        None => problem.message.clone(),
    }
}

fn text(reports: &[DocumentReport], summary: &Summary) -> String {
    let mut out = String::new();
    for report in reports {
        // A document that could not be read has no kind: its position alone names it.
        let label = if report.kind.is_empty() && report.name.is_empty() {
            position_label(report)
        } else {
            format!("{} ({})", object_label(report), position_label(report))
        };
        for (severity, problems) in [("error", &report.errors), ("warning", &report.warnings)] {
            for problem in problems {
                let _ = writeln!(
                    out,
                    "{}:{}:{}: {severity}: {label}: {}",
                    report.file,
                    problem.line,
                    problem.column,
                    problem_text(problem)
                );
            }
        }
    }
    out.push_str(&summary.line());
    out.push('\n');
    out
}

fn problem_json(problem: &Problem) -> Value {
    json!({
        "field": problem.field, "reason": problem.reason, "message": problem.message,
        "line": problem.line, "column": problem.column,
    })
}

fn json(reports: &[DocumentReport], summary: &Summary) -> String {
    let documents: Vec<Value> = reports
        .iter()
        .map(|r| {
            json!({
                "file": r.file, "document": r.index + 1, "item": r.item, "line": r.line,
                "apiVersion": r.api_version, "kind": r.kind, "namespace": r.namespace, "name": r.name,
                "status": r.status.as_str(),
                "errors": r.errors.iter().map(problem_json).collect::<Vec<_>>(),
                "warnings": r.warnings.iter().map(problem_json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let body = json!({
        "summary": {
            "files": summary.files, "documents": summary.documents, "valid": summary.valid,
            "invalid": summary.invalid, "skipped": summary.skipped, "errors": summary.errors, "warnings": summary.warnings,
        },
        "documents": documents,
    });
    format!("{body:#}\n")
}

fn xml(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            '\n' => escaped.push_str("&#10;"),
            c if (c as u32) < 0x20 && c != '\t' => {}
            c => escaped.push(c),
        }
    }
    escaped
}

fn junit(reports: &[DocumentReport], summary: &Summary) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"prewarm validate\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
        summary.documents, summary.invalid, summary.skipped
    );
    let mut files: Vec<&str> = Vec::new();
    for report in reports {
        if !files.contains(&report.file.as_str()) {
            files.push(&report.file);
        }
    }
    for file in files {
        let in_file: Vec<&DocumentReport> = reports.iter().filter(|r| r.file == file).collect();
        let count = |status| in_file.iter().filter(|r| r.status == status).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" skipped=\"{}\">",
            xml(file),
            in_file.len(),
            count(Status::Invalid),
            count(Status::Skipped)
        );
        for report in in_file {
            let name = format!(
                "{} ({}, line {})",
                object_label(report),
                position_label(report),
                report.line
            );
            let _ = write!(out, "    <testcase classname=\"{}\" name=\"{}\"", xml(file), xml(&name));
            let details = |problems: &[Problem]| {
                problems
                    .iter()
                    .map(|p| format!("line {}: {}", p.line, problem_text(p)))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            match report.status {
                Status::Valid if report.warnings.is_empty() => out.push_str("/>\n"),
                Status::Valid => {
                    let _ = writeln!(
                        out,
                        ">\n      <system-out>{}</system-out>\n    </testcase>",
                        xml(&details(&report.warnings))
                    );
                }
                Status::Skipped => {
                    let message = format!("{} {} is not a kind prewarm validates", report.api_version, report.kind);
                    let _ = writeln!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml(&message)
                    );
                }
                Status::Invalid => {
                    let message = report.errors.first().map(problem_text).unwrap_or_default();
                    let _ = writeln!(
                        out,
                        ">\n      <failure type=\"invalid\" message=\"{}\">{}</failure>\n    </testcase>",
                        xml(&message),
                        xml(&details(&report.errors))
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// GitHub's escaping for workflow command data and properties.
fn github_data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn github_property(text: &str) -> String {
    github_data(text).replace(':', "%3A").replace(',', "%2C")
}

fn github(reports: &[DocumentReport], summary: &Summary) -> String {
    let mut out = String::new();
    for report in reports {
        let title = format!("prewarm: {}", object_label(report));
        for (command, problems) in [("error", &report.errors), ("warning", &report.warnings)] {
            for problem in problems {
                let _ = writeln!(
                    out,
                    "::{command} file={},line={},col={},title={}::{}",
                    github_property(&report.file),
                    problem.line,
                    problem.column,
                    github_property(&title),
                    github_data(&problem_text(problem))
                );
            }
        }
    }
    out.push_str(&summary.line());
    out.push('\n');
    out
}
