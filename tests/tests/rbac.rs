//! RBAC with kubectl: a ServiceAccount's token (issued by the test API server
//! or by TokenRequest) may do exactly what its Role grants.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use prewarm_testapi::{Options, TestApi};

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
