//! AdvancedCronJob admission: OpenKruise's defaults, its rules for schedules,
//! zones and limits, the template held to the ImageListPullJob rules, and
//! prewarm's refusal of the templates it does not run.

#![allow(clippy::unwrap_used, clippy::panic)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use prewarm_api::admission::{self, Decision, Kind, Operation, Policy, Request};
use prewarm_api::gates::{FeatureGates, Gate};
use prewarm_api::spec::Spec;
use serde_json::{Value, json};

/// OpenKruise 1.9's example, as its proposal writes the template.
fn nightly() -> Value {
    json!({
        "apiVersion": "apps.kruise.io/v1alpha1",
        "kind": "AdvancedCronJob",
        "metadata": {"name": "nightly-image-prefetch", "namespace": "default"},
        "spec": {
            "schedule": "0 2 * * *",
            "template": {"imageListPullJobTemplate": {
                "metadata": {"labels": {"app": "image-prefetch"}},
                "spec": {
                    "images": ["nginx:1.25", "redis:7.0"],
                    "podSelector": {"matchLabels": {"pod-label": "xxx"}},
                    "parallelism": 5,
                    "completionPolicy": {"type": "Always"}
                }
            }}
        }
    })
}

fn with(mut object: Value, pointer: &str, value: Value) -> Value {
    let (parent, member) = pointer.rsplit_once('/').unwrap();
    object.pointer_mut(parent).unwrap()[member] = value;
    object
}

