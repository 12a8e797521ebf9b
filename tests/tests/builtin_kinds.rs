//! The built-in kinds an install applies, as kubectl sees them: apply and
//! re-apply, tables, namespaces that terminate, protobuf bodies from kubectl's
//! create subcommands, and malformed manifests refused as on a cluster.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use prewarm_testapi::{Options, TestApi};
use serde_json::json;

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
        let pdb_version = || kubectl.resource_version("pdb", "prewarm-system", "prewarm-webhook");
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
        let created = [
            vec![
                "create",
                "deployment",
                "web",
                "--image=nginx:1.27",
                "--replicas=2",
                "--port=80",
            ],
            vec!["create", "service", "clusterip", "web", "--tcp=80:8080"],
            vec![
                "create",
                "role",
                "reader",
                "--verb=get",
                "--verb=list",
                "--resource=secrets",
            ],
            vec![
                "create",
                "rolebinding",
                "reader",
                "--role=reader",
                "--serviceaccount=team:puller",
            ],
            vec![
                "create",
                "clusterrole",
                "node-reader",
                "--verb=get,list,watch",
                "--resource=nodes",
            ],
            vec![
                "create",
                "clusterrolebinding",
                "node-reader",
                "--clusterrole=node-reader",
                "--serviceaccount=team:puller",
            ],
            vec![
                "create",
                "poddisruptionbudget",
                "web",
                "--selector=app=web",
                "--min-available=1",
            ],
        ];
        for args in created {
            kubectl.ok(&[args.as_slice(), &["-n", "team"]].concat());
        }
        let get = |kind: &str, name: &str| -> serde_json::Value {
            serde_json::from_str(&kubectl.ok(&["get", kind, name, "-n", "team", "-o", "json"])).unwrap()
        };
        let deployment = get("deployment", "web");
        assert_eq!(deployment["spec"]["replicas"], 2);
        assert_eq!(deployment["spec"]["selector"]["matchLabels"]["app"], "web");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "nginx:1.27");
        assert_eq!(container["ports"][0]["containerPort"], 80);
        let service = get("service", "web");
        assert_eq!(service["spec"]["type"], "ClusterIP");
        assert_eq!(service["spec"]["ports"][0]["port"], 80);
        assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(service["spec"]["selector"]["app"], "web");
        let role = get("role", "reader");
        assert_eq!(
            role["rules"],
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}])
        );
        let binding = get("rolebinding", "reader");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "puller", "namespace": "team"}])
        );
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"})
        );
        let cluster_role = get("clusterrole", "node-reader");
        assert_eq!(cluster_role["rules"][0]["verbs"], json!(["get", "list", "watch"]));
        let cluster_binding = get("clusterrolebinding", "node-reader");
        assert_eq!(cluster_binding["roleRef"]["kind"], "ClusterRole");
        let budget = get("poddisruptionbudget", "web");
        assert_eq!(budget["spec"]["minAvailable"], 1);
        assert_eq!(budget["spec"]["selector"]["matchLabels"]["app"], "web");
        // A TokenRequest (what the token is worth is tests/rbac.rs's business).
        kubectl.ok(&[
            "run",
            "web",
            "-n",
            "team",
            "--image=nginx:1.27",
            "--env=MODE=fast",
            "--restart=Never",
        ]);
        let pod = get("pod", "web");
        assert_eq!(
            pod["spec"]["containers"][0]["env"],
            json!([{"name": "MODE", "value": "fast"}])
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        // A kind this server does not serve: kube-apiserver's words for it.
        let unserved = kubectl.run(&["create", "job", "once", "-n", "team", "--image=busybox"]);
        assert!(!unserved.ok);
        assert!(
            unserved
                .stderr
                .contains("the server could not find the requested resource"),
            "{}",
            unserved.stderr
        );
        let token = kubectl.ok(&["create", "token", "puller", "-n", "team"]);
        assert!(!token.trim().is_empty(), "no token");
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
