//! Every YAML of the seed documentation deserializes into its type, round-trips
//! without loss, defaults to the documented values and gets the expected verdict.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use prewarm_api::admission::{self, Decision, Kind, Operation, Request};
use prewarm_api::field::Reason;
use prewarm_api::gates::FeatureGates;
use prewarm_api::spec::Spec;
use prewarm_api::{v1alpha1, v1beta1};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn seed(file: &str) -> Value {
    read_yaml(&fixture_dir("seed").join(file))
}

fn gates_on() -> FeatureGates {
    FeatureGates::parse("ImagePullJobGate=true").unwrap()
}

fn create(kind: Kind, object: &Value) -> Decision {
    let request = Request::of(kind, Operation::Create, Some(Spec::of(object)), None);
    admission::validate(&request, &admission::Policy::gates(gates_on()))
}

fn assert_round_trip<T: DeserializeOwned + Serialize>(file: &str, object: &Value) {
    let typed: T = serde_json::from_value(object.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut back = serde_json::to_value(&typed).unwrap();
    // The types write their own apiVersion: the v1beta1 type reads v1alpha1
    // manifests too (the schemas share every field) and answers as v1beta1.
    back["apiVersion"] = object["apiVersion"].clone();
    assert_eq!(
        &back,
        object,
        "{file} changed in a round trip through {}",
        std::any::type_name::<T>()
    );
}

/// Both versions' types, since every v1alpha1 manifest is also a v1beta1 one.
fn assert_typed_round_trip(file: &str, kind: Kind, object: &Value) {
    match kind {
        Kind::ImagePullJob => {
            assert_round_trip::<v1alpha1::ImagePullJob>(file, object);
            assert_round_trip::<v1beta1::ImagePullJob>(file, object);
        }
        Kind::ImageListPullJob => {
            assert_round_trip::<v1alpha1::ImageListPullJob>(file, object);
            assert_round_trip::<v1beta1::ImageListPullJob>(file, object);
        }
        Kind::AdvancedCronJob => {
            assert_round_trip::<v1alpha1::AdvancedCronJob>(file, object);
            assert_round_trip::<v1beta1::AdvancedCronJob>(file, object);
        }
        Kind::NodeImage => {
            assert_round_trip::<v1alpha1::NodeImage>(file, object);
            assert_round_trip::<v1beta1::NodeImage>(file, object);
        }
    }
}

const VALID: &[&str] = &[
    "02-imagepulljob-names.yaml",
    "03-imagepulljob-labels.yaml",
    "04-imagepulljob-pod-selector.yaml",
    "05-imagepulljob-pull-secrets.yaml",
    "07-imagepulljob-sandbox-config.yaml",
    "08-imagepulljob-pull-policy-always.yaml",
    "08-imagepulljob-pull-policy-ifnotpresent.yaml",
    "10-imagelistpulljob-names.yaml",
    "11-imagelistpulljob-labels.yaml",
    "12-nodeimage-empty.yaml",
    "13-nodeimage-ubuntu.yaml",
    "14-imagepulljob-failed-status.yaml",
    "15-nodeimage-failed-status.yaml",
];

const NAMES_AND_LABELS: &[&str] = &[
    "01-imagepulljob-names-and-labels.yaml",
    "09-imagelistpulljob-names-and-labels.yaml",
];

#[test]
fn every_seed_file_is_checked() {
    let mut listed: Vec<&str> = VALID.iter().chain(NAMES_AND_LABELS).copied().collect();
    listed.extend([
        "06-configmap-credential-provider.yaml",
        "16-nodeimage-merge-patch.json",
        "README.md",
    ]);
    listed.sort_unstable();
    let mut present: Vec<String> = std::fs::read_dir(fixture_dir("seed"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort_unstable();
    assert_eq!(present, listed);
}

#[test]
fn seed_manifests_round_trip_default_and_validate() {
    for file in VALID {
        let object = seed(file);
        let kind = kind_of(&object).unwrap_or_else(|| panic!("{file}: not a prewarm kind"));
        assert_typed_round_trip(file, kind, &object);

        let defaulted = defaulted(kind, &object);
        assert_typed_round_trip(file, kind, &defaulted);
        assert!(
            kind.defaults(&defaulted, &now()).is_empty(),
            "{file}: defaulting twice changed it"
        );

        match create(kind, &defaulted) {
            Decision::Allowed { .. } => {}
            other => panic!("{file}: expected it to be allowed, got {other:?}"),
        }
    }
}

#[test]
fn seed_jobs_get_the_documented_defaults() {
    let job = defaulted(Kind::ImagePullJob, &seed("07-imagepulljob-sandbox-config.yaml"));
    assert_eq!(job["spec"]["completionPolicy"], json!({"type": "Always"}));
    assert_eq!(
        job["spec"]["pullPolicy"],
        json!({"timeoutSeconds": 600, "backoffLimit": 3})
    );
    assert_eq!(job["spec"]["imagePullPolicy"], "IfNotPresent");

    // Values the author set are kept.
    let job = defaulted(Kind::ImagePullJob, &seed("08-imagepulljob-pull-policy-always.yaml"));
    assert_eq!(job["spec"]["imagePullPolicy"], "Always");
    let job = defaulted(Kind::ImagePullJob, &seed("02-imagepulljob-names.yaml"));
    assert_eq!(
        job["spec"]["pullPolicy"],
        json!({"timeoutSeconds": 300, "backoffLimit": 3})
    );
    assert_eq!(job["spec"]["completionPolicy"]["activeDeadlineSeconds"], 1200);

    // A list job leaves imagePullPolicy to its child jobs, as OpenKruise does.
    let list = defaulted(Kind::ImageListPullJob, &seed("10-imagelistpulljob-names.yaml"));
    assert_eq!(
        list["spec"]["pullPolicy"],
        json!({"timeoutSeconds": 300, "backoffLimit": 3})
    );
    assert_eq!(list["spec"]["completionPolicy"]["type"], "Always");
    assert!(list["spec"].get("imagePullPolicy").is_none());
}

#[test]
fn seed_node_image_tags_get_created_at_and_pull_policy() {
    let node_image = defaulted(Kind::NodeImage, &seed("13-nodeimage-ubuntu.yaml"));
    let tag = &node_image["spec"]["images"]["ubuntu"]["tags"][0];
    assert_eq!(tag["createdAt"], "2026-11-25T10:00:00Z");
    assert_eq!(
        tag["pullPolicy"],
        json!({"ttlSecondsAfterFinished": 300, "timeoutSeconds": 600, "backoffLimit": 3, "activeDeadlineSeconds": 1200})
    );
}

#[test]
fn seed_merge_patch_on_the_empty_node_image_is_valid() {
    let mut node_image = seed("12-nodeimage-empty.yaml");
    let patch: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir("seed").join("16-nodeimage-merge-patch.json")).unwrap(),
    )
    .unwrap();
    json_patch::merge(&mut node_image, &patch);
    let node_image = defaulted(Kind::NodeImage, &node_image);
    let tag = &node_image["spec"]["images"]["ubuntu"]["tags"][0];
    assert_eq!(
        tag["pullPolicy"],
        json!({"ttlSecondsAfterFinished": 300, "timeoutSeconds": 600, "backoffLimit": 3})
    );
    assert!(create(Kind::NodeImage, &node_image).is_allowed());
}

#[test]
fn names_together_with_labels_is_refused_as_written() {
    for file in NAMES_AND_LABELS {
        let object = seed(file);
        let kind = kind_of(&object).unwrap();
        assert_typed_round_trip(file, kind, &object);
        match create(kind, &defaulted(kind, &object)) {
            Decision::Invalid { errors, .. } => {
                let keys: Vec<(String, Reason)> = errors.iter().map(|e| (e.path.to_string(), e.reason)).collect();
                assert_eq!(keys, [("spec.selector".to_owned(), Reason::Forbidden)], "{file}");
                assert!(errors[0].to_string().contains("mutually exclusive"), "{}", errors[0]);
            }
            other => panic!("{file}: expected the names/labels error, got {other:?}"),
        }
    }
}

#[test]
fn seed_config_map_round_trips() {
    let object = seed("06-configmap-credential-provider.yaml");
    assert!(kind_of(&object).is_none(), "a ConfigMap is not a prewarm kind");
    assert_round_trip::<ConfigMap>("06-configmap-credential-provider.yaml", &object);
    let plugin_config = object["data"]["CredentialProviderPlugin.yaml"].as_str().unwrap();
    let plugin_config: Value = serde_saphyr::from_str(plugin_config).unwrap();
    assert_eq!(plugin_config["providers"][0]["name"], "ecr-credential-provider");
    assert_eq!(
        plugin_config["providers"][0]["matchImages"].as_array().unwrap().len(),
        5
    );
}

#[test]
fn seed_status_examples_keep_every_status_field() {
    let job: v1beta1::ImagePullJob = serde_json::from_value(seed("14-imagepulljob-failed-status.yaml")).unwrap();
    let status = job.status.unwrap();
    assert_eq!((status.desired, status.failed, status.succeeded), (4, Some(4), Some(0)));
    assert_eq!(status.failed_nodes.unwrap().len(), 4);

    let node_image: v1beta1::NodeImage = serde_json::from_value(seed("15-nodeimage-failed-status.yaml")).unwrap();
    let status = node_image.status.unwrap();
    let tag = &status.image_statuses.unwrap()["nginx"].tags[0];
    assert_eq!(tag.phase, "Failed");
    assert!(
        tag.message
            .as_deref()
            .unwrap()
            .ends_with("dial tcp 10.1.1.1:443: i/o timeout")
    );
}
