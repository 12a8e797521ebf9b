//! RBAC with kubectl: a ServiceAccount's token (issued by the test API server
//! or by TokenRequest) may do exactly what its Role grants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use prewarm_testapi::{Options, TestApi};

/// A TLS test API server, its admin's kubectl, and a directory for manifests:
/// kubectl sends bearer tokens only over a secure connection.
async fn over_https() -> (TestApi, Kubectl, tempfile::TempDir) {
    let api = TestApi::start(Options {
        tls: true,
        ..Options::default()
    })
    .await
    .unwrap();
    let admin = Kubectl::new(&api);
    (api, admin, tempfile::tempdir().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_may_do_exactly_what_its_role_grants() {
    let (api, admin, dir) = over_https().await;
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

/// TokenRequest's `boundObjectRef`, as kube-apiserver's
/// `pkg/registry/core/serviceaccount/storage/token.go` handles it: the token
/// names its Pod (and that Pod's node) or its Node in `userInfo.extra`, and
/// stops authenticating when that object is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_tokens_name_their_pod_and_node_and_end_with_them() {
    let (_api, admin, dir) = over_https().await;
    let objects = dir.path().join("objects.yaml");
    std::fs::write(
        &objects,
        r#"apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: agent, namespace: team}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Pod
metadata: {name: on-n1, namespace: team}
spec: {serviceAccountName: agent, nodeName: n1, containers: [{name: c, image: pause}]}
---
apiVersion: v1
kind: Pod
metadata: {name: someone-else, namespace: team}
spec: {serviceAccountName: default, nodeName: n1, containers: [{name: c, image: pause}]}
"#,
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        let applied = admin.apply(&objects, &[]);
        assert!(applied.ok, "{}", applied.stderr);
        let uid =
            |kind: &str, name: &str| admin.ok(&["get", kind, name, "-n", "team", "-o", "jsonpath={.metadata.uid}"]);
        let (node_uid, pod_uid) = (uid("node", "n1"), uid("pod", "on-n1"));
        let token = |kind: &str, name: &str| {
            let args = [
                "create",
                "token",
                "agent",
                "-n",
                "team",
                "--bound-object-kind",
                kind,
                "--bound-object-name",
                name,
            ];
            admin.ok(&args).trim().to_owned()
        };
        let who = |token: &str| admin.run(&["--token", token, "auth", "whoami", "-o", "json"]);
        let extra = |token: &str| -> serde_json::Value {
            let ran = who(token);
            assert!(ran.ok, "{}", ran.stderr);
            serde_json::from_str::<serde_json::Value>(&ran.stdout).unwrap()["status"]["userInfo"]["extra"].clone()
        };

        let pod_token = token("Pod", "on-n1");
        let pod_extra = extra(&pod_token);
        assert_eq!(
            pod_extra["authentication.kubernetes.io/pod-name"],
            serde_json::json!(["on-n1"])
        );
        assert_eq!(
            pod_extra["authentication.kubernetes.io/pod-uid"],
            serde_json::json!([pod_uid])
        );
        assert_eq!(
            pod_extra["authentication.kubernetes.io/node-name"],
            serde_json::json!(["n1"])
        );
        assert_eq!(
            pod_extra["authentication.kubernetes.io/node-uid"],
            serde_json::json!([node_uid])
        );
        assert!(
            pod_extra["authentication.kubernetes.io/credential-id"][0]
                .as_str()
                .unwrap()
                .starts_with("JTI=")
        );
        let node_token = token("Node", "n1");
        let node_extra = extra(&node_token);
        assert_eq!(
            node_extra["authentication.kubernetes.io/node-name"],
            serde_json::json!(["n1"])
        );
        assert!(
            node_extra.get("authentication.kubernetes.io/pod-name").is_none(),
            "{node_extra}"
        );
        // An unbound token carries no extra at all.
        assert!(extra(admin.ok(&["create", "token", "agent", "-n", "team"]).trim()).is_null());

        let refused = |args: &[&str]| {
            let mut all = vec!["create", "token", "agent", "-n", "team"];
            all.extend_from_slice(args);
            let ran = admin.run(&all);
            assert!(!ran.ok, "{args:?} was issued");
            ran.stderr
        };
        let other = refused(&["--bound-object-kind", "Pod", "--bound-object-name", "someone-else"]);
        assert!(
            other.contains(
                "cannot bind token for serviceaccount \"agent\" to pod running with different serviceaccount name."
            ),
            "{other}"
        );
        let stale = refused(&[
            "--bound-object-kind",
            "Node",
            "--bound-object-name",
            "n1",
            "--bound-object-uid",
            "0000",
        ]);
        assert!(
            stale.contains("the UID in the bound object reference (0000) does not match the UID in record"),
            "{stale}"
        );
        let missing = refused(&["--bound-object-kind", "Node", "--bound-object-name", "n9"]);
        assert!(missing.contains("nodes \"n9\" not found"), "{missing}");

        // Deleting the bound object ends the token; the other token lives on.
        admin.ok(&["delete", "node", "n1"]);
        let ended = who(&node_token);
        assert!(!ended.ok && ended.stderr.contains("Unauthorized"), "{}", ended.stderr);
        assert!(who(&pod_token).ok);
        admin.ok(&["delete", "pod", "on-n1", "-n", "team"]);
        let ended = who(&pod_token);
        assert!(!ended.ok && ended.stderr.contains("Unauthorized"), "{}", ended.stderr);
    });
}
