//! `prewarm-webhook validate`, run as a GitOps pipeline runs it: exit codes,
//! counts, field paths and line numbers in every output format, stdin, lists,
//! JSON, syntax errors, unreadable paths and `--old`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

const GATE_ON: &str = "--feature-gates=ImagePullJobGate=true";

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/validate")
        .join(name)
        .display()
        .to_string()
}

fn seed_dir() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../api/tests/fixtures/seed")
        .display()
        .to_string()
}

/// Runs `validate` with `args` and `stdin`; exit code, stdout, stderr.
fn validate(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_prewarm-webhook"))
        .arg("validate")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

fn json_report(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--output", "json"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = validate(&all, "");
    (
        code,
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}")),
    )
}

/// (document, field, reason, line, column) of every error.
fn errors(report: &Value) -> Vec<(u64, String, String, u64, u64)> {
    report["documents"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| {
            d["errors"].as_array().unwrap().iter().map(move |e| {
                (
                    d["document"].as_u64().unwrap(),
                    e["field"].as_str().unwrap_or("-").to_owned(),
                    e["reason"].as_str().unwrap_or("-").to_owned(),
                    e["line"].as_u64().unwrap(),
                    e["column"].as_u64().unwrap(),
                )
            })
        })
        .collect()
}

fn summary(report: &Value) -> [u64; 7] {
    let s = &report["summary"];
    [
        "files",
        "documents",
        "valid",
        "invalid",
        "skipped",
        "errors",
        "warnings",
    ]
    .map(|k| s[k].as_u64().unwrap())
}

