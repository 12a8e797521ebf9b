//! Feature gates: the parser, and how the gates decide requests, so that the
//! gate never blocks cleanup.

#![allow(clippy::unwrap_used, clippy::panic)]

use prewarm_api::admission::{self, Decision, Kind, Operation, Request};
use prewarm_api::caps::Caps;
use prewarm_api::gates::{FeatureGates, Gate, GateError};
use prewarm_api::spec::Spec;
use serde_json::{Value, json};

fn gates(value: &str) -> FeatureGates {
    FeatureGates::parse(value).unwrap_or_else(|e| panic!("{value:?}: {e}"))
}

fn states(gates: FeatureGates) -> (bool, bool) {
    (gates.enabled(Gate::ImagePullJobGate), gates.enabled(Gate::KruiseDaemon))
}

#[test]
fn gate_defaults_and_syntax() {
    assert_eq!(states(FeatureGates::default()), (false, true));
    assert_eq!(states(gates("")), (false, true));
    assert_eq!(states(gates("ImagePullJobGate=true")), (true, true));
    assert_eq!(
        states(gates(" ImagePullJobGate = true , KruiseDaemon=true ,")),
        (true, true)
    );
    assert_eq!(states(gates("ImagePullJobGate=1")), (true, true));
    assert_eq!(
        states(gates("ImagePullJobGate=True,ImagePullJobGate=false")),
        (false, true)
    );
    assert_eq!(states(gates("AllAlpha=true")), (true, true));
    assert_eq!(states(gates("ImagePullJobGate=false,AllAlpha=true")), (false, true));
    assert_eq!(states(gates("AllBeta=false")), (false, false));
    assert_eq!(
        gates("ImagePullJobGate=true").to_string(),
        "ImagePullJobGate=true,KruiseDaemon=true"
    );
    assert_eq!(
        "ImagePullJobGate=t".parse::<FeatureGates>().map(states),
        Ok((true, true))
    );
}

#[test]
fn kruise_daemon_off_forces_image_pull_job_gate_off() {
    assert_eq!(
        states(gates("ImagePullJobGate=true,KruiseDaemon=false")),
        (false, false)
    );
    assert_eq!(
        states(gates("KruiseDaemon=false,ImagePullJobGate=true")),
        (false, false)
    );
}

