//! Each rule, violated on its own and all together: the expected field paths and
//! reasons, every error in one report, in a stable order.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use common::*;
use prewarm_api::admission::Kind;
use prewarm_api::field::Reason::{self, *};
use prewarm_api::field::Report;
use serde_json::{Value, json};

fn job() -> Value {
    json!({
        "apiVersion": "apps.kruise.io/v1beta1",
        "kind": "ImagePullJob",
        "metadata": {"name": "job", "namespace": "default"},
        "spec": {
            "image": "nginx:1.9.1",
            "selector": {"names": ["node-1", "node-2"]},
            "completionPolicy": {"type": "Always"},
        }
    })
}

fn list_job() -> Value {
    json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "ImageListPullJob",
        "metadata": {"name": "list", "namespace": "default"},
        "spec": {"images": ["nginx:1.9.1", "busybox:1.29.2"], "completionPolicy": {"type": "Always"}}
    })
}

fn node_image() -> Value {
    json!({
        "apiVersion": "apps.kruise.io/v1beta1",
        "kind": "NodeImage",
        "metadata": {"name": "node-1"},
        "spec": {"images": {"nginx": {"tags": [{"tag": "1.9.1", "pullPolicy": {"ttlSecondsAfterFinished": 300}}]}}}
    })
}

/// `base` with each (JSON pointer, value) set; `Value::Null` removes the field.
fn with(base: Value, changes: &[(&str, Value)]) -> Value {
    let mut object = base;
    for (pointer, value) in changes {
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let key = key.replace("~1", "/").replace("~0", "~");
        let parent = object
            .pointer_mut(parent)
            .unwrap_or_else(|| panic!("no parent for {pointer}"));
        match (parent, value) {
            (Value::Object(map), Value::Null) => {
                map.remove(&key);
            }
            (Value::Object(map), value) => {
                map.insert(key, value.clone());
            }
            (Value::Array(items), value) => match key.parse::<usize>().unwrap() {
                index if index == items.len() => items.push(value.clone()),
                index => items[index] = value.clone(),
            },
            _ => panic!("{pointer}: parent is not a container"),
        }
    }
    object
}

fn check(kind: Kind, object: &Value) -> Report {
    kind.validate(&defaulted(kind, object), None)
}

fn assert_errors(kind: Kind, object: Value, expected: &[(&str, Reason)]) -> Report {
    let report = check(kind, &object);
    let expected: Vec<(String, Reason)> = expected.iter().map(|(p, r)| (p.to_string(), *r)).collect();
    assert_eq!(error_keys(&report), expected, "errors: {:#?}", report.errors);
    report
}

#[test]
fn the_base_objects_are_valid() {
    assert_errors(Kind::ImagePullJob, job(), &[]);
    assert_errors(Kind::ImageListPullJob, list_job(), &[]);
    assert_errors(Kind::NodeImage, node_image(), &[]);
}

#[test]
fn selector_rules() {
    let pod_selector = json!({"matchLabels": {"app": "web"}});
    assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/podSelector", pod_selector.clone())]),
        &[("spec.podSelector", Forbidden)],
    );
    // As in OpenKruise, an empty selector still counts as set.
    assert_errors(
        Kind::ImagePullJob,
        with(
            job(),
            &[
                ("/spec/selector", json!({})),
                ("/spec/podSelector", pod_selector.clone()),
            ],
        ),
        &[("spec.podSelector", Forbidden)],
    );
    assert_errors(
        Kind::ImagePullJob,
        with(
            job(),
            &[("/spec/selector", Value::Null), ("/spec/podSelector", pod_selector)],
        ),
        &[],
    );
    assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/selector/matchLabels", json!({"node-type": "xxx"}))]),
        &[("spec.selector", Forbidden)],
    );
    assert_errors(
        Kind::ImagePullJob,
        with(
            job(),
            &[("/spec/selector/names", json!(["node-1", "node-2", "node-1", "node-2"]))],
        ),
        &[
            ("spec.selector.names[2]", Duplicate),
            ("spec.selector.names[3]", Duplicate),
        ],
    );
    let report = assert_errors(
        Kind::ImagePullJob,
        with(
            job(),
            &[(
                "/spec/selector",
                json!({"matchLabels": {"bad key!": "v", "ok": "bad value!"}, "matchExpressions": [
                    {"key": "a", "operator": "In"},
                    {"key": "b", "operator": "Exists", "values": ["x"]},
                    {"key": "c", "operator": "Near", "values": ["x"]},
                ]}),
            )],
        ),
        &[
            ("spec.selector.matchLabels", Invalid),
            ("spec.selector.matchLabels[ok]", Invalid),
            ("spec.selector.matchExpressions[0].values", Required),
            ("spec.selector.matchExpressions[1].values", Forbidden),
            ("spec.selector.matchExpressions[2].operator", NotSupported),
        ],
    );
    assert!(
        report.errors[4]
            .to_string()
            .contains(r#"supported values: "In", "NotIn", "Exists", "DoesNotExist""#)
    );
}