#[test]
fn every_seed_example_passes_except_the_two_shown_with_both_selectors() {
    let (code, report) = json_report(&[GATE_ON, &seed_dir()]);
    assert_eq!(code, 1);
    assert_eq!(summary(&report), [17, 17, 13, 2, 2, 2, 0]);
    let invalid: Vec<&str> = report["documents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"] == "invalid")
        .map(|d| d["file"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        invalid,
        [
            "01-imagepulljob-names-and-labels.yaml",
            "09-imagelistpulljob-names-and-labels.yaml"
        ]
    );
    // The seed examples without the two "both alternatives" files are all valid.
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(seed_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.contains("names-and-labels") {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    let (code, stdout, _) = validate(&[GATE_ON, dir.path().to_str().unwrap()], "");
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.ends_with("15 documents in 15 files: 13 valid, 0 invalid, 2 skipped (0 errors, 0 warnings)\n"),
        "{stdout}"
    );
}

#[test]
fn with_the_gate_off_jobs_are_refused_as_the_server_would() {
    let (code, report) = json_report(&[&fixture("mixed.yaml")]);
    assert_eq!(code, 1);
    let refused: Vec<(u64, String)> = errors(&report).into_iter().map(|(d, f, ..)| (d, f)).collect();
    assert_eq!(refused, [(1, "-".to_owned()), (4, "-".to_owned())]);
    assert!(
        report["documents"][0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ImagePullJobGate")
    );
}

#[test]
fn each_rule_reports_its_field_reason_and_line() {
    let (code, report) = json_report(&[GATE_ON, &fixture("violations.yaml")]);
    assert_eq!(code, 1);
    let expected: Vec<(u64, &str, &str, u64, u64)> = vec![
        (1, "spec.podSelector", "FieldValueForbidden", 10, 3),
        (2, "spec.selector.names[1]", "FieldValueDuplicate", 22, 7),
        (3, "spec.image", "FieldValueInvalid", 29, 3),
        (4, "spec.parallelism", "FieldValueInvalid", 37, 3),
        (
            5,
            "spec.completionPolicy.activeDeadlineSeconds",
            "FieldValueInvalid",
            47,
            5,
        ),
        (
            6,
            "spec.completionPolicy.ttlSecondsAfterFinished",
            "FieldValueForbidden",
            59,
            5,
        ),
        (7, "spec.images[1]", "FieldValueDuplicate", 68, 5),
        (8, "spec.images[nginx].tags[1].tag", "FieldValueDuplicate", 80, 9),
        (
            9,
            "spec.images[ubuntu].tags[0].pullPolicy.ttlSecondsAfterFinished",
            "FieldValueRequired",
            91,
            9,
        ),
        (10, "-", "-", 93, 1),
    ];
    let expected: Vec<(u64, String, String, u64, u64)> = expected
        .into_iter()
        .map(|(d, f, r, l, c)| (d, f.to_owned(), r.to_owned(), l, c))
        .collect();
    assert_eq!(errors(&report), expected);
    assert_eq!(summary(&report), [1, 10, 0, 10, 0, 10, 0]);
}

#[test]
fn mixed_files_count_valid_invalid_and_skipped_documents() {
    let (code, report) = json_report(&[GATE_ON, &fixture("mixed.yaml")]);
    assert_eq!(code, 1);
    assert_eq!(summary(&report), [1, 4, 2, 1, 1, 1, 1]);
    let statuses: Vec<(&str, u64, u64)> = report["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["status"].as_str().unwrap(),
                d["document"].as_u64().unwrap(),
                d["line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("valid", 1, 1),
            ("skipped", 3, 13),
            ("invalid", 4, 20),
            ("valid", 5, 32)
        ]
    );
    assert_eq!(
        errors(&report),
        [(4, "spec.selector".to_owned(), "FieldValueForbidden".to_owned(), 27, 3)]
    );
    let warning = &report["documents"][2]["warnings"][0];
    assert_eq!(
        (warning["field"].as_str(), warning["line"].as_u64()),
        (Some("spec.image"), Some(26))
    );
    // --reject-unknown fails the ConfigMap too.
    let (_, report) = json_report(&[GATE_ON, "--reject-unknown", &fixture("mixed.yaml")]);
    assert_eq!(summary(&report), [1, 4, 2, 2, 0, 2, 1]);
}

#[test]
fn lists_json_and_syntax_errors() {
    let (_, report) = json_report(&[GATE_ON, &fixture("list.yaml")]);
    assert_eq!(
        errors(&report),
        [(
            1,
            "spec.completionPolicy.type".to_owned(),
            "FieldValueNotSupported".to_owned(),
            17,
            7
        )]
    );
    assert_eq!(report["documents"][1]["item"], 1);
    assert_eq!(report["documents"][1]["name"], "in-list-bad");

    // An impossible Secret name is a warning, located like an error.
    let (_, report) = json_report(&[GATE_ON, &fixture("job.json")]);
    assert!(errors(&report).is_empty(), "{report:#}");
    let warning = &report["documents"][0]["warnings"][0];
    assert_eq!(
        (&warning["field"], &warning["line"], &warning["column"]),
        (&json!("spec.pullSecrets[1]"), &json!(7), &json!(27)),
        "{report:#}"
    );
    assert_eq!(report["documents"][0]["namespace"], "ci");

    let (code, report) = json_report(&[GATE_ON, &fixture("syntax-error.yaml")]);
    assert_eq!(code, 1);
    assert_eq!(summary(&report), [1, 3, 2, 1, 0, 1, 0]);
    let (document, _, _, line, _) = errors(&report)[0].clone();
    assert_eq!((document, line), (2, 13));
    assert!(
        report["documents"][1]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("YAML syntax error")
    );
}

#[test]
fn stdin_is_read_and_named() {
    let manifest = std::fs::read_to_string(fixture("list.yaml")).unwrap();
    let (code, stdout, _) = validate(&[GATE_ON, "--stdin-name", "helm-output.yaml", "-"], &manifest);
    assert_eq!(code, 1);
    assert!(stdout.starts_with("helm-output.yaml:17:7: error: ImagePullJob in-list-bad (document 1, items[1]): spec.completionPolicy.type: Unsupported value"), "{stdout}");
    let (code, stdout, _) = validate(
        &[GATE_ON, "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n",
    );
    assert_eq!(code, 0);
    assert!(
        stdout.ends_with("1 document in 1 file: 0 valid, 0 invalid, 1 skipped (0 errors, 0 warnings)\n"),
        "{stdout}"
    );
}

#[test]
fn unreadable_input_and_usage_errors_exit_2() {
    let (code, _, stderr) = validate(&[GATE_ON, "/nonexistent/manifests"], "");
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/manifests"), "{stderr}");
    let (code, _, stderr) = validate(&["--feature-gates=NoSuchGate=true", &fixture("list.yaml")], "");
    assert_eq!(code, 2);
    assert!(stderr.contains("NoSuchGate"), "{stderr}");
    let (code, _, _) = validate(&[], "");
    assert_eq!(code, 2);
}

#[test]
fn an_admins_caps_apply_offline_as_in_the_cluster() {
    let job = "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: greedy\nspec:\n  image: nginx:1.25\n  pullPolicy:\n    timeoutSeconds: 7200\n    backoffLimit: 3\n  completionPolicy:\n    type: Always\n";
    let (code, stdout, _) = validate(&[GATE_ON, "-"], job);
    assert_eq!(code, 0, "uncapped, as OpenKruise: {stdout}");
    let (code, stdout, _) = validate(&[GATE_ON, "--max-timeout-seconds=3600", "-"], job);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("spec.pullPolicy.timeoutSeconds: Invalid value: 7200: must be at most 3600, the most this cluster allows (prewarm-webhook --max-timeout-seconds)"),
        "{stdout}"
    );
    // A cap below the default every job without the field gets is refused at once.
    let (code, _, stderr) = validate(&[GATE_ON, "--max-backoff-limit=1", "-"], job);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--max-backoff-limit")
            && stderr.contains("1 is below 3, the backoffLimit a job without one is given"),
        "{stderr}"
    );
}

#[test]
fn old_objects_make_updates_with_immutability() {
    let (code, report) = json_report(&[
        GATE_ON,
        "--old",
        &fixture("old/stored.yaml"),
        &fixture("old/changed.yaml"),
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        errors(&report),
        [(1, "spec.pullSecrets".to_owned(), "FieldValueInvalid".to_owned(), 8, 3)]
    );
    // Without --old both are creates, and valid.
    let (code, _) = json_report(&[GATE_ON, &fixture("old/changed.yaml")]);
    assert_eq!(code, 0);
    // With the gate off, the metadata-only update still passes: cleanup never blocks.
    let (_, report) = json_report(&["--old", &fixture("old/stored.yaml"), &fixture("old/changed.yaml")]);
    assert_eq!(report["documents"][1]["status"], "valid");
}

#[test]
fn warnings_fail_only_when_asked() {
    let manifest =
        "apiVersion: apps.kruise.io/v1beta1\nkind: ImagePullJob\nmetadata: {name: w}\nspec:\n  image: nginx\n";
    let (code, stdout, _) = validate(&[GATE_ON, "-"], manifest);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("<stdin>:5:3: warning: ImagePullJob w (document 1): spec.image:"),
        "{stdout}"
    );
    let (code, _, _) = validate(&[GATE_ON, "--fail-on-warning", "-"], manifest);
    assert_eq!(code, 1);
}

#[test]
fn text_junit_and_github_formats() {
    let file = fixture("mixed.yaml");
    let (_, text, _) = validate(&[GATE_ON, &file], "");
    assert_eq!(
        text,
        format!(
            "{file}:27:3: error: ImagePullJob default/bad (document 4): spec.selector: Forbidden: names and a label selector (matchLabels, matchExpressions) are mutually exclusive: set one of them\n\
             {file}:26:3: warning: ImagePullJob default/bad (document 4): spec.image: \"nginx\" resolves to the moving tag \"latest\" and imagePullPolicy is IfNotPresent: nodes that already have some \"latest\" keep it; pin a tag or digest, or use imagePullPolicy Always\n\
             4 documents in 1 file: 2 valid, 1 invalid, 1 skipped (1 error, 1 warning)\n"
        )
    );

    let (_, junit, _) = validate(&[GATE_ON, "--output", "junit", &file], "");
    assert!(junit.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"prewarm validate\" tests=\"4\" failures=\"1\" skipped=\"1\">"), "{junit}");
    assert_eq!(junit.matches("<testcase ").count(), 4);
    assert!(
        junit.contains("<failure type=\"invalid\" message=\"spec.selector: Forbidden: names and a label selector"),
        "{junit}"
    );
    assert!(junit.contains(">line 27: spec.selector: Forbidden"), "{junit}");
    assert!(
        junit.contains("<skipped message=\"v1 ConfigMap is not a kind prewarm validates\"/>"),
        "{junit}"
    );

    let (_, github, _) = validate(&[GATE_ON, "--output", "github", &file], "");
    let lines: Vec<&str> = github.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "::error file={file},line=27,col=3,title=prewarm%3A ImagePullJob default/bad::spec.selector: Forbidden: names and a label selector (matchLabels, matchExpressions) are mutually exclusive: set one of them"
        )
    );
    assert!(
        lines[1].starts_with(&format!("::warning file={file},line=26,col=3,")),
        "{github}"
    );
    assert_eq!(
        lines[2],
        "4 documents in 1 file: 2 valid, 1 invalid, 1 skipped (1 error, 1 warning)"
    );
}