fn errors(object: &Value) -> Vec<String> {
    let defaulted = Kind::AdvancedCronJob.with_defaults(object, &now());
    Kind::AdvancedCronJob
        .validate(&defaulted, None)
        .errors
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn now() -> Time {
    Time("2026-12-02T10:00:00Z".parse().unwrap())
}

#[test]
fn openkruise_defaults_are_filled_in() {
    let defaulted = Kind::AdvancedCronJob.with_defaults(&nightly(), &now());
    let spec = &defaulted["spec"];
    assert_eq!(spec["concurrencyPolicy"], "Replace");
    assert_eq!(spec["paused"], false);
    assert_eq!(spec["successfulJobsHistoryLimit"], 3);
    assert_eq!(spec["failedJobsHistoryLimit"], 1);
    let template = &spec["template"]["imageListPullJobTemplate"]["spec"];
    assert_eq!(template["completionPolicy"], json!({"type": "Always"}));
    assert_eq!(
        template["pullPolicy"],
        json!({"timeoutSeconds": 600, "backoffLimit": 3})
    );
    assert_eq!(template["imagePullPolicy"], "IfNotPresent");
    assert_eq!(template["parallelism"], 5);
    // What is set stays; defaulting twice adds nothing.
    let set = with(nightly(), "/spec/concurrencyPolicy", json!("Forbid"));
    assert_eq!(
        Kind::AdvancedCronJob.with_defaults(&set, &now())["spec"]["concurrencyPolicy"],
        "Forbid"
    );
    assert!(Kind::AdvancedCronJob.defaults(&defaulted, &now()).is_empty());
    assert!(
        Kind::AdvancedCronJob.validate(&defaulted, None).is_valid(),
        "{:?}",
        errors(&nightly())
    );
}

#[test]
fn schedules_are_checked_with_the_column_of_the_error() {
    assert_eq!(
        errors(&with(nightly(), "/spec/schedule", json!("0 25 * * *"))),
        [
            "spec.schedule: Invalid value: \"0 25 * * *\": at column 3: hour field \"25\": 25 is above the maximum 23; accepted: 0-23, *, ranges a-b, steps */n or a-b/n, lists a,b; write five fields (minute hour day-of-month month day-of-week) such as \"0 2 * * *\", or a macro such as @daily"
        ]
    );
    for good in [
        "@hourly",
        "@every 6h",
        "*/5 * * * *",
        "0 9 * * MON-FRI",
        "CRON_TZ=Asia/Tokyo 0 6 * * *",
    ] {
        assert_eq!(
            errors(&with(nightly(), "/spec/schedule", json!(good))),
            Vec::<String>::new(),
            "{good}"
        );
    }
    assert!(errors(&with(nightly(), "/spec/schedule", json!("0 2 * *")))[0].contains("expected exactly 5 fields"));
    let both = with(nightly(), "/spec/schedule", json!("TZ=UTC 0 2 * * *"));
    let both = with(both, "/spec/timeZone", json!("Europe/Berlin"));
    assert!(errors(&both)[0].contains("cannot use both timeZone field and TZ or CRON_TZ in schedule"));
    let never = with(nightly(), "/spec/schedule", json!("0 0 30 2 *"));
    let report = Kind::AdvancedCronJob.validate(&Kind::AdvancedCronJob.with_defaults(&never, &now()), None);
    assert!(report.is_valid());
    assert!(
        report.warnings.iter().any(|w| w.contains("never comes")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn zones_are_iana_names_and_an_unknown_one_is_named() {
    assert_eq!(
        errors(&with(nightly(), "/spec/timeZone", json!("Asia/Shanghai"))),
        Vec::<String>::new()
    );
    assert_eq!(
        errors(&with(nightly(), "/spec/timeZone", json!("Mars/Olympus"))),
        [
            "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone \"Mars/Olympus\"; use an IANA name such as UTC, Europe/Berlin or Asia/Shanghai"
        ]
    );
    assert!(errors(&with(nightly(), "/spec/timeZone", json!("Local")))[0].contains("not Local"));
    assert!(errors(&with(nightly(), "/spec/timeZone", json!("")))[0].starts_with("spec.timeZone: Invalid value: \"\""));
}

#[test]
fn limits_and_policies_are_checked() {
    assert_eq!(
        errors(&with(nightly(), "/spec/startingDeadlineSeconds", json!(-1))),
        ["spec.startingDeadlineSeconds: Invalid value: -1: must be greater than or equal to 0"]
    );
    assert_eq!(
        errors(&with(nightly(), "/spec/failedJobsHistoryLimit", json!(-2))),
        ["spec.failedJobsHistoryLimit: Invalid value: -2: must be greater than or equal to 0"]
    );
    assert_eq!(
        errors(&with(nightly(), "/spec/concurrencyPolicy", json!("Sometimes"))),
        [
            "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\""
        ]
    );
}

#[test]
fn other_templates_are_refused_as_prewarm_runs_pre_warming_only() {
    let job = with(
        nightly(),
        "/spec/template",
        json!({"jobTemplate": {"spec": {"template": {}}}}),
    );
    let errors = errors(&job);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("spec.template.jobTemplate: Forbidden: prewarm runs image pre-warming only"),
        "{errors:?}"
    );
    let broadcast = with(nightly(), "/spec/template/broadcastJobTemplate", json!({"spec": {}}));
    assert!(self::errors(&broadcast)[0].starts_with("spec.template.broadcastJobTemplate: Forbidden"));
    assert_eq!(
        self::errors(&with(nightly(), "/spec/template", json!({}))),
        [
            "spec.template.imageListPullJobTemplate: Required value: set the ImageListPullJob each run creates: its images, and the nodes to pull on"
        ]
    );
}

#[test]
fn the_template_is_held_to_the_image_list_pull_job_rules() {
    let template = "/spec/template/imageListPullJobTemplate/spec";
    let duplicate = with(
        nightly(),
        &format!("{template}/images"),
        json!(["nginx:1.25", "nginx:1.25"]),
    );
    assert!(
        errors(&duplicate)[0].starts_with("spec.template.imageListPullJobTemplate.spec.images[1]: Duplicate value"),
        "{:?}",
        errors(&duplicate)
    );
    let both = with(nightly(), &format!("{template}/selector"), json!({"names": ["node-1"]}));
    assert!(
        errors(&both)
            .iter()
            .any(|e| e.contains("spec.template.imageListPullJobTemplate.spec"))
    );
    let never = with(
        nightly(),
        &format!("{template}/completionPolicy"),
        json!({"type": "Never"}),
    );
    assert_eq!(
        errors(&never),
        [
            "spec.template.imageListPullJobTemplate.spec.completionPolicy.type: Unsupported value: \"Never\": supported values: \"Always\""
        ]
    );
    let label = with(
        nightly(),
        "/spec/template/imageListPullJobTemplate/metadata/labels",
        json!({"app": "not a value"}),
    );
    assert!(
        errors(&label)[0].starts_with("spec.template.imageListPullJobTemplate.metadata.labels[app]: Invalid value")
    );
    let typo = with(nightly(), &format!("{template}/images"), json!("nginx"));
    assert!(
        errors(&typo)[0].starts_with("spec.template.imageListPullJobTemplate.spec.images: Invalid value"),
        "{:?}",
        errors(&typo)
    );
}

fn decide(operation: Operation, object: &Value, old: Option<&Value>, gates: &str) -> Decision {
    let policy = Policy::gates(FeatureGates::parse(gates).unwrap());
    let request = Request::of(
        Kind::AdvancedCronJob,
        operation,
        Some(Spec::of(object)),
        old.map(Spec::of),
    );
    admission::validate(&request, &policy)
}

#[test]
fn updates_may_change_the_schedule_but_not_the_template() {
    let stored = Kind::AdvancedCronJob.with_defaults(&nightly(), &now());
    let rescheduled = with(stored.clone(), "/spec/schedule", json!("0 3 * * *"));
    let paused = with(rescheduled, "/spec/paused", json!(true));
    assert!(decide(Operation::Update, &paused, Some(&stored), "ImagePullJobGate=true").is_allowed());
    let other_images = with(
        stored.clone(),
        "/spec/template/imageListPullJobTemplate/spec/images",
        json!(["nginx:1.26"]),
    );
    match decide(Operation::Update, &other_images, Some(&stored), "ImagePullJobGate=true") {
        Decision::Invalid { errors, .. } => {
            assert_eq!(errors.len(), 1);
            assert!(
                errors[0]
                    .to_string()
                    .starts_with("spec.template: Forbidden: field is immutable: an update may change only schedule")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn cron_jobs_share_the_gate_of_the_jobs_they_create() {
    let object = Kind::AdvancedCronJob.with_defaults(&nightly(), &now());
    match decide(Operation::Create, &object, None, "") {
        Decision::Forbidden {
            gate: Some(Gate::ImagePullJobGate),
            message,
        } => {
            assert!(
                message.contains("AdvancedCronJob objects cannot be created"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(decide(Operation::Create, &object, None, "ImagePullJobGate=true").is_allowed());
    assert!(decide(Operation::Delete, &object, None, "").is_allowed());
    assert_eq!(
        Kind::from_type_meta("apps.kruise.io/v1alpha1", "AdvancedCronJob"),
        Some(Kind::AdvancedCronJob)
    );
    assert_eq!(Kind::from_plural("advancedcronjobs"), Some(Kind::AdvancedCronJob));
}

#[test]
fn names_follow_openkruises_rule_when_created() {
    let object = Kind::AdvancedCronJob.with_defaults(&nightly(), &now());
    let policy = Policy::gates(FeatureGates::parse("ImagePullJobGate=true").unwrap());
    let long = "a".repeat(64);
    for (name, expected) in [
        (
            "nightly.v2",
            "metadata.name: Invalid value: \"nightly.v2\": AdvancedCronJob name must consist of alphanumeric characters or '-'",
        ),
        (long.as_str(), "must be no more than 63 characters"),
    ] {
        let request = Request {
            name,
            ..Request::of(Kind::AdvancedCronJob, Operation::Create, Some(Spec::of(&object)), None)
        };
        match admission::validate(&request, &policy) {
            Decision::Invalid { errors, .. } => {
                assert_eq!(errors.len(), 1, "{errors:?}");
                assert!(errors[0].to_string().contains(expected), "{}", errors[0]);
            }
            other => panic!("{name}: {other:?}"),
        }
        // A stored object keeps being editable: the rule is for creation.
        let edited = with(object.clone(), "/spec/paused", json!(true));
        let update = Request {
            name,
            ..Request::of(
                Kind::AdvancedCronJob,
                Operation::Update,
                Some(Spec::of(&edited)),
                Some(Spec::of(&object)),
            )
        };
        assert!(admission::validate(&update, &policy).is_allowed());
    }
    let request = Request {
        name: "nightly-image-prefetch",
        ..Request::of(Kind::AdvancedCronJob, Operation::Create, Some(Spec::of(&object)), None)
    };
    assert!(admission::validate(&request, &policy).is_allowed());
}