#[test]
fn empty_names_target_no_node_and_say_so() {
    let report = assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/selector/names", json!([]))]),
        &[],
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("spec.selector.names: ") && w.contains("no node")),
        "{report:?}"
    );
}

#[test]
fn image_rules() {
    assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/image", json!(""))]),
        &[("spec.image", Required)],
    );
    assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/image", Value::Null)]),
        &[("spec.image", Required)],
    );
    let report = assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/image", json!("Nginx:1.9"))]),
        &[("spec.image", Invalid)],
    );
    assert_eq!(
        report.errors[0].to_string(),
        r#"spec.image: Invalid value: "Nginx:1.9": repository name must be lowercase (found "Nginx")"#
    );
    let digest = "nginx@sha256:c5dd085dcc7c78a296c80b87916831fd19a3f447d94b99580ccd19a052720211";
    assert_errors(Kind::ImagePullJob, with(job(), &[("/spec/image", json!(digest))]), &[]);
}

#[test]
fn latest_with_if_not_present_is_a_warning() {
    let report = assert_errors(Kind::ImagePullJob, with(job(), &[("/spec/image", json!("nginx"))]), &[]);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("spec.image: ") && w.contains("latest")),
        "{report:?}"
    );
    let report = assert_errors(
        Kind::ImagePullJob,
        with(
            job(),
            &[
                ("/spec/image", json!("nginx")),
                ("/spec/imagePullPolicy", json!("Always")),
            ],
        ),
        &[],
    );
    assert!(report.warnings.is_empty(), "{report:?}");
}

#[test]
fn parallelism_rules() {
    for ok in [
        json!(0),
        json!(10),
        json!("5"),
        json!("2147483647"),
        json!("25%"),
        json!("100%"),
        json!("1%"),
    ] {
        assert_errors(Kind::ImagePullJob, with(job(), &[("/spec/parallelism", ok)]), &[]);
    }
    for bad in [
        json!(-1),
        json!("-1"),
        json!("abc"),
        json!("150%"),
        json!("0%"),
        json!("x%"),
        json!(""),
        json!("2147483648"),
        json!("4294967295"),
    ] {
        let report = assert_errors(
            Kind::ImagePullJob,
            with(job(), &[("/spec/parallelism", bad)]),
            &[("spec.parallelism", Invalid)],
        );
        assert!(
            report.errors[0].detail.contains("greater than or equal to 0") || report.errors[0].detail.contains("25%")
        );
    }
    let report = check(Kind::ImagePullJob, &with(job(), &[("/spec/parallelism", json!(0))]));
    assert!(report.warnings.iter().any(|w| w.contains("pauses")), "{report:?}");
}

#[test]
fn deadline_must_cover_one_attempt() {
    let deadline = |ads: i64, timeout: Option<i64>| {
        let mut changes = vec![("/spec/completionPolicy/activeDeadlineSeconds", json!(ads))];
        if let Some(timeout) = timeout {
            changes.push(("/spec/pullPolicy", json!({"timeoutSeconds": timeout})));
        }
        with(job(), &changes)
    };
    assert_errors(Kind::ImagePullJob, deadline(300, Some(300)), &[]);
    let report = assert_errors(
        Kind::ImagePullJob,
        deadline(100, Some(300)),
        &[("spec.completionPolicy.activeDeadlineSeconds", Invalid)],
    );
    assert!(report.errors[0].detail.contains("spec.pullPolicy.timeoutSeconds (300)"));
    // An unset timeout is the default 600.
    assert_errors(
        Kind::ImagePullJob,
        deadline(599, None),
        &[("spec.completionPolicy.activeDeadlineSeconds", Invalid)],
    );
    assert_errors(Kind::ImagePullJob, deadline(600, None), &[]);
    assert_errors(
        Kind::ImagePullJob,
        deadline(0, Some(300)),
        &[("spec.completionPolicy.activeDeadlineSeconds", Invalid)],
    );
}

