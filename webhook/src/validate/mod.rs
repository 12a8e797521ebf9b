//! `prewarm-webhook validate`: the webhook's verdicts on manifests, offline,
//! for GitOps pipelines: every problem with file, document, line and field path.

mod check;
mod output;
pub mod yaml;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Args;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::admission::Policy;
use prewarm_api::gates::FeatureGates;

pub use check::{DocumentReport, OldObjects, Problem, Settings, Status, UnknownFields, check_chunk};
pub use output::{Format, Summary, render};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Files, directories (searched recursively for .yaml, .yml and .json files), or - for stdin.
    #[arg(required = true, value_name = "PATH|-")]
    pub paths: Vec<PathBuf>,
    /// The file name to report for stdin.
    #[arg(long, default_value = "<stdin>")]
    pub stdin_name: String,
    /// Report format.
    #[arg(long, short, value_enum, default_value_t = Format::Text)]
    pub output: Format,
    /// Write every document, defaulted as the webhook would, to stdout as YAML
    /// (the report then goes to stderr).
    #[arg(long)]
    pub show_defaults: bool,
    /// Exit 1 on warnings too.
    #[arg(long)]
    pub fail_on_warning: bool,
    /// Fail documents of kinds prewarm does not validate instead of skipping them.
    #[arg(long)]
    pub reject_unknown: bool,
    /// Fields the kind's schema does not have (as a cluster's strict field
    /// validation refuses them): error, warn, or ignore.
    #[arg(long, value_enum, default_value_t = UnknownFields::Error)]
    pub unknown_fields: UnknownFields,
    /// Validate the inputs as UPDATEs of the objects in this file or directory,
    /// matched by kind, namespace and name.
    #[arg(long, value_name = "PATH")]
    pub old: Option<PathBuf>,
    /// Feature gates, as the server takes them: ImagePullJobGate=true,KruiseDaemon=true.
    #[arg(long, default_value = "", value_parser = FeatureGates::parse)]
    pub feature_gates: FeatureGates,
    #[command(flatten)]
    pub caps: crate::cli::CapsConfig,
}

/// Exit codes: 0 valid, 1 invalid (or warnings with --fail-on-warning), 2 unreadable input.
pub fn run(args: ValidateArgs) -> ExitCode {
    let (sources, mut unreadable) = read_sources(&args.paths, &args.stdin_name);
    let mut old = OldObjects::new();
    if let Some(path) = &args.old {
        let (old_sources, old_unreadable) = read_sources(std::slice::from_ref(path), &args.stdin_name);
        unreadable.extend(old_unreadable);
        match index_old(&old_sources) {
            Ok(index) => old = index,
            Err(message) => unreadable.push(message),
        }
    }
    for message in &unreadable {
        eprintln!("prewarm-webhook validate: {message}");
    }
    let settings = Settings {
        policy: Policy {
            gates: args.feature_gates,
            caps: args.caps.caps(),
            node_agent: None,
        },
        reject_unknown: args.reject_unknown,
        unknown_fields: args.unknown_fields,
        old,
        keep_defaulted: args.show_defaults,
    };
    let reports = check_sources(&sources, &settings);
    let summary = Summary::of(sources.len(), &reports);
    let report = render(args.output, &reports, &summary);
    let written = if args.show_defaults {
        let mut stdout = std::io::stdout().lock();
        let defaults = defaulted_yaml(&reports);
        std::io::stderr()
            .write_all(report.as_bytes())
            .and(stdout.write_all(defaults.as_bytes()))
    } else {
        std::io::stdout().lock().write_all(report.as_bytes())
    };
    if written.is_err() || !unreadable.is_empty() {
        return ExitCode::from(2);
    }
    if summary.invalid > 0 || (args.fail_on_warning && summary.warnings > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A file's name as reported, and its text.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

fn read_sources(paths: &[PathBuf], stdin_name: &str) -> (Vec<Source>, Vec<String>) {
    let mut sources = Vec::new();
    let mut unreadable = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => sources.push(Source {
                    name: stdin_name.to_owned(),
                    text,
                }),
                Err(e) => unreadable.push(format!("reading stdin: {e}")),
            }
            continue;
        }
        let mut files = Vec::new();
        if let Err(e) = collect_files(path, true, &mut files) {
            unreadable.push(format!("{}: {e}", path.display()));
        }
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => sources.push(Source {
                    name: file.display().to_string(),
                    text,
                }),
                Err(e) => unreadable.push(format!("{}: {e}", file.display())),
            }
        }
    }
    (sources, unreadable)
}

/// A named file is taken whatever its extension; directories contribute their
/// `.yaml`, `.yml` and `.json` files, in name order.
fn collect_files(path: &Path, named: bool, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let metadata = std::fs::metadata(path)?;
    if !metadata.is_dir() {
        let manifest = path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
        if named || manifest {
            files.push(path.to_owned());
        }
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        collect_files(&entry, false, files)?;
    }
    Ok(())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Judges every document of every source, on all CPUs, in input order.
pub fn check_sources(sources: &[Source], settings: &Settings) -> Vec<DocumentReport> {
    let work: Vec<(usize, usize, yaml::Chunk<'_>)> = sources
        .iter()
        .enumerate()
        .flat_map(|(s, source)| {
            yaml::split_documents(&source.text)
                .into_iter()
                .enumerate()
                .map(move |(d, c)| (s, d, c))
        })
        .collect();
    let now = now();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Vec<DocumentReport>)>> = Mutex::new(Vec::with_capacity(work.len()));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(work.len().div_ceil(256).max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut local = Vec::new();
                loop {
                    let start = next.fetch_add(64, Ordering::Relaxed);
                    if start >= work.len() {
                        break;
                    }
                    for (i, (s, d, chunk)) in work.iter().enumerate().skip(start).take(64) {
                        local.push((i, check_chunk(&sources[*s].name, *d, *chunk, settings, &now)));
                    }
                }
                if let Ok(mut results) = results.lock() {
                    results.extend(local);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().flat_map(|(_, reports)| reports).collect()
}

/// The objects of `--old`, by kind, namespace and name.
fn index_old(sources: &[Source]) -> Result<OldObjects, String> {
    let mut index = OldObjects::new();
    for source in sources {
        for chunk in yaml::split_documents(&source.text) {
            let value =
                yaml::parse(chunk).map_err(|e| format!("{}:{}:{}: {}", source.name, e.line, e.column, e.message))?;
            let Some(value) = value else { continue };
            let text = |pointer: &str| {
                value
                    .pointer(pointer)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let key = (text("/kind"), text("/metadata/namespace"), text("/metadata/name"));
            index.insert(key, value);
        }
    }
    Ok(index)
}

/// Every document as YAML, defaulted where prewarm knows its kind, in input order.
fn defaulted_yaml(reports: &[DocumentReport]) -> String {
    let mut out = String::new();
    for document in reports.iter().filter_map(|r| r.output.as_ref()) {
        match serde_saphyr::to_string(document) {
            Ok(yaml) => {
                out.push_str("---\n");
                out.push_str(&yaml);
            }
            Err(e) => eprintln!("prewarm-webhook validate: cannot write a document as YAML: {e}"),
        }
    }
    out
}
