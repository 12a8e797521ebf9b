//! README's commands as written (issue #30): every `cargo run -p PKG` names a
//! package cargo runs without `--bin`, and the section that needs no cluster
//! runs, its commands read from README itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::manifests::binary;
use serde_json::Value;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap()
}

/// The fenced `sh` blocks of the section whose heading starts with `heading`
/// (up to the next heading of the same level), each as one command line
/// (backslash continuations joined).
fn sh_blocks(text: &str, heading: &str) -> Vec<String> {
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let section = &text[start + heading.len()..];
    let end = section.find("\n## ").unwrap_or(section.len());
    let mut blocks = Vec::new();
    let mut rest = &section[..end];
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("```").unwrap();
        blocks.push(body[..close].replace("\\\n", " ").trim().to_owned());
        rest = &body[close + 3..];
    }
    blocks
}

#[test]
fn every_cargo_run_in_readme_runs_one_binary() {
    let metadata = Command::new("cargo")
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        metadata.status.success(),
        "{}",
        String::from_utf8_lossy(&metadata.stderr)
    );
    let metadata: Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let text = readme();
    let mut checked = 0;
    for line in text.lines().filter(|l| l.contains("cargo run")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.contains(&"--bin") {
            continue;
        }
        let Some(package) = words.iter().position(|w| *w == "-p").and_then(|i| words.get(i + 1)) else {
            continue;
        };
        let package = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == *package)
            .unwrap_or_else(|| panic!("README runs package {package}, which the workspace does not have"));
        let binaries = package["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
            .count();
        assert!(
            binaries == 1 || package["default_run"].is_string(),
            "`{}`: package {} has {binaries} binaries and no default-run, so cargo asks which",
            line.trim(),
            package["name"]
        );
        checked += 1;
    }
    assert!(checked >= 2, "README's cargo run commands were not found");
}

/// "Run it (no cluster needed)": the server as README starts it (the same
/// binary, built for the tests), then README's request with curl.
#[test]
fn the_no_cluster_section_runs_as_written() {
    let blocks = sh_blocks(&readme(), "## Run it (no cluster needed)");
    let [serve, request] = blocks.as_slice() else {
        panic!("expected the serve and curl blocks: {blocks:?}");
    };
    let args = serve
        .strip_prefix("cargo run --release -p prewarm-webhook -- ")
        .unwrap_or_else(|| panic!("{serve}"));
    let mut server = Command::new(binary("prewarm-webhook"))
        .args(args.split_whitespace())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while TcpStream::connect("127.0.0.1:9443").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the webhook did not listen on 9443"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let answer = Command::new("bash")
        .args(["-c", request])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(answer.status.success(), "{}", String::from_utf8_lossy(&answer.stderr));
    let review: Value = serde_json::from_slice(&answer.stdout).unwrap();
    assert_eq!(review["response"]["allowed"], false, "{review}");
    assert_eq!(review["response"]["status"]["code"], 403, "as README says: {review}");
}
