//! What a user sees with kubectl against the test API server: apply, get with
//! printer columns, -o yaml, -w, wait, patch, delete; re-apply as strategic
//! merge; writes that change nothing; events in `kubectl describe`; validation
//! through the server, `explain` and `edit`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use prewarm_testapi::{Options, TestApi};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_workflow_on_image_pull_jobs() {
    let api = TestApi::start(Options::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    tokio::task::block_in_place(|| {
        let crds = kubectl.apply(&repo("manifests/crds"), &[]);
        assert!(crds.ok, "{}", crds.stderr);
        assert!(
            crds.stdout
                .contains("customresourcedefinition.apiextensions.k8s.io/imagepulljobs.apps.kruise.io created"),
            "{}",
            crds.stdout
        );
        let job = kubectl.apply(&repo("api/tests/fixtures/seed/02-imagepulljob-names.yaml"), &[]);
        assert!(job.ok, "{}", job.stderr);
        assert_eq!(job.stdout.trim(), "imagepulljob.apps.kruise.io/job-with-always created");

        let table = kubectl.ok(&["get", "imagepulljob"]);
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "TOTAL", "ACTIVE", "SUCCEED", "FAILED", "AGE"]);
        assert!(table.lines().nth(1).unwrap().starts_with("job-with-always"), "{table}");
        // The v1alpha1 columns include MESSAGE, as in the seed FAQ.
        let alpha = kubectl.ok(&["get", "imagepulljobs.v1alpha1.apps.kruise.io"]);
        assert!(alpha.lines().next().unwrap().ends_with("MESSAGE"), "{alpha}");

        let yaml = kubectl.ok(&["get", "imagepulljob", "job-with-always", "-o", "yaml"]);
        assert!(yaml.contains("image: nginx:1.9.1") && yaml.contains("uid: "), "{yaml}");

        // get -w prints the change made by a patch.
        let mut watch = kubectl
            .command(&["get", "imagepulljob", "-w", "--output-watch-events"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
        let header = lines.next().unwrap().unwrap();
        assert!(header.starts_with("EVENT") && header.contains("TOTAL"), "{header}");
        let first = lines.next().unwrap().unwrap();
        assert!(
            first.starts_with("ADDED") && first.contains("job-with-always"),
            "{first}"
        );
        kubectl.ok(&[
            "patch",
            "imagepulljob",
            "job-with-always",
            "--type=merge",
            "-p",
            r#"{"spec":{"parallelism":2}}"#,
        ]);
        kubectl.ok(&[
            "patch", "imagepulljob", "job-with-always", "--subresource=status", "--type=merge",
            "-p", r#"{"status":{"desired":4,"active":1,"succeeded":2,"failed":1,"message":"job is running, progress 75.0%"}}"#,
        ]);
        let mut saw_status = false;
        for _ in 0..4 {
            let line = lines.next().unwrap().unwrap();
            if line.contains("MODIFIED") && line.split_whitespace().any(|cell| cell == "4") {
                saw_status = true;
                break;
            }
        }
        assert!(saw_status, "kubectl get -w did not show the status change");
        let _ = watch.kill();
        let _ = watch.wait();

        let waited = kubectl.ok(&[
            "wait",
            "imagepulljob/job-with-always",
            "--for=jsonpath={.status.desired}=4",
            "--timeout=10s",
        ]);
        assert!(waited.contains("condition met"), "{waited}");
        let columns = kubectl.ok(&["get", "imagepulljob", "job-with-always", "--no-headers"]);
        let cells: Vec<&str> = columns.split_whitespace().collect();
        assert_eq!(&cells[..5], ["job-with-always", "4", "1", "2", "1"]);

        let deleted = kubectl.ok(&["delete", "imagepulljob", "job-with-always"]);
        assert!(deleted.contains("deleted"), "{deleted}");
        let gone = kubectl.run(&["get", "imagepulljob", "job-with-always"]);
        assert!(!gone.ok && gone.stderr.contains("NotFound"), "{}", gone.stderr);
    });
    // Keep the server alive until kubectl is done.
    tokio::time::sleep(Duration::from_millis(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_again_merges_webhook_configurations_strategically() {
    let api = TestApi::start(Options::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    let dir = tempfile::tempdir().unwrap();
    tokio::task::block_in_place(|| {
        let shipped = std::fs::read_to_string(repo("manifests/webhook/webhook-configurations.yaml")).unwrap();
        let first = dir.path().join("first.yaml");
        std::fs::write(&first, &shipped).unwrap();
        let applied = kubectl.apply(&first, &[]);
        assert!(applied.ok, "{}", applied.stderr);
        // A new CA bundle, applied over the first: kubectl sends a strategic merge
        // patch with only the changed caBundles and $setElementOrder/webhooks.
        let rotated = dir.path().join("rotated.yaml");
        let with_bundle = shipped.replace("  clientConfig:\n", "  clientConfig:\n    caBundle: Zm9v\n");
        assert_ne!(
            with_bundle, shipped,
            "the shipped configurations have clientConfig blocks"
        );
        std::fs::write(&rotated, with_bundle).unwrap();
        // kubectl computes that patch from the server's OpenAPI v3 document,
        // as on a cluster (it logs at -v=5 when it cannot and falls back).
        let again = kubectl.apply(&rotated, &["-v=5"]);
        assert!(again.ok, "{}", again.stderr);
        for fallback in [
            "does not support strategic merge patch",
            "error calculating patch from openapi",
        ] {
            assert!(!again.stderr.contains(fallback), "{}", again.stderr);
        }
        let document = kubectl.ok(&["get", "--raw", "/openapi/v3/apis/admissionregistration.k8s.io/v1"]);
        let document: serde_json::Value = serde_json::from_str(&document).unwrap();
        let webhooks = &document["components"]["schemas"]["admissionregistration.k8s.io.v1.ValidatingWebhookConfiguration"]
            ["properties"]["webhooks"];
        assert_eq!(webhooks["x-kubernetes-patch-merge-key"], "name", "{webhooks}");
        assert_eq!(webhooks["x-kubernetes-patch-strategy"], "merge", "{webhooks}");
        let stored = kubectl.ok(&["get", "validatingwebhookconfigurations", "-o", "json"]);
        let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
        let webhooks = stored["items"][0]["webhooks"].as_array().unwrap();
        assert!(!webhooks.is_empty());
        for webhook in webhooks {
            assert_eq!(webhook["clientConfig"]["caBundle"], "Zm9v", "{webhook}");
            assert!(
                webhook["rules"].as_array().is_some_and(|r| !r.is_empty()),
                "the rules vanished: {webhook}"
            );
        }
        assert!(
            !stored.to_string().contains("$setElementOrder"),
            "a directive was stored"
        );

        // Custom resources do not take strategic merge patches, as on a real cluster
        // (with no webhook behind these configurations, they go first).
        kubectl.ok(&[
            "delete",
            "validatingwebhookconfigurations,mutatingwebhookconfigurations",
            "--all",
        ]);
        let crds = kubectl.apply(&repo("manifests/crds"), &[]);
        assert!(crds.ok, "{}", crds.stderr);
        let job = kubectl.apply(&repo("api/tests/fixtures/seed/02-imagepulljob-names.yaml"), &[]);
        assert!(job.ok, "{}", job.stderr);
        let refused = kubectl.run(&[
            "patch",
            "imagepulljob",
            "job-with-always",
            "--type=strategic",
            "-p",
            r#"{"spec":{"parallelism":3}}"#,
        ]);
        assert!(!refused.ok);
        assert!(
            refused.stderr.contains("strategic merge patch format is not supported"),
            "{}",
            refused.stderr
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_op_writes_and_dry_runs_keep_the_resource_version() {
    let api = TestApi::start(Options::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("settings.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: default}\ndata: {a: \"1\"}\n",
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        let created = kubectl.apply(&manifest, &[]);
        assert!(created.ok, "{}", created.stderr);
        let version = || {
            kubectl.ok(&[
                "get",
                "configmap",
                "settings",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ])
        };
        let before = version();
        let same = kubectl.ok(&[
            "patch",
            "configmap",
            "settings",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"1"}}"#,
        ]);
        assert!(same.contains("(no change)"), "{same}");
        assert_eq!(version(), before);
        let dry = kubectl.ok(&[
            "patch",
            "configmap",
            "settings",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"2"}}"#,
            "--dry-run=server",
            "-o",
            "jsonpath={.metadata.resourceVersion} {.data.a}",
        ]);
        assert_eq!(dry, format!("{before} 2"));
        assert_eq!(version(), before);
        let changed = kubectl.ok(&[
            "patch",
            "configmap",
            "settings",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"3"}}"#,
        ]);
        assert!(!changed.contains("(no change)"), "{changed}");
        assert_ne!(version(), before);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_recorded_through_events_k8s_io_show_in_kubectl_describe() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let api = TestApi::start(Options::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    tokio::task::block_in_place(|| {
        assert!(kubectl.apply(&repo("manifests/crds"), &[]).ok);
        let job = kubectl.apply(&repo("api/tests/fixtures/seed/02-imagepulljob-names.yaml"), &[]);
        assert!(job.ok, "{}", job.stderr);
    });
    let client = kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap();
    let jobs: kube::Api<prewarm_api::v1beta1::ImagePullJob> = kube::Api::namespaced(client.clone(), "default");
    let job = jobs.get("job-with-always").await.unwrap();
    let recorder = Recorder::new(client, Reporter::from("prewarm-controller"));
    let regarding = kube::Resource::object_ref(&job, &());
    let event = Event {
        type_: EventType::Normal,
        reason: "SuccessfulCreate".into(),
        note: Some("created NodeImage entries for 2 nodes".into()),
        action: "Create".into(),
        secondary: None,
    };
    // The recorder creates the event, then patches it (by name, through
    // events.k8s.io) into a series when it repeats.
    recorder.publish(&event, &regarding).await.unwrap();
    recorder.publish(&event, &regarding).await.unwrap();
    tokio::task::block_in_place(|| {
        let described = kubectl.ok(&["describe", "imagepulljob", "job-with-always"]);
        let events = described.split("Events:").nth(1).unwrap_or_default();
        assert!(
            events.contains("SuccessfulCreate") && events.contains("created NodeImage entries for 2 nodes"),
            "{described}"
        );
        let selected = kubectl.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=ImagePullJob,involvedObject.name=job-with-always,type=Normal",
            "-o",
            "jsonpath={.items[*].reason}",
        ]);
        assert_eq!(selected, "SuccessfulCreate");
        let other = kubectl.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=another",
            "-o",
            "name",
        ]);
        assert!(other.trim().is_empty(), "{other}");
        let through_events_api = kubectl.ok(&["get", "events.v1.events.k8s.io", "-o", "jsonpath={.items[*].note}"]);
        assert_eq!(through_events_api, "created NodeImage entries for 2 nodes");
        let series = kubectl.ok(&[
            "get",
            "events.v1.events.k8s.io",
            "-o",
            "jsonpath={.items[*].series.count}",
        ]);
        assert_eq!(series, "2");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_validates_through_the_server_explains_and_edits() {
    let api = TestApi::start(Options::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    let dir = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(repo("api/tests/fixtures/seed/02-imagepulljob-names.yaml")).unwrap();
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        seed.replace("job-with-always", "typo")
            .replace("parallelism: 10", "parallelism: 10\n  imagePullPolicyy: Always"),
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        assert!(kubectl.apply(&repo("manifests/crds"), &[]).ok);
        // The default (strict) validation: refused, naming the field.
        let strict = kubectl.apply(&typo, &[]);
        assert!(!strict.ok);
        assert!(
            strict
                .stderr
                .contains(r#"strict decoding error: unknown field "spec.imagePullPolicyy""#),
            "{}",
            strict.stderr
        );
        // --validate=warn: created, the field dropped, with a warning.
        let warned = kubectl.apply(&typo, &["--validate=warn"]);
        assert!(warned.ok, "{}", warned.stderr);
        assert!(
            warned.stderr.contains(r#"unknown field "spec.imagePullPolicyy""#),
            "{}",
            warned.stderr
        );
        let stored = kubectl.ok(&["get", "imagepulljob", "typo", "-o", "jsonpath={.spec}"]);
        assert!(!stored.contains("imagePullPolicyy"), "{stored}");

        let built_in = kubectl.ok(&["explain", "deployment.spec.replicas"]);
        assert!(built_in.contains("Number of desired pods"), "{built_in}");
        let explained = kubectl.ok(&["explain", "imagepulljob.spec.pullPolicy"]);
        assert!(
            explained.contains("backoffLimit") && explained.contains("timeoutSeconds"),
            "{explained}"
        );

        let edited = kubectl
            .command(&["edit", "imagepulljob", "typo"])
            .env("EDITOR", "sed -i s/parallelism:.10/parallelism:\\ 4/")
            .output()
            .unwrap();
        assert!(edited.status.success(), "{}", String::from_utf8_lossy(&edited.stderr));
        let parallelism = kubectl.ok(&["get", "imagepulljob", "typo", "-o", "jsonpath={.spec.parallelism}"]);
        assert_eq!(parallelism, "4");

        // /openapi/v2 in JSON: custom and built-in schemas, references and
        // patch keys in v2's forms.
        let v2: serde_json::Value = serde_json::from_str(&kubectl.ok(&["get", "--raw", "/openapi/v2"])).unwrap();
        assert_eq!(v2["swagger"], "2.0");
        let job = &v2["definitions"]["apps.kruise.io.v1beta1.ImagePullJob"];
        assert!(
            job["properties"]["spec"]["properties"]["pullPolicy"].is_object(),
            "{job}"
        );
        let containers = &v2["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name", "{containers}");
        let text = v2.to_string();
        assert!(!text.contains("#/components/") && !text.contains("\"nullable\""));
        let patch = &v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(
            patch["consumes"]
                .as_array()
                .is_some_and(|c| c.contains(&"application/strategic-merge-patch+json".into())),
            "{patch}"
        );
    });
}
