//! Defaults and validates every prewarm object in the YAML files given, with the
//! rules the webhook applies (ImagePullJobGate on), and prints each verdict:
//! `cargo run -p prewarm-api --example check -- api/tests/fixtures/seed`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use json_patch::Patch;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::admission::{self, Decision, Kind, Operation, Request};
use prewarm_api::gates::FeatureGates;
use serde_json::Value;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if args.is_empty() {
        eprintln!("usage: check FILE_OR_DIR...");
        return ExitCode::from(2);
    }
    let gates = FeatureGates::parse("ImagePullJobGate=true").unwrap_or_default();
    let mut files = Vec::new();
    for arg in &args {
        collect(arg, &mut files);
    }
    let mut invalid = 0;
    for file in &files {
        match check_file(file, &gates) {
            Ok(bad) => invalid += bad,
            Err(message) => {
                eprintln!("{}: {message}", file.display());
                return ExitCode::from(2);
            }
        }
    }
    println!("{} files, {invalid} invalid objects", files.len());
    if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            paths.iter().for_each(|p| collect(p, files));
        }
        Err(_) if path.extension().is_some_and(|e| e == "yaml" || e == "yml") => files.push(path.to_owned()),
        Err(_) => {}
    }
}

fn check_file(file: &Path, gates: &FeatureGates) -> Result<usize, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let documents: Vec<Value> = serde_saphyr::from_multiple(&text).map_err(|e| e.to_string())?;
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut invalid = 0;
    for object in documents {
        let kind_and_version = (object["apiVersion"].as_str(), object["kind"].as_str());
        let (Some(api_version), Some(kind_name)) = kind_and_version else {
            continue;
        };
        let Some(kind) = Kind::from_type_meta(api_version, kind_name) else {
            println!("{}: {kind_name} skipped", file.display());
            continue;
        };
        let mut defaulted = object.clone();
        let operations = kind.defaults(&object, &now);
        json_patch::patch(&mut defaulted, &Patch(operations)).map_err(|e| e.to_string())?;
        let request = Request {
            kind,
            operation: Operation::Create,
            sub_resource: None,
            object: Some(&defaulted),
            old_object: None,
        };
        let name = object["metadata"]["name"].as_str().unwrap_or("<unnamed>");
        match admission::validate(&request, gates) {
            Decision::Allowed { warnings } => {
                println!("{}: {kind} {name}: valid", file.display());
                warnings.iter().for_each(|w| println!("  warning: {w}"));
            }
            Decision::Forbidden { message, .. } => {
                invalid += 1;
                println!("{}: {kind} {name}: forbidden: {message}", file.display());
            }
            Decision::Invalid { errors, warnings } => {
                invalid += 1;
                println!("{}: {kind} {name}: invalid", file.display());
                errors.iter().for_each(|e| println!("  error: {e}"));
                warnings.iter().for_each(|w| println!("  warning: {w}"));
            }
        }
    }
    Ok(invalid)
}