#[test]
fn completion_policy_rules() {
    let never = |extra: &[(&str, Value)]| {
        let mut changes = vec![("/spec/completionPolicy/type", json!("Never"))];
        changes.extend(extra.iter().cloned());
        with(job(), &changes)
    };
    assert_errors(Kind::ImagePullJob, never(&[]), &[]);
    assert_errors(
        Kind::ImagePullJob,
        never(&[("/spec/completionPolicy/ttlSecondsAfterFinished", json!(300))]),
        &[("spec.completionPolicy.ttlSecondsAfterFinished", Forbidden)],
    );
    assert_errors(
        Kind::ImagePullJob,
        never(&[
            ("/spec/completionPolicy/ttlSecondsAfterFinished", json!(300)),
            ("/spec/completionPolicy/activeDeadlineSeconds", json!(1200)),
        ]),
        &[
            ("spec.completionPolicy.activeDeadlineSeconds", Forbidden),
            ("spec.completionPolicy.ttlSecondsAfterFinished", Forbidden),
        ],
    );
    assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/completionPolicy/type", json!("Sometimes"))]),
        &[("spec.completionPolicy.type", NotSupported)],
    );
    // OpenKruise accepts a negative TTL: a warning, not an error.
    let report = assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/completionPolicy/ttlSecondsAfterFinished", json!(-1))]),
        &[],
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("spec.completionPolicy.ttlSecondsAfterFinished") && w.contains("acts as 0")),
        "{report:?}"
    );
    // Without the mutating webhook, a missing policy is reported, not assumed.
    let report = job_without_defaults(with(job(), &[("/spec/completionPolicy", Value::Null)]));
    assert_eq!(error_keys(&report), [("spec.completionPolicy".to_owned(), Required)]);
}

fn job_without_defaults(object: Value) -> Report {
    Kind::ImagePullJob.validate(&object, None)
}

#[test]
fn pull_policy_and_image_pull_policy_rules() {
    assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/pullPolicy", json!({"timeoutSeconds": 0}))]),
        &[("spec.pullPolicy.timeoutSeconds", Invalid)],
    );
    let report = assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/pullPolicy", json!({"backoffLimit": -2}))]),
        &[],
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("spec.pullPolicy.backoffLimit")),
        "{report:?}"
    );
    assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/imagePullPolicy", json!("Never"))]),
        &[("spec.imagePullPolicy", NotSupported)],
    );
    // OpenKruise accepts any Secret name: a warning, not an error.
    let report = assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/pullSecrets", json!(["ok", "Not_A_Name"]))]),
        &[],
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.starts_with("spec.pullSecrets[1]") && w.contains("not a valid Secret name")),
        "{report:?}"
    );
}

#[test]
fn shape_errors_name_the_field() {
    assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/pullPolicy", json!({"timeoutSeconds": "ten"}))]),
        &[("spec.pullPolicy.timeoutSeconds", TypeInvalid)],
    );
    assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/parallelism", json!(true))]),
        &[("spec.parallelism", TypeInvalid)],
    );
    assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec/selector/names", json!(["node-1", 7]))]),
        &[("spec.selector.names[1]", TypeInvalid)],
    );
    assert_errors(
        Kind::ImagePullJob,
        with(job(), &[("/spec", Value::Null)]),
        &[("spec", Required)],
    );
}

#[test]
fn every_error_at_once_in_field_order() {
    let object = with(
        job(),
        &[
            ("/spec/image", json!("UPPER")),
            ("/spec/selector/names", json!(["a", "a"])),
            ("/spec/selector/matchLabels", json!({"x": "y"})),
            ("/spec/podSelector", json!({})),
            ("/spec/parallelism", json!(-1)),
            ("/spec/pullPolicy", json!({"timeoutSeconds": 900})),
            ("/spec/completionPolicy/activeDeadlineSeconds", json!(60)),
        ],
    );
    let report = assert_errors(
        Kind::ImagePullJob,
        object,
        &[
            ("spec.image", Invalid),
            ("spec.selector", Forbidden),
            ("spec.selector.names[1]", Duplicate),
            ("spec.podSelector", Forbidden),
            ("spec.parallelism", Invalid),
            ("spec.completionPolicy.activeDeadlineSeconds", Invalid),
        ],
    );
    assert_eq!(
        report.errors[2].to_string(),
        r#"spec.selector.names[1]: Duplicate value: "a": already listed at spec.selector.names[0]"#
    );
}