#[test]
fn show_defaults_prints_every_document_defaulted_in_order() {
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\napiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata: {name: j}\nspec:\n  image: nginx:1.9.1\n  x-unknown: kept\n";
    // Ignored unknown fields are kept in the output, as written.
    let (code, stdout, stderr) = validate(&[GATE_ON, "--show-defaults", "--unknown-fields=ignore", "-"], manifest);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.ends_with("2 documents in 1 file: 1 valid, 0 invalid, 1 skipped (0 errors, 0 warnings)\n"),
        "{stderr}"
    );
    let documents: Vec<Value> = serde_saphyr::from_multiple(&stdout).unwrap();
    assert_eq!(documents.len(), 2);
    assert_eq!(documents[0]["kind"], "ConfigMap");
    let spec = &documents[1]["spec"];
    assert_eq!(spec["completionPolicy"]["type"], "Always");
    assert_eq!(spec["pullPolicy"]["timeoutSeconds"], 600);
    assert_eq!(spec["imagePullPolicy"], "IfNotPresent");
    assert_eq!(spec["x-unknown"], "kept");
}

#[test]
fn an_alias_bomb_is_an_invalid_document_not_an_exhausted_machine() {
    let mut bomb = String::from(
        "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata: {name: bomb}\nx0: &x0 [a, a, a, a, a, a, a, a, a, a]\n",
    );
    for level in 1..10 {
        let previous = vec![format!("*x{}", level - 1); 10].join(", ");
        bomb.push_str(&format!("x{level}: &x{level} [{previous}]\n"));
    }
    let (code, stdout, _) = validate(&[GATE_ON, "-"], &bomb);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("more than 1000000 nodes"), "{stdout}");
}

