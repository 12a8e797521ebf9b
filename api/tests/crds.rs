//! The CRDs checked in under `manifests/crds/` are exactly what the types generate.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use prewarm_api::crd;

#[test]
fn checked_in_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crd::CHECKED_IN_DIR);
    for (file, definition) in crd::all().unwrap() {
        let expected = crd::render(&definition).unwrap();
        let actual = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        assert!(
            actual == expected,
            "{}/{file} is out of date with the prewarm-api types; regenerate it with `{}` and commit the result",
            crd::CHECKED_IN_DIR,
            crd::REGENERATE_COMMAND
        );
    }
}

#[test]
fn crds_serve_both_versions_and_store_v1beta1() {
    for (file, definition) in crd::all().unwrap() {
        let versions: Vec<(&str, bool, bool)> = definition
            .spec
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.served, v.storage))
            .collect();
        assert_eq!(versions, [("v1beta1", true, true), ("v1alpha1", true, false)], "{file}");
        assert!(
            definition.spec.conversion.is_none(),
            "{file}: conversion must stay None"
        );
        for version in &definition.spec.versions {
            assert!(
                version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
                "{file}: status subresource"
            );
        }
    }
}

fn columns(file: &str, version: &str) -> Vec<String> {
    let (_, definition) = crd::all().unwrap().into_iter().find(|(f, _)| *f == file).unwrap();
    let version = definition.spec.versions.iter().find(|v| v.name == version).unwrap();
    version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect()
}

#[test]
fn printer_columns_are_openkruise_ones() {
    let job = "apps.kruise.io_imagepulljobs.yaml";
    assert_eq!(
        columns(job, "v1alpha1"),
        ["TOTAL", "ACTIVE", "SUCCEED", "FAILED", "AGE", "MESSAGE"]
    );
    assert_eq!(columns(job, "v1beta1"), ["TOTAL", "ACTIVE", "SUCCEED", "FAILED", "AGE"]);
    for version in ["v1alpha1", "v1beta1"] {
        assert_eq!(
            columns("apps.kruise.io_imagelistpulljobs.yaml", version),
            ["TOTAL", "SUCCEEDED", "COMPLETED", "AGE"]
        );
        assert_eq!(
            columns("apps.kruise.io_nodeimages.yaml", version),
            ["DESIRED", "PULLING", "SUCCEED", "FAILED", "AGE"]
        );
    }
}

#[test]
fn only_v1beta1_node_images_have_a_secret_mode() {
    let (_, definition) = crd::all()
        .unwrap()
        .into_iter()
        .find(|(f, _)| f.contains("nodeimages"))
        .unwrap();
    for version in &definition.spec.versions {
        let schema = serde_json::to_value(&version.schema).unwrap();
        let secret = &schema["openAPIV3Schema"]["properties"]["spec"]["properties"]["images"]["additionalProperties"]["properties"]
            ["pullSecrets"]["items"]["properties"];
        assert_eq!(
            secret.get("mode").is_some(),
            version.name == "v1beta1",
            "{}",
            version.name
        );
    }
}

#[test]
fn schemas_carry_openkruise_required_fields_and_descriptions() {
    for (file, definition) in crd::all().unwrap() {
        for version in &definition.spec.versions {
            let schema = serde_json::to_value(&version.schema).unwrap()["openAPIV3Schema"].clone();
            assert!(
                schema["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{file}: kubectl explain needs a description"
            );
            assert_eq!(
                schema["properties"]["status"]["required"],
                serde_json::json!(["desired"]),
                "{file}"
            );
            let spec = &schema["properties"]["spec"];
            match file {
                "apps.kruise.io_imagepulljobs.yaml" => {
                    assert_eq!(spec["required"], serde_json::json!(["completionPolicy", "image"]))
                }
                "apps.kruise.io_imagelistpulljobs.yaml" => {
                    assert_eq!(spec["required"], serde_json::json!(["completionPolicy", "images"]))
                }
                _ => assert_eq!(
                    spec["properties"]["images"]["additionalProperties"]["required"],
                    serde_json::json!(["tags"])
                ),
            }
            if file != "apps.kruise.io_nodeimages.yaml" {
                assert_eq!(spec["properties"]["parallelism"]["x-kubernetes-int-or-string"], true);
                assert_eq!(spec["properties"]["selector"]["x-kubernetes-map-type"], "atomic");
            }
        }
    }
}