#[test]
fn gate_errors_name_the_gate() {
    let error = FeatureGates::parse("ImagePullJobGate=true,PreDownloadImageForInPlaceUpdate=true").unwrap_err();
    assert_eq!(
        error,
        GateError::Unknown {
            name: "PreDownloadImageForInPlaceUpdate".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "unrecognized feature gate \"PreDownloadImageForInPlaceUpdate\": known gates are ImagePullJobGate, KruiseDaemon, AllAlpha, AllBeta"
    );
    let error = FeatureGates::parse("ImagePullJobGate=yes").unwrap_err();
    assert_eq!(
        error,
        GateError::InvalidValue {
            name: "ImagePullJobGate".into(),
            value: "yes".into()
        }
    );
    assert!(error.to_string().contains("use true or false"));
    assert_eq!(
        FeatureGates::parse("ImagePullJobGate").unwrap_err(),
        GateError::Malformed("ImagePullJobGate".into())
    );
}

fn job(image: &str) -> Value {
    json!({
        "apiVersion": "apps.kruise.io/v1beta1",
        "kind": "ImagePullJob",
        "metadata": {"name": "job", "namespace": "default", "finalizers": ["apps.kruise.io/deletion-protection"]},
        "spec": {"image": image, "completionPolicy": {"type": "Always"}, "imagePullPolicy": "Always"}
    })
}

fn decide(
    kind: Kind,
    operation: Operation,
    sub_resource: Option<&str>,
    object: &Value,
    old: Option<&Value>,
    gates: &FeatureGates,
) -> Decision {
    let policy = admission::Policy::gates(*gates);
    decide_under(kind, operation, sub_resource, object, old, &policy)
}

fn decide_under(
    kind: Kind,
    operation: Operation,
    sub_resource: Option<&str>,
    object: &Value,
    old: Option<&Value>,
    policy: &admission::Policy,
) -> Decision {
    let request = Request {
        sub_resource,
        ..Request::of(kind, operation, Some(Spec::of(object)), old.map(Spec::of))
    };
    admission::validate(&request, policy)
}

#[test]
fn a_disabled_gate_refuses_creates_and_spec_changes() {
    let off = FeatureGates::default();
    let created = decide(
        Kind::ImagePullJob,
        Operation::Create,
        None,
        &job("nginx:1.25"),
        None,
        &off,
    );
    let Decision::Forbidden { gate, message } = created else {
        panic!("expected a gate denial, got {created:?}");
    };
    assert_eq!(gate, Some(Gate::ImagePullJobGate));
    assert!(message.contains("--feature-gates=ImagePullJobGate=true"), "{message}");

    let old = job("nginx:1.25");
    let changed = decide(
        Kind::ImagePullJob,
        Operation::Update,
        None,
        &job("nginx:1.26"),
        Some(&old),
        &off,
    );
    assert!(matches!(changed, Decision::Forbidden { .. }), "{changed:?}");
    let list =
        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImageListPullJob", "spec": {"images": ["nginx"]}});
    assert!(matches!(
        decide(Kind::ImageListPullJob, Operation::Create, None, &list, None, &off),
        Decision::Forbidden { .. }
    ));
}

#[test]
fn a_disabled_gate_never_blocks_cleanup() {
    let off = FeatureGates::default();
    let old = job("nginx:1.25");
    let mut unfinalized = old.clone();
    unfinalized["metadata"]["finalizers"] = json!([]);
    unfinalized["metadata"]["labels"] = json!({"team": "a"});
    assert!(
        decide(
            Kind::ImagePullJob,
            Operation::Update,
            None,
            &unfinalized,
            Some(&old),
            &off
        )
        .is_allowed()
    );
    assert!(decide(Kind::ImagePullJob, Operation::Delete, None, &old, None, &off).is_allowed());
    let mut with_status = old.clone();
    with_status["status"] = json!({"desired": 3});
    assert!(
        decide(
            Kind::ImagePullJob,
            Operation::Update,
            Some("status"),
            &with_status,
            Some(&old),
            &off
        )
        .is_allowed()
    );
}

#[test]
fn metadata_updates_pass_even_when_the_stored_spec_breaks_todays_rules() {
    let on = FeatureGates::parse("ImagePullJobGate=true").unwrap();
    // Stored under laxer rules (OpenKruise accepts "Never" here): removing the
    // finalizer must still work.
    let mut old = job("nginx:1.25");
    old["spec"]["imagePullPolicy"] = json!("Never");
    let mut unfinalized = old.clone();
    unfinalized["metadata"]["finalizers"] = json!([]);
    assert!(
        decide(
            Kind::ImagePullJob,
            Operation::Update,
            None,
            &unfinalized,
            Some(&old),
            &on
        )
        .is_allowed()
    );
    // Touching the spec runs every rule.
    let mut changed = unfinalized.clone();
    changed["spec"]["image"] = json!("nginx:1.26");
    assert!(matches!(
        decide(Kind::ImagePullJob, Operation::Update, None, &changed, Some(&old), &on),
        Decision::Invalid { .. }
    ));
}

#[test]
fn node_images_need_only_kruise_daemon() {
    let node_image = json!({
        "apiVersion": "apps.kruise.io/v1beta1", "kind": "NodeImage", "metadata": {"name": "node-1"}, "spec": {}
    });
    assert!(
        decide(
            Kind::NodeImage,
            Operation::Create,
            None,
            &node_image,
            None,
            &FeatureGates::default()
        )
        .is_allowed()
    );
    let daemon_off = gates("KruiseDaemon=false");
    let denied = decide(Kind::NodeImage, Operation::Create, None, &node_image, None, &daemon_off);
    assert!(
        matches!(
            denied,
            Decision::Forbidden {
                gate: Some(Gate::KruiseDaemon),
                ..
            }
        ),
        "{denied:?}"
    );
}

#[test]
fn enabled_gates_lead_to_validation() {
    let on = gates("ImagePullJobGate=true");
    assert!(
        decide(
            Kind::ImagePullJob,
            Operation::Create,
            None,
            &job("nginx:1.25"),
            None,
            &on
        )
        .is_allowed()
    );
    match decide(Kind::ImagePullJob, Operation::Create, None, &job("Nginx"), None, &on) {
        Decision::Invalid { errors, .. } => assert_eq!(errors[0].path.as_str(), "spec.image"),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn an_admins_caps_refuse_jobs_above_them_and_name_the_cap() {
    let capped = admission::Policy {
        caps: Caps {
            max_timeout_seconds: Some(3600),
            max_backoff_limit: Some(10),
        },
        ..admission::Policy::gates(gates("ImagePullJobGate=true"))
    };
    let mut greedy = job("nginx:1.25");
    greedy["spec"]["pullPolicy"] = json!({"timeoutSeconds": 7200, "backoffLimit": 30});
    let mut list = greedy.clone();
    list["kind"] = json!("ImageListPullJob");
    list["spec"]["images"] = json!(["nginx:1.25"]);
    list["spec"].as_object_mut().unwrap().remove("image");
    for (kind, object) in [(Kind::ImagePullJob, &greedy), (Kind::ImageListPullJob, &list)] {
        let decide = |policy: &admission::Policy| decide_under(kind, Operation::Create, None, object, None, policy);
        match decide(&capped) {
            Decision::Invalid { errors, .. } => {
                let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
                assert_eq!(
                    messages,
                    [
                        "spec.pullPolicy.timeoutSeconds: Invalid value: 7200: must be at most 3600, the most this cluster allows (prewarm-webhook --max-timeout-seconds)",
                        "spec.pullPolicy.backoffLimit: Invalid value: 30: must be at most 10, the most this cluster allows (prewarm-webhook --max-backoff-limit)",
                    ],
                    "{kind}"
                );
            }
            other => panic!("{kind}: expected invalid, got {other:?}"),
        }
        // Uncapped, as in OpenKruise: allowed, with the webhook's warnings.
        let uncapped = admission::Policy::gates(capped.gates);
        assert!(decide(&uncapped).is_allowed(), "{kind}");
    }
    // At the caps, and without the fields (the defaults are below any cap): allowed.
    let mut at_caps = job("nginx:1.25");
    at_caps["spec"]["pullPolicy"] = json!({"timeoutSeconds": 3600, "backoffLimit": 10});
    for object in [&at_caps, &job("nginx:1.25")] {
        let decision = decide_under(Kind::ImagePullJob, Operation::Create, None, object, None, &capped);
        assert!(decision.is_allowed(), "{object}");
    }
}

#[test]
fn kinds_are_recognised_by_type_and_resource() {
    assert_eq!(
        Kind::from_type_meta("apps.kruise.io/v1alpha1", "ImagePullJob"),
        Some(Kind::ImagePullJob)
    );
    assert_eq!(
        Kind::from_type_meta("apps.kruise.io/v1beta1", "NodeImage"),
        Some(Kind::NodeImage)
    );
    assert_eq!(Kind::from_type_meta("apps.kruise.io/v1", "NodeImage"), None);
    assert_eq!(Kind::from_type_meta("apps/v1", "ImagePullJob"), None);
    assert_eq!(Kind::from_plural("imagelistpulljobs"), Some(Kind::ImageListPullJob));
    assert!(!Kind::NodeImage.namespaced() && Kind::ImagePullJob.namespaced());
}