/// What a cluster's `kubectl apply` refuses, `validate` refuses too (issue #30):
/// misspelt and unknown fields with a suggestion, metadata the API server refuses,
/// and typos of prewarm's kinds and group as warnings naming the intended one.
#[test]
fn what_the_cluster_refuses_is_refused_offline() {
    let manifest = "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  name: job\nspec:\n  image: nginx:1.9.1\n  paralelism: 3\n  selector: {name: [node-1]}\n  pullPolicy:\n    timeoutSecond: 60\n    backoffLimit: 3\n";
    let (code, stdout, _) = validate(&[GATE_ON, "-"], manifest);
    assert_eq!(code, 1, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "<stdin>:7:3: error: ImagePullJob job (document 1): spec.paralelism: unknown field; did you mean spec.parallelism?"
    );
    assert_eq!(
        lines[1],
        "<stdin>:8:14: error: ImagePullJob job (document 1): spec.selector.name: unknown field; did you mean spec.selector.names?"
    );
    assert_eq!(
        lines[2],
        "<stdin>:10:5: error: ImagePullJob job (document 1): spec.pullPolicy.timeoutSecond: unknown field; did you mean spec.pullPolicy.timeoutSeconds?"
    );
    let (code, stdout, _) = validate(&[GATE_ON, "--unknown-fields=warn", "-"], manifest);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("warning: ImagePullJob job (document 1): spec.paralelism: unknown field"),
        "{stdout}"
    );
    let (code, stdout, _) = validate(&[GATE_ON, "--unknown-fields=ignore", "-"], manifest);
    assert_eq!((code, stdout.contains("unknown field")), (0, false), "{stdout}");

    let metadata = "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata:\n  namespace: default\nspec: {image: nginx:1.9.1}\n---\napiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata: {name: Bad_Name}\nspec: {image: nginx:1.9.1}\n---\napiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata: {generateName: warm-}\nspec: {image: nginx:1.9.1}\n";
    let (code, stdout, _) = validate(&[GATE_ON, "-"], metadata);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("(document 1): metadata.name: Required value: name or generateName is required"),
        "{stdout}"
    );
    assert!(stdout.contains("(document 2): metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is"), "{stdout}");
    assert!(
        !stdout.contains("document 3): metadata"),
        "generateName is enough: {stdout}"
    );

    let typos = "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePulljob\nmetadata: {name: a}\n---\napiVersion: apps.kruse.io/v1alpha1\nkind: ImagePullJob\nmetadata: {name: b}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
    let (code, stdout, _) = validate(&[GATE_ON, "-"], typos);
    assert_eq!(code, 0, "skipped with warnings: {stdout}");
    assert!(stdout.contains("<stdin>:1:1: warning: ImagePulljob a (document 1): apps.kruise.io/v1alpha1 ImagePulljob is not a kind prewarm validates, so it was not checked: did you mean apps.kruise.io/v1alpha1 ImagePullJob?"), "{stdout}");
    assert!(stdout.contains("(document 2): apps.kruse.io/v1alpha1 ImagePullJob is not a kind prewarm validates, so it was not checked: did you mean apps.kruise.io/v1alpha1 ImagePullJob?"), "{stdout}");
    assert!(
        !stdout.contains("ConfigMap c (document 3)"),
        "an unrelated kind is skipped quietly: {stdout}"
    );
    let (code, _, _) = validate(&[GATE_ON, "--fail-on-warning", "-"], typos);
    assert_eq!(code, 1, "a pipeline can make a typo fatal");
}

