//! What a user sees with kubectl against the test API server: apply, get with
//! printer columns, -o yaml, -w, wait, patch, delete.

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
        let with_bundle = shipped.replace("caBundle: \"\"", "caBundle: Zm9v");
        assert_ne!(
            with_bundle, shipped,
            "the shipped configurations have clientConfig blocks"
        );
        std::fs::write(&rotated, with_bundle).unwrap();
        let again = kubectl.apply(&rotated, &[]);
        assert!(again.ok, "{}", again.stderr);
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
async fn an_install_applies_and_reads_back() {
    let api = TestApi::start(Options::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("install.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: Namespace
metadata: {name: prewarm-system}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: prewarm-controller, namespace: prewarm-system}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: prewarm-controller, namespace: prewarm-system}
spec:
  replicas: 1
  selector: {matchLabels: {app: prewarm-controller}}
  template:
    metadata: {labels: {app: prewarm-controller}}
    spec:
      serviceAccountName: prewarm-controller
      containers: [{name: controller, image: prewarm:dev}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: prewarm-nodeagent, namespace: prewarm-system}
spec:
  selector: {matchLabels: {app: prewarm-nodeagent}}
  template:
    metadata: {labels: {app: prewarm-nodeagent}}
    spec: {containers: [{name: agent, image: prewarm:dev}]}
---
apiVersion: v1
kind: Service
metadata: {name: prewarm-webhook, namespace: prewarm-system}
spec: {selector: {app: prewarm-webhook}, ports: [{port: 443, targetPort: 9443}]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: prewarm-controller}
rules: [{apiGroups: [apps.kruise.io], resources: [imagepulljobs], verbs: [get, list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: prewarm-controller}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: prewarm-controller}
subjects: [{kind: ServiceAccount, name: prewarm-controller, namespace: prewarm-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: leader-election, namespace: prewarm-system}
rules: [{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: leader-election, namespace: prewarm-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: leader-election}
subjects: [{kind: ServiceAccount, name: prewarm-controller, namespace: prewarm-system}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: prewarm-webhook, namespace: prewarm-system}
spec: {minAvailable: 1, selector: {matchLabels: {app: prewarm-webhook}}}
"#,
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        let applied = kubectl.apply(&manifest, &[]);
        assert!(applied.ok, "{}", applied.stderr);
        assert_eq!(applied.stdout.lines().count(), 10, "{}", applied.stdout);
        let all = kubectl.ok(&["get", "all", "-n", "prewarm-system", "-o", "name"]);
        for expected in [
            "service/prewarm-webhook",
            "deployment.apps/prewarm-controller",
            "daemonset.apps/prewarm-nodeagent",
        ] {
            assert!(all.contains(expected), "{expected} missing from `get all`:\n{all}");
        }
        let namespace = kubectl.ok(&[
            "get",
            "namespace",
            "prewarm-system",
            "-o",
            r#"jsonpath={.status.phase} {.metadata.labels.kubernetes\.io/metadata\.name}"#,
        ]);
        assert_eq!(namespace, "Active prewarm-system");
        let version = kubectl.run(&["version"]);
        assert!(
            version.ok && !version.stderr.contains("WARNING"),
            "{}\n{}",
            version.stdout,
            version.stderr
        );
        let info = kubectl.run(&["cluster-info"]);
        assert!(
            info.ok && info.stdout.contains("is running at"),
            "{}\n{}",
            info.stdout,
            info.stderr
        );
        let pdb_version = || {
            kubectl.ok(&[
                "get",
                "pdb",
                "-n",
                "prewarm-system",
                "prewarm-webhook",
                "-o",
                "jsonpath={.metadata.resourceVersion}",
            ])
        };
        let before = pdb_version();
        let again = kubectl.apply(&manifest, &[]);
        assert!(again.ok, "{}", again.stderr);
        // kubectl always re-sends a PodDisruptionBudget's selector (its patch
        // strategy is replace) and says "configured", as on a real cluster; the
        // server sees that nothing changed.
        let changed: Vec<&str> = again
            .stdout
            .lines()
            .filter(|l| !l.ends_with("unchanged") && !l.starts_with("poddisruptionbudget.policy/"))
            .collect();
        assert!(changed.is_empty(), "{}", again.stdout);
        assert_eq!(pdb_version(), before);
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
    recorder
        .publish(
            &Event {
                type_: EventType::Normal,
                reason: "SuccessfulCreate".into(),
                note: Some("created NodeImage entries for 2 nodes".into()),
                action: "Create".into(),
                secondary: None,
            },
            &regarding,
        )
        .await
        .unwrap();
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
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_terminates_until_its_content_is_gone() {
    let api = TestApi::start(Options::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("team.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain, namespace: team}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: held, namespace: team, finalizers: [example.com/hold]}\n",
    )
    .unwrap();
    let late = dir.path().join("late.yaml");
    std::fs::write(
        &late,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: late, namespace: team}\n",
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        assert!(kubectl.apply(&manifest, &[]).ok);
        kubectl.ok(&["delete", "namespace", "team", "--wait=false"]);
        let phase = kubectl.ok(&["get", "namespace", "team", "-o", "jsonpath={.status.phase}"]);
        assert_eq!(phase, "Terminating");
        let left = kubectl.ok(&["get", "configmaps", "-n", "team", "-o", "name"]);
        assert_eq!(left.trim(), "configmap/held");
        let refused = kubectl.apply(&late, &[]);
        assert!(
            !refused.ok && refused.stderr.contains("being terminated"),
            "{}",
            refused.stderr
        );
        kubectl.ok(&[
            "patch",
            "configmap",
            "held",
            "-n",
            "team",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
        let gone = kubectl.run(&["get", "namespace", "team"]);
        assert!(
            !gone.ok && gone.stderr.contains("NotFound"),
            "{}\n{}",
            gone.stdout,
            gone.stderr
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_subcommands_send_protobuf_and_are_understood() {
    let api = TestApi::start(Options::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    tokio::task::block_in_place(|| {
        kubectl.ok(&["create", "namespace", "team"]);
        kubectl.ok(&[
            "create",
            "secret",
            "docker-registry",
            "registry",
            "-n",
            "team",
            "--docker-server=127.0.0.1:5001",
            "--docker-username=ci",
            "--docker-password=s3cret",
        ]);
        kubectl.ok(&[
            "create",
            "configmap",
            "settings",
            "-n",
            "team",
            "--from-literal=mode=fast",
        ]);
        kubectl.ok(&["create", "serviceaccount", "puller", "-n", "team"]);
        let secret = kubectl.ok(&["get", "secret", "registry", "-n", "team", "-o", "json"]);
        let secret: serde_json::Value = serde_json::from_str(&secret).unwrap();
        assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
        let config = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            secret["data"][".dockerconfigjson"].as_str().unwrap(),
        )
        .unwrap();
        let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
        assert_eq!(config["auths"]["127.0.0.1:5001"]["username"], "ci");
        let mode = kubectl.ok(&[
            "get",
            "configmap",
            "settings",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.mode}",
        ]);
        assert_eq!(mode, "fast");
        assert!(
            kubectl
                .ok(&["get", "serviceaccount", "-n", "team", "-o", "name"])
                .contains("serviceaccount/puller")
        );
        let phase = kubectl.ok(&["get", "namespace", "team", "-o", "jsonpath={.status.phase}"]);
        assert_eq!(phase, "Active");
        let refused = kubectl.run(&["create", "deployment", "web", "-n", "team", "--image=nginx"]);
        assert!(!refused.ok, "{}", refused.stdout);
        assert!(
            refused.stderr.contains("protobuf request bodies are decoded for"),
            "{}",
            refused.stderr
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_in_kinds_print_their_usual_columns() {
    let api = TestApi::start(Options::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("objects.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: Node
metadata: {name: node-1, labels: {node-role.kubernetes.io/worker: ""}}
status:
  conditions: [{type: Ready, status: "True"}]
  nodeInfo: {kubeletVersion: v1.37.0}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec: {containers: [{name: c, image: nginx}]}
---
apiVersion: v1
kind: Secret
metadata: {name: token, namespace: default}
type: Opaque
data: {a: YQ==, b: Yg==}
---
apiVersion: v1
kind: Event
metadata: {name: e1, namespace: default}
involvedObject: {kind: ImagePullJob, name: job-1, namespace: default}
reason: PullImageFailed
message: image not found
type: Warning
"#,
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        let applied = kubectl.apply(&manifest, &[]);
        assert!(applied.ok, "{}", applied.stderr);
        assert!(kubectl.apply(&repo("manifests/crds"), &[]).ok);
        let header = |args: &[&str]| -> (Vec<String>, String) {
            let out = kubectl.ok(args);
            let mut lines = out.lines();
            let head = lines.next().unwrap_or_default();
            let columns = head
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect();
            (columns, lines.next().unwrap_or_default().to_owned())
        };
        let (nodes, row) = header(&["get", "nodes"]);
        assert_eq!(nodes, ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
        assert!(
            row.contains("Ready") && row.contains("worker") && row.contains("v1.37.0"),
            "{row}"
        );
        let (pods, row) = header(&["get", "pods"]);
        assert_eq!(pods, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
        assert!(row.contains("0/1"), "{row}");
        let (secrets, row) = header(&["get", "secrets"]);
        assert_eq!(secrets, ["NAME", "TYPE", "DATA", "AGE"]);
        assert!(row.contains("Opaque") && row.contains(" 2 "), "{row}");
        let (events, row) = header(&["get", "events"]);
        assert_eq!(events, ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
        assert!(
            row.contains("imagepulljob/job-1") && row.contains("image not found"),
            "{row}"
        );
        let (crds, _) = header(&["get", "crds"]);
        assert_eq!(crds, ["NAME", "CREATED AT"]);
        let (namespaces, _) = header(&["get", "namespaces"]);
        assert_eq!(namespaces, ["NAME", "STATUS", "AGE"]);
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
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_built_in_manifests_fail_as_on_a_cluster() {
    let api = TestApi::start(Options::default()).await.unwrap();
    let kubectl = Kubectl::new(&api);
    let dir = tempfile::tempdir().unwrap();
    let wrong_type = dir.path().join("wrong.yaml");
    std::fs::write(
        &wrong_type,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\nspec:\n  replicas: two\n  selector: {matchLabels: {app: web}}\n  template: {metadata: {labels: {app: web}}, spec: {containers: [{name: c, image: nginx}]}}\n",
    )
    .unwrap();
    let typo = dir.path().join("typo.yaml");
    std::fs::write(
        &typo,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {selector: {app: web}, portz: [{port: 80}]}\n",
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        let refused = kubectl.apply(&wrong_type, &[]);
        assert!(!refused.ok);
        assert!(refused.stderr.contains("spec.replicas"), "{}", refused.stderr);
        let strict = kubectl.apply(&typo, &[]);
        assert!(!strict.ok);
        assert!(
            strict.stderr.contains(r#"unknown field "spec.portz""#),
            "{}",
            strict.stderr
        );
        let warned = kubectl.apply(&typo, &["--validate=warn"]);
        assert!(warned.ok, "{}", warned.stderr);
        let spec = kubectl.ok(&["get", "service", "web", "-o", "jsonpath={.spec}"]);
        assert!(!spec.contains("portz"), "{spec}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_may_do_exactly_what_its_role_grants() {
    // Over HTTPS: kubectl sends bearer tokens only over a secure connection.
    let api = TestApi::start(Options {
        tls: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let admin = Kubectl::new(&api);
    let dir = tempfile::tempdir().unwrap();
    let rbac = dir.path().join("rbac.yaml");
    std::fs::write(
        &rbac,
        r#"apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: team}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: read-jobs, namespace: team}
rules:
- apiGroups: [apps.kruise.io]
  resources: [imagepulljobs]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader-reads-jobs, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-jobs}
subjects: [{kind: ServiceAccount, name: reader, namespace: team}]
"#,
    )
    .unwrap();
    let kubeconfig = dir.path().join("reader");
    std::fs::write(&kubeconfig, api.kubeconfig_for("team", "reader")).unwrap();
    let reader = |args: &[&str]| {
        let output = admin.command(args).env("KUBECONFIG", &kubeconfig).output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    tokio::task::block_in_place(|| {
        assert!(admin.apply(&repo("manifests/crds"), &[]).ok);
        let applied = admin.apply(&rbac, &[]);
        assert!(applied.ok, "{}", applied.stderr);
        let job = admin.apply(
            &repo("api/tests/fixtures/seed/02-imagepulljob-names.yaml"),
            &["-n", "team"],
        );
        assert!(job.ok, "{}", job.stderr);

        let (ok, out, err) = reader(&["get", "imagepulljobs", "-n", "team", "-o", "name"]);
        assert!(
            ok && out.contains("imagepulljob.apps.kruise.io/job-with-always"),
            "{out}{err}"
        );
        let (ok, _, err) = reader(&["delete", "imagepulljob", "job-with-always", "-n", "team"]);
        assert!(!ok);
        assert!(
            err.contains(r#"imagepulljobs.apps.kruise.io "job-with-always" is forbidden: User "system:serviceaccount:team:reader" cannot delete resource "imagepulljobs" in API group "apps.kruise.io" in the namespace "team""#),
            "{err}"
        );
        let (ok, _, err) = reader(&["get", "imagepulljobs", "-n", "default"]);
        assert!(!ok && err.contains("cannot list resource \"imagepulljobs\""), "{err}");
        let (ok, _, err) = reader(&["get", "secrets", "-n", "team"]);
        assert!(
            !ok && err.contains("cannot list resource \"secrets\" in API group \"\""),
            "{err}"
        );

        let (_, yes, err) = reader(&["auth", "can-i", "list", "imagepulljobs.apps.kruise.io", "-n", "team"]);
        assert_eq!(yes.trim(), "yes", "{err}");
        let (_, no, _) = reader(&["auth", "can-i", "delete", "imagepulljobs.apps.kruise.io", "-n", "team"]);
        assert_eq!(no.trim(), "no");
        let (ok, who, err) = reader(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
        assert!(ok, "{err}");
        assert_eq!(who, "system:serviceaccount:team:reader");

        // A token from TokenRequest (kubectl create token) works the same way.
        let token = admin.ok(&["create", "token", "reader", "-n", "team"]);
        let (ok, out, err) = reader(&[
            "--token",
            token.trim(),
            "get",
            "imagepulljobs",
            "-n",
            "team",
            "-o",
            "name",
        ]);
        assert!(ok && out.contains("job-with-always"), "{out}{err}");
        let (ok, _, err) = reader(&["--token", "made-up", "get", "imagepulljobs", "-n", "team"]);
        assert!(!ok && err.contains("Unauthorized"), "{err}");
    });
}
