//! The CRDs checked in under `manifests/crds/` are exactly what the types generate.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

use std::collections::BTreeMap;

use prewarm_api::crd;
use serde_json::json;

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
            let status_required = if file == CRON_JOBS {
                json!(null)
            } else {
                json!(["desired"])
            };
            assert_eq!(schema["properties"]["status"]["required"], status_required, "{file}");
            let spec = &schema["properties"]["spec"];
            match file {
                CRON_JOBS => {
                    assert_eq!(spec["required"], json!(["schedule", "template"]));
                    let template = &spec["properties"]["template"]["properties"]["imageListPullJobTemplate"];
                    assert_eq!(
                        template["properties"]["spec"]["required"],
                        json!(["completionPolicy", "images"])
                    );
                    continue;
                }
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

/// Flattens a schema into OpenKruise's facts format: field path → type,
/// format, required, int-or-string and map markers.
fn flatten(schema: &serde_json::Value, path: String, out: &mut BTreeMap<String, serde_json::Value>) {
    let mut facts = serde_json::Map::new();
    for key in ["type", "format", "required"] {
        if let Some(value) = schema.get(key) {
            facts.insert(key.to_owned(), value.clone());
        }
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        facts.insert("x-kubernetes-int-or-string".to_owned(), json!(true));
    }
    // Anything else a schema says that OpenKruise's facts never carry shows up as a difference.
    for key in ["nullable", "x-kubernetes-preserve-unknown-fields"] {
        if let Some(value) = schema.get(key) {
            facts.insert(key.to_owned(), value.clone());
        }
    }
    let map_values = schema.get("additionalProperties").filter(|a| a.is_object());
    if map_values.is_some() {
        facts.insert("map".to_owned(), json!(true));
    }
    out.insert(
        if path.is_empty() { ".".to_owned() } else { path.clone() },
        facts.into(),
    );
    for (name, child) in schema
        .get("properties")
        .and_then(|p| p.as_object())
        .into_iter()
        .flatten()
    {
        flatten(child, format!("{path}.{name}"), out);
    }
    if let Some(items) = schema.get("items") {
        flatten(items, format!("{path}[]"), out);
    }
    if let Some(values) = map_values {
        flatten(values, format!("{path}{{}}"), out);
    }
}

const CRON_JOBS: &str = "apps.kruise.io_advancedcronjobs.yaml";

/// The reference facts predate OpenKruise 1.9's `imageListPullJobTemplate`:
/// the AdvancedCronJob schema is checked against its types by
/// `advanced_cron_jobs_have_openkruise_1_9s_fields` instead.
const NOT_IN_REFERENCE: [&str; 1] = ["AdvancedCronJob"];

/// Deliberate differences from OpenKruise's schemas: (kind/version, field path). None today.
const DELIBERATE_DIFFERENCES: [(&str, &str); 0] = [];

#[test]
fn schemas_match_openkruise_field_for_field() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kruise-crd-fields.json"
    ))
    .unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let reference = &reference["crds"];
    let mut differences = Vec::new();
    for (file, definition) in crd::all().unwrap() {
        let crd = serde_json::to_value(&definition).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_owned();
        if NOT_IN_REFERENCE.contains(&kind.as_str()) {
            continue;
        }
        let names = &reference[&kind];
        assert_eq!(crd["spec"]["scope"], names["scope"], "{file}");
        assert_eq!(crd["spec"]["names"]["plural"], names["plural"], "{file}");
        assert_eq!(crd["spec"]["names"]["singular"], names["singular"], "{file}");
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let key = format!("{kind}/{}", version["name"].as_str().unwrap());
            let expected = &reference[&key];
            assert_eq!(version["served"], expected["served"], "{key}");
            assert_eq!(version["storage"], expected["storage"], "{key}");
            let subresources: Vec<&String> = version["subresources"].as_object().unwrap().keys().collect();
            assert_eq!(json!(subresources), expected["subresources"], "{key}");
            let columns: Vec<serde_json::Value> = version["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| json!({"jsonPath": c["jsonPath"], "name": c["name"], "type": c["type"]}))
                .collect();
            assert_eq!(json!(columns), expected["printerColumns"], "{key}");
            let mut ours = BTreeMap::new();
            flatten(&version["schema"]["openAPIV3Schema"], String::new(), &mut ours);
            let theirs: BTreeMap<String, serde_json::Value> =
                serde_json::from_value(expected["fields"].clone()).unwrap();
            for path in ours
                .keys()
                .chain(theirs.keys())
                .collect::<std::collections::BTreeSet<_>>()
            {
                if ours.get(path) != theirs.get(path)
                    && !DELIBERATE_DIFFERENCES.contains(&(key.as_str(), path.as_str()))
                {
                    differences.push(format!(
                        "{key} {path}: ours {:?}, OpenKruise {:?}",
                        ours.get(path),
                        theirs.get(path)
                    ));
                }
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} differences:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// OpenKruise 1.9's AdvancedCronJob (`advancedcronjob_types.go`, and the
/// ImageListPullJobTemplate proposal): its fields and their types, and a
/// template spec that is exactly the ImageListPullJob spec of the reference.
#[test]
fn advanced_cron_jobs_have_openkruise_1_9s_fields() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kruise-crd-fields.json"
    ))
    .unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let (_, definition) = crd::all()
        .unwrap()
        .into_iter()
        .find(|(file, _)| *file == CRON_JOBS)
        .unwrap();
    let crd = serde_json::to_value(&definition).unwrap();
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["acj"]));
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    for version in crd["spec"]["versions"].as_array().unwrap() {
        let name = version["name"].as_str().unwrap();
        assert_eq!(version["subresources"], json!({"status": {}}), "{name}");
        let mut ours = BTreeMap::new();
        flatten(&version["schema"]["openAPIV3Schema"], String::new(), &mut ours);
        let facts = |path: &str| ours.get(path).cloned().unwrap_or_else(|| panic!("{name}: no {path}"));
        for (path, expected) in [
            (".spec.schedule", json!({"type": "string"})),
            (".spec.timeZone", json!({"type": "string"})),
            (
                ".spec.startingDeadlineSeconds",
                json!({"type": "integer", "format": "int64"}),
            ),
            (".spec.concurrencyPolicy", json!({"type": "string"})),
            (".spec.paused", json!({"type": "boolean"})),
            (
                ".spec.successfulJobsHistoryLimit",
                json!({"type": "integer", "format": "int32"}),
            ),
            (
                ".spec.failedJobsHistoryLimit",
                json!({"type": "integer", "format": "int32"}),
            ),
            (
                ".spec.template.jobTemplate",
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            ),
            (
                ".spec.template.broadcastJobTemplate",
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            ),
            (".status.type", json!({"type": "string"})),
            (".status.active", json!({"type": "array"})),
            (
                ".status.lastScheduleTime",
                json!({"type": "string", "format": "date-time"}),
            ),
        ] {
            assert_eq!(facts(path), expected, "{name} {path}");
        }
        let policy = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["concurrencyPolicy"];
        assert_eq!(policy["enum"], json!(["Allow", "Forbid", "Replace"]));
        let prefix = ".spec.template.imageListPullJobTemplate.spec";
        let template: BTreeMap<String, serde_json::Value> = ours
            .iter()
            .filter_map(|(path, facts)| Some((path.strip_prefix(prefix)?.to_owned(), facts.clone())))
            .collect();
        let list: BTreeMap<String, serde_json::Value> =
            serde_json::from_value(reference["crds"][format!("ImageListPullJob/{name}")]["fields"].clone()).unwrap();
        let list_spec: BTreeMap<String, serde_json::Value> = list
            .iter()
            .filter_map(|(path, facts)| Some((path.strip_prefix(".spec")?.to_owned(), facts.clone())))
            .collect();
        assert_eq!(template, list_spec, "{name}");
    }
    let columns: Vec<String> = columns(CRON_JOBS, "v1beta1");
    assert_eq!(columns, ["Schedule", "Type", "LastScheduleTime", "AGE"]);
}
