//! README's "Coming from OpenKruise", walked on the local cluster: OpenKruise's
//! objects that serve the same kinds (its two webhook configurations, as its
//! 1.5 chart ships them and kruise-manager fills their `template` annotation,
//! and its kruise-daemon DaemonSet) make prewarm refuse to start, saying what
//! conflicts; `openkruise.allow=true` runs anyway; `kubectl prewarm openkruise
//! release` and OpenKruise's `KruiseDaemon=false` clear the way.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::e2e::{E2e, MINUTE, completed, up, wait_until};
use prewarm_testapi::installed::NAMESPACE;
use prewarm_testapi::workloads::pod_ready;
use serde_json::{Value, json};

/// One of OpenKruise's webhooks: its name, path and resource, as its chart writes them.
fn kruise_webhook(prefix: &str, resource: &str) -> Value {
    let kind = resource.trim_end_matches('s');
    let verb = if prefix == "m" { "mutate" } else { "validate" };
    json!({
        "name": format!("{prefix}{kind}.kb.io"),
        "admissionReviewVersions": ["v1", "v1beta1"],
        "clientConfig": {"service": {"name": "kruise-webhook-service", "namespace": "kruise-system",
            "path": format!("/{verb}-apps-kruise-io-v1alpha1-{kind}")}},
        "failurePolicy": "Fail",
        "sideEffects": "None",
        "rules": [{"apiGroups": ["apps.kruise.io"], "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE"], "resources": [resource]}]
    })
}

/// OpenKruise's webhook configuration of `kind` (`Mutating`, `Validating`),
/// with the webhooks for CloneSets and for prewarm's three kinds, and the
/// `template` annotation kruise-manager rebuilds it from.
fn kruise_configuration(kind: &str) -> Value {
    let prefix = if kind == "Mutating" { "m" } else { "v" };
    let webhooks: Vec<Value> = ["clonesets", "imagelistpulljobs", "imagepulljobs", "nodeimages"]
        .iter()
        .map(|resource| kruise_webhook(prefix, resource))
        .collect();
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": format!("{kind}WebhookConfiguration"),
        "metadata": {"name": format!("kruise-{}-webhook-configuration", kind.to_lowercase()),
            "annotations": {"template": Value::Array(webhooks.clone()).to_string()}},
        "webhooks": webhooks
    })
}

/// kruise-daemon's DaemonSet as OpenKruise's chart makes it.
fn kruise_daemon() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "kruise-daemon", "namespace": "kruise-system", "labels": {"control-plane": "daemon"}},
        "spec": {"selector": {"matchLabels": {"control-plane": "daemon"}},
            "template": {"metadata": {"labels": {"control-plane": "daemon"}},
                "spec": {"hostNetwork": true, "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "daemon", "image": "openkruise/kruise-manager:v1.5.3",
                        "command": ["/kruise-daemon"], "args": ["--feature-gates=ImagePullJobGate=true"]}]}}}
    })
}

/// The controller Pod's log, all its containers' instances.
fn controller_log(e2e: &E2e) -> String {
    e2e.cluster.pods.logs_of(NAMESPACE, "prewarm-controller-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prewarm_refuses_to_run_next_to_openkruise_until_it_lets_go() {
    let mut e2e = up(true).await;
    tokio::task::block_in_place(|| {
        for object in [
            kruise_configuration("Mutating"),
            kruise_configuration("Validating"),
            kruise_daemon(),
        ] {
            assert!(e2e.apply(&object.to_string()).ok, "{object}");
        }

        // The check says what conflicts and what to change.
        let checked = e2e.plugin(&["openkruise", "check"]);
        assert!(!checked.ok, "{}", checked.stdout);
        for wanted in [
            "ValidatingWebhookConfiguration kruise-validating-webhook-configuration: webhook vimagepulljob.kb.io handles imagepulljobs of apps.kruise.io",
            "DaemonSet kruise-system/kruise-daemon",
            "KruiseDaemon=false",
            "kubectl prewarm openkruise release",
        ] {
            assert!(checked.stderr.contains(wanted), "{wanted}:\n{}", checked.stderr);
        }

        // A restarted controller refuses to start, with the same words in its log.
        let controller = e2e.cluster.pods_named(NAMESPACE, "prewarm-controller-")[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        e2e.kubectl.ok(&["delete", "pod", "-n", NAMESPACE, &controller]);
        wait_until("the new controller to refuse", MINUTE, || {
            controller_log(&e2e).contains("OpenKruise serves ImagePullJob, ImageListPullJob and NodeImage too")
        });
        let refused = &e2e.cluster.pods_named(NAMESPACE, "prewarm-controller-")[0];
        assert!(!pod_ready(refused), "{:#}", refused["status"]);

        // A deliberate migration window: both run, and prewarm says so.
        e2e.cluster.allow_openkruise(true);
        assert!(controller_log(&e2e).contains("--allow-openkruise: running next to OpenKruise"));

        // Letting go: OpenKruise's webhooks for these kinds removed (dry run first), its daemon off.
        let dry = e2e.plugin(&["openkruise", "release", "--dry-run"]);
        assert!(dry.ok, "{}", dry.stderr);
        assert!(
            dry.stdout.contains(
                "mutatingwebhookconfiguration/kruise-mutating-webhook-configuration would be patched (dry run): removing mimagelistpulljob.kb.io, mimagepulljob.kb.io, mnodeimage.kb.io"
            ),
            "{}",
            dry.stdout
        );
        assert_eq!(webhook_names(&e2e, "mutating").len(), 4, "the dry run changed nothing");
        let released = e2e.plugin(&["openkruise", "release"]);
        assert!(released.ok, "{}", released.stderr);
        assert!(
            released
                .stdout
                .contains("validatingwebhookconfiguration/kruise-validating-webhook-configuration patched"),
            "{}",
            released.stdout
        );
        for kind in ["mutating", "validating"] {
            let prefix = &kind[..1];
            assert_eq!(webhook_names(&e2e, kind), [format!("{prefix}cloneset.kb.io")]);
            let config = e2e.get(&[
                &format!("{kind}webhookconfiguration"),
                &format!("kruise-{kind}-webhook-configuration"),
            ]);
            let template: Value =
                serde_json::from_str(config["metadata"]["annotations"]["template"].as_str().unwrap()).unwrap();
            assert_eq!(template.as_array().unwrap().len(), 1, "{template:#}");
        }
        // What `helm upgrade kruise … --set featureGates="KruiseDaemon=false"` does to the daemon.
        e2e.kubectl
            .ok(&["delete", "daemonset", "-n", "kruise-system", "kruise-daemon"]);
        let checked = e2e.plugin(&["openkruise", "check"]);
        assert!(checked.ok, "{}", checked.stderr);

        // Without the window prewarm starts, and jobs run.
        e2e.cluster.allow_openkruise(false);
        assert!(
            e2e.apply(&e2e.seed("02-imagepulljob-names.yaml", "after-openkruise"))
                .ok
        );
        let status = e2e.wait_job("imagepulljob", "after-openkruise", MINUTE, completed);
        assert_eq!(status["succeeded"], 2, "{status:#}");
    });
}

fn webhook_names(e2e: &E2e, kind: &str) -> Vec<String> {
    let config = e2e.get(&[
        &format!("{kind}webhookconfiguration"),
        &format!("kruise-{kind}-webhook-configuration"),
    ]);
    config["webhooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["name"].as_str().map(str::to_owned))
        .collect()
}