#[test]
fn pull_secrets_are_immutable_on_update() {
    let old = defaulted(
        Kind::ImagePullJob,
        &with(job(), &[("/spec/pullSecrets", json!(["a", "b"]))]),
    );
    let update =
        |secrets: Value| Kind::ImagePullJob.validate(&with(old.clone(), &[("/spec/pullSecrets", secrets)]), Some(&old));
    assert!(update(json!(["a", "b"])).is_valid());
    let report = update(json!(["b", "a"]));
    assert_eq!(error_keys(&report), [("spec.pullSecrets".to_owned(), Invalid)]);
    assert!(report.errors[0].to_string().ends_with("field is immutable"));
    assert!(!update(Value::Null).is_valid());
    // Unset and empty mean the same thing.
    let old = defaulted(Kind::ImagePullJob, &job());
    let report = Kind::ImagePullJob.validate(&with(old.clone(), &[("/spec/pullSecrets", json!([]))]), Some(&old));
    assert!(report.is_valid(), "{report:?}");
    // Everything else may change.
    let report = Kind::ImagePullJob.validate(&with(old.clone(), &[("/spec/image", json!("nginx:1.25"))]), Some(&old));
    assert!(report.is_valid(), "{report:?}");
}

#[test]
fn image_list_rules() {
    assert_errors(
        Kind::ImageListPullJob,
        with(list_job(), &[("/spec/images", json!([]))]),
        &[("spec.images", Required)],
    );
    let report = assert_errors(
        Kind::ImageListPullJob,
        with(
            list_job(),
            &[(
                "/spec/images",
                json!(["nginx", "nginx:latest", "docker.io/library/nginx:latest", "busybox", ""]),
            )],
        ),
        &[
            ("spec.images[1]", Duplicate),
            ("spec.images[2]", Duplicate),
            ("spec.images[4]", Required),
        ],
    );
    assert!(
        report.errors[0]
            .detail
            .contains("spec.images[0] (docker.io/library/nginx:latest)"),
        "{}",
        report.errors[0]
    );
    let many: Vec<String> = (0..256).map(|i| format!("app-{i}:1")).collect();
    assert_errors(
        Kind::ImageListPullJob,
        with(list_job(), &[("/spec/images", json!(many))]),
        &[("spec.images", TooMany)],
    );
    let max: Vec<String> = (0..255).map(|i| format!("app-{i}:1")).collect();
    assert_errors(
        Kind::ImageListPullJob,
        with(list_job(), &[("/spec/images", json!(max))]),
        &[],
    );
    // The same deadline rule as ImagePullJob, which OpenKruise forgets for list jobs.
    assert_errors(
        Kind::ImageListPullJob,
        with(
            list_job(),
            &[
                ("/spec/completionPolicy/activeDeadlineSeconds", json!(100)),
                ("/spec/pullPolicy", json!({"timeoutSeconds": 300})),
            ],
        ),
        &[("spec.completionPolicy.activeDeadlineSeconds", Invalid)],
    );
    assert_errors(
        Kind::ImageListPullJob,
        with(
            list_job(),
            &[
                ("/spec/images/1", json!("busybox:")),
                ("/spec/selector", json!({"names": []})),
                ("/spec/podSelector", json!({})),
            ],
        ),
        &[("spec.images[1]", Invalid), ("spec.podSelector", Forbidden)],
    );
}