/// A value of the wrong type says what the field accepts, in Kubernetes'
/// words, with no decoder or Rust type name, in `validate` and the webhook alike.
#[test]
fn wrong_types_are_explained_in_kubernetes_words() {
    let manifest = "apiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata: {name: a}\nspec:\n  image: nginx:1.9.1\n  pullPolicy: {timeoutSeconds: \"600\"}\n---\napiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata: {name: b}\nspec:\n  image: nginx:1.9.1\n  parallelism: 1e+32\n---\napiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata: {name: c}\nspec:\n  image: nginx:1.9.1\n  parallelism: \"2147483648\"\n---\napiVersion: apps.kruise.io/v1alpha1\nkind: ImagePullJob\nmetadata: {name: d}\nspec:\n  image: nginx:1.9.1\n  selector: {names: node-1}\n";
    let (code, stdout, _) = validate(&[GATE_ON, "-"], manifest);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("<stdin>:6:16: error: ImagePullJob a (document 1): spec.pullPolicy.timeoutSeconds: Invalid value: \"600\": must be an integer"), "{stdout}");
    let int32 = "must be at most 2147483647 (an int32), or a percentage such as \"25%\"";
    assert!(
        stdout.contains(&format!(
            "ImagePullJob b (document 2): spec.parallelism: Invalid value: 1e+32: {int32}"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "ImagePullJob c (document 3): spec.parallelism: Invalid value: \"2147483648\": {int32}"
        )),
        "unquoted and quoted alike: {stdout}"
    );
    assert!(
        stdout.contains("ImagePullJob d (document 4): spec.selector.names: Invalid value: \"node-1\": must be a list"),
        "{stdout}"
    );
    for jargon in ["invalid type", "expected", "i32", "IntOrString", "sequence"] {
        assert!(!stdout.contains(jargon), "{jargon}: {stdout}");
    }
}

#[test]
fn a_yaml_syntax_error_names_its_line_and_document_once() {
    let (code, stdout, _) = validate(
        &[GATE_ON, "-"],
        "apiVersion: v1\nkind: ImagePullJob\nmetadata:\n  name: x\n   bad: 1\n",
    );
    assert_eq!(code, 1, "{stdout}");
    assert_eq!(
        stdout.lines().next(),
        Some("<stdin>:5:7: error: document 1: YAML syntax error: mapping values are not allowed in this context")
    );
}

#[test]
fn cron_jobs_are_known_offline_with_the_line_of_each_problem() {
    let (code, report) = json_report(&[GATE_ON, &fixture("cron-jobs.yaml")]);
    assert_eq!(code, 1);
    let expected: Vec<(u64, String, String, u64, u64)> = vec![
        (2, "spec.schedule", "FieldValueInvalid", 22, 3),
        (2, "spec.timezone", "FieldValueInvalid", 23, 3),
        (3, "spec.timeZone", "FieldValueInvalid", 37, 3),
        (3, "spec.template.jobTemplate", "FieldValueForbidden", 39, 5),
        (4, "metadata.name", "FieldValueInvalid", 46, 3),
    ]
    .into_iter()
    .map(|(d, f, r, l, c): (u64, &str, &str, u64, u64)| (d, f.to_owned(), r.to_owned(), l, c))
    .collect();
    assert_eq!(errors(&report), expected, "{report:#}");
    let text = report.to_string();
    assert!(text.contains("unknown field; did you mean spec.timeZone?"), "{text}");
    assert!(text.contains("at column 3: hour field"), "{text}");
    assert!(text.contains("prewarm runs image pre-warming only"), "{text}");
}