#[test]
fn node_image_rules() {
    assert_errors(
        Kind::NodeImage,
        with(
            node_image(),
            &[(
                "/spec/images/nginx/tags/1",
                json!({"tag": "1.9.1", "pullPolicy": {"ttlSecondsAfterFinished": 1}}),
            )],
        ),
        &[("spec.images[nginx].tags[1].tag", Duplicate)],
    );
    assert_errors(
        Kind::NodeImage,
        with(node_image(), &[("/spec/images/nginx/tags/0/pullPolicy", json!({}))]),
        &[(
            "spec.images[nginx].tags[0].pullPolicy.ttlSecondsAfterFinished",
            Required,
        )],
    );
    assert_errors(
        Kind::NodeImage,
        with(
            node_image(),
            &[
                ("/spec/images/nginx/tags/0/tag", json!("")),
                ("/spec/images/nginx/tags/0/version", json!(-1)),
            ],
        ),
        &[
            ("spec.images[nginx].tags[0].tag", Required),
            ("spec.images[nginx].tags[0].version", Invalid),
        ],
    );
    let tag = json!({"tags": [{"tag": "1", "pullPolicy": {"ttlSecondsAfterFinished": 300}}]});
    assert_errors(
        Kind::NodeImage,
        with(
            node_image(),
            &[
                ("/spec/images/docker.io~1library~1nginx", tag.clone()),
                ("/spec/images/nginx:1.0", tag.clone()),
            ],
        ),
        &[("spec.images[nginx]", Duplicate), ("spec.images[nginx:1.0]", Invalid)],
    );
    let many: serde_json::Map<String, Value> = (0..257).map(|i| (format!("app-{i}"), tag.clone())).collect();
    assert_errors(
        Kind::NodeImage,
        with(node_image(), &[("/spec/images", Value::Object(many))]),
        &[("spec.images", TooMany)],
    );
    let max: serde_json::Map<String, Value> = (0..256).map(|i| (format!("app-{i}"), tag.clone())).collect();
    assert_errors(
        Kind::NodeImage,
        with(node_image(), &[("/spec/images", Value::Object(max))]),
        &[],
    );
    // Without the mutating webhook, createdAt and pullPolicy are missing.
    let bare = with(node_image(), &[("/spec/images/nginx/tags/0/pullPolicy", Value::Null)]);
    assert_eq!(
        error_keys(&Kind::NodeImage.validate(&bare, None)),
        [
            ("spec.images[nginx].tags[0].createdAt".to_owned(), Required),
            ("spec.images[nginx].tags[0].pullPolicy".to_owned(), Required)
        ]
    );
}

#[test]
fn a_negative_node_image_tag_ttl_is_a_warning() {
    let report = assert_errors(
        Kind::NodeImage,
        with(
            node_image(),
            &[(
                "/spec/images/nginx/tags/0/pullPolicy/ttlSecondsAfterFinished",
                json!(-5),
            )],
        ),
        &[],
    );
    assert!(
        report.warnings.iter().any(|w| w.contains("-5 is negative")),
        "{report:?}"
    );
}

#[test]
fn a_node_image_without_spec_is_an_empty_one() {
    assert_errors(Kind::NodeImage, with(node_image(), &[("/spec", Value::Null)]), &[]);
}

#[test]
fn a_million_problems_are_listed_as_the_first_hundred_and_a_count() {
    let names: Vec<String> = vec!["node-1".to_owned(); 100_000];
    let object = with(job(), &[("/spec/selector", json!({"names": names}))]);
    let report = Kind::ImagePullJob.validate(&object, None);
    let (errors, _) = report.into_parts();
    assert_eq!(errors.len(), 101);
    assert!(
        errors[100].to_string().contains("and 99899 more errors, not listed"),
        "{}",
        errors[100]
    );
}

#[test]
fn pull_policies_that_keep_nodes_busy_are_warned_about() {
    let report = check(
        Kind::ImagePullJob,
        &with(
            job(),
            &[("/spec/pullPolicy", json!({"timeoutSeconds": 7200, "backoffLimit": 50}))],
        ),
    );
    assert!(report.errors.is_empty(), "legal, as in OpenKruise: {:?}", report.errors);
    let warned = |field: &str| report.warnings.iter().any(|w| w.starts_with(field));
    assert!(
        warned("spec.pullPolicy.timeoutSeconds: 7200 s per attempt"),
        "{:?}",
        report.warnings
    );
    assert!(
        warned("spec.pullPolicy.backoffLimit: 50 retries"),
        "{:?}",
        report.warnings
    );
    let usual = check(
        Kind::ImagePullJob,
        &with(
            job(),
            &[("/spec/pullPolicy", json!({"timeoutSeconds": 3600, "backoffLimit": 20}))],
        ),
    );
    assert!(usual.warnings.is_empty(), "{:?}", usual.warnings);
}
