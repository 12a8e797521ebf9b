//! OpenKruise serving the same kinds. Its kruise-manager registers admission
//! webhooks for ImagePullJob, ImageListPullJob and NodeImage whatever its
//! feature gates (with `KruiseDaemon` off they refuse every write with 403),
//! and its kruise-daemon pulls what NodeImages ask: next to prewarm, both
//! would judge and act on the same objects. The controller and the webhook
//! look for both at start and refuse to run (unless `--allow-openkruise`)
//! naming what conflicts and what to change; `kubectl prewarm openkruise
//! release` makes the webhook change.

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::DaemonSet;
use serde_json::{Value, json};

/// OpenKruise's webhook configurations and node daemon, by the names its chart gives them.
pub const MUTATING: &str = "kruise-mutating-webhook-configuration";
pub const VALIDATING: &str = "kruise-validating-webhook-configuration";
pub const DAEMON_SET: &str = "kruise-daemon";
/// Where OpenKruise's chart installs it.
pub const DEFAULT_NAMESPACE: &str = "kruise-system";

const GROUP: &str = "apps.kruise.io";
const RESOURCES: [&str; 3] = ["imagepulljobs", "imagelistpulljobs", "nodeimages"];
/// kruise-manager keeps the webhooks it serves in this annotation and
/// rebuilds the list from it, so a webhook removed from the list alone comes back.
const TEMPLATE_ANNOTATION: &str = "template";

/// One OpenKruise object that serves prewarm's kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `Kind name` (`DaemonSet kruise-system/kruise-daemon`).
    pub object: String,
    pub detail: String,
}

/// The resources of ours that one webhook's rules name (`imagepulljobs`, …),
/// with `apps.kruise.io` named too; wildcards do not count: a policy engine
/// that watches everything is not OpenKruise.
fn our_resources(webhook: &Value) -> Vec<String> {
    let mut named = Vec::new();
    for rule in webhook["rules"].as_array().into_iter().flatten() {
        let names = |key: &str, wanted: &str| {
            rule[key]
                .as_array()
                .is_some_and(|values| values.iter().any(|v| v == wanted))
        };
        if !names("apiGroups", GROUP) {
            continue;
        }
        for resource in RESOURCES {
            let covered = names("resources", resource) || names("resources", &format!("{resource}/status"));
            if covered && !named.iter().any(|n| n == resource) {
                named.push(resource.to_owned());
            }
        }
    }
    named
}

/// The positions and names of `webhooks` (a configuration's list) that
/// handle our kinds, with the resources each names.
fn serving(webhooks: &Value) -> Vec<(usize, String, Vec<String>)> {
    webhooks
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(index, webhook)| {
            let resources = our_resources(webhook);
            let name = webhook["name"].as_str().unwrap_or_default().to_owned();
            (!resources.is_empty()).then_some((index, name, resources))
        })
        .collect()
}

/// What of OpenKruise serves our kinds: its two webhook configurations (as
/// JSON, `(kind, object)`) and its daemon's DaemonSet, each when present.
pub fn found(configurations: &[(&str, &Value)], daemon_set: Option<&Value>) -> Vec<Found> {
    let mut found = Vec::new();
    for (kind, config) in configurations {
        let name = config["metadata"]["name"].as_str().unwrap_or_default();
        for (_, webhook, resources) in serving(&config["webhooks"]) {
            found.push(Found {
                object: format!("{kind} {name}"),
                detail: format!("webhook {webhook} handles {} of {GROUP}", resources.join(", ")),
            });
        }
    }
    if let Some(daemon_set) = daemon_set {
        let (namespace, name) = (
            daemon_set["metadata"]["namespace"].as_str().unwrap_or_default(),
            daemon_set["metadata"]["name"].as_str().unwrap_or_default(),
        );
        found.push(Found {
            object: format!("DaemonSet {namespace}/{name}"),
            detail: "OpenKruise's node daemon, which pulls what NodeImages ask".to_owned(),
        });
    }
    found
}

/// The message for an admin: what conflicts and what to change.
pub fn conflict_message(found: &[Found]) -> String {
    let mut message = String::from(
        "OpenKruise serves ImagePullJob, ImageListPullJob and NodeImage too, and would act on the same objects as prewarm:",
    );
    for item in found {
        message.push_str(&format!("\n  - {}: {}", item.object, item.detail));
    }
    if found.iter().any(|f| f.object.starts_with("DaemonSet")) {
        message.push_str(
            "\nTurn OpenKruise's node daemon off (this also stops its NodeImage, ImagePullJob and ImageListPullJob controllers, and its other features that need kruise-daemon): helm upgrade kruise openkruise/kruise --reuse-values --set featureGates=\"KruiseDaemon=false\"",
        );
    }
    if found.iter().any(|f| f.object.contains("WebhookConfiguration")) {
        message.push_str(
            "\nRemove OpenKruise's webhooks for these kinds (kruise-manager serves them whatever its gates): kubectl prewarm openkruise release",
        );
    }
    message.push_str(
        "\nOr run anyway for a deliberate migration window with --allow-openkruise (chart value openkruise.allow=true). See README, \"Coming from OpenKruise\".",
    );
    message
}

/// A JSON Patch that removes from `config` (a webhook configuration as
/// JSON) the webhooks serving our kinds, from its list and from the
/// `template` annotation kruise-manager rebuilds it from; `None` when there
/// are none. Each removal is tested against the webhook's name, so a
/// configuration changed since it was read is refused, not mangled.
pub fn release_patch(config: &Value) -> Result<Option<Value>, String> {
    let name = config["metadata"]["name"].as_str().unwrap_or_default();
    let mut patch = Vec::new();
    let listed = serving(&config["webhooks"]);
    for (index, webhook, _) in listed.iter().rev() {
        patch.push(json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": webhook}));
        patch.push(json!({"op": "remove", "path": format!("/webhooks/{index}")}));
    }
    let template = config["metadata"]["annotations"][TEMPLATE_ANNOTATION]
        .as_str()
        .unwrap_or_default();
    if !template.is_empty() {
        let mut webhooks: Value = serde_json::from_str(template)
            .map_err(|e| format!("{name}: annotation {TEMPLATE_ANNOTATION} is not JSON: {e}"))?;
        let templated = serving(&webhooks);
        if !templated.is_empty() {
            if let Some(list) = webhooks.as_array_mut() {
                for (index, _, _) in templated.iter().rev() {
                    list.remove(*index);
                }
            }
            let path = format!("/metadata/annotations/{TEMPLATE_ANNOTATION}");
            patch.push(json!({"op": "test", "path": path, "value": template}));
            patch.push(json!({"op": "replace", "path": path, "value": webhooks.to_string()}));
        }
    }
    Ok((!patch.is_empty()).then_some(Value::Array(patch)))
}

/// OpenKruise's webhook configurations and daemon as they are in the
/// cluster, each `None` when absent.
#[derive(Debug)]
pub struct Installed {
    pub mutating: Option<Value>,
    pub validating: Option<Value>,
    pub daemon_set: Option<Value>,
}

impl Installed {
    /// Reads them by name (the install's RBAC grants `get` on these names only).
    pub async fn read(client: &kube::Client, namespace: &str) -> Result<Self, kube::Error> {
        let mutating = kube::Api::<MutatingWebhookConfiguration>::all(client.clone())
            .get_opt(MUTATING)
            .await?;
        let validating = kube::Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .get_opt(VALIDATING)
            .await?;
        let daemon_set = kube::Api::<DaemonSet>::namespaced(client.clone(), namespace)
            .get_opt(DAEMON_SET)
            .await?;
        let json = |object: Option<Value>| object.filter(|v| !v.is_null());
        Ok(Self {
            mutating: json(mutating.and_then(|c| serde_json::to_value(c).ok())),
            validating: json(validating.and_then(|c| serde_json::to_value(c).ok())),
            daemon_set: json(daemon_set.and_then(|d| serde_json::to_value(d).ok())),
        })
    }

    pub fn found(&self) -> Vec<Found> {
        let mut configurations = Vec::new();
        if let Some(config) = &self.mutating {
            configurations.push(("MutatingWebhookConfiguration", config));
        }
        if let Some(config) = &self.validating {
            configurations.push(("ValidatingWebhookConfiguration", config));
        }
        found(&configurations, self.daemon_set.as_ref())
    }
}

/// `kubectl prewarm openkruise release`: removes OpenKruise's webhooks for
/// our kinds from its configurations (list and template); with `dry_run`,
/// only says what it would remove. Returns a line per configuration.
pub async fn release(client: &kube::Client, dry_run: bool) -> Result<Vec<String>, String> {
    let installed = Installed::read(client, DEFAULT_NAMESPACE)
        .await
        .map_err(|e| format!("reading OpenKruise's webhook configurations: {e}"))?;
    let mut said = Vec::new();
    for (resource, config) in [
        ("mutatingwebhookconfiguration", &installed.mutating),
        ("validatingwebhookconfiguration", &installed.validating),
    ] {
        let Some(config) = config else { continue };
        let name = config["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let webhooks: Vec<String> = serving(&config["webhooks"]).into_iter().map(|(_, w, _)| w).collect();
        let Some(patch) = release_patch(config)? else {
            said.push(format!("{resource}/{name} unchanged: it serves none of these kinds"));
            continue;
        };
        let removed = if webhooks.is_empty() {
            "its template's webhooks for these kinds".to_owned()
        } else {
            webhooks.join(", ")
        };
        if dry_run {
            said.push(format!(
                "{resource}/{name} would be patched (dry run): removing {removed}"
            ));
            continue;
        }
        let patch: json_patch::Patch =
            serde_json::from_value(patch).map_err(|e| format!("{resource}/{name}: the patch: {e}"))?;
        let params = kube::api::PatchParams::default();
        let result = if resource.starts_with("mutating") {
            kube::Api::<MutatingWebhookConfiguration>::all(client.clone())
                .patch(&name, &params, &kube::api::Patch::<()>::Json(patch))
                .await
                .map(|_| ())
        } else {
            kube::Api::<ValidatingWebhookConfiguration>::all(client.clone())
                .patch(&name, &params, &kube::api::Patch::<()>::Json(patch))
                .await
                .map(|_| ())
        };
        result.map_err(|e| format!("patching {resource}/{name}: {e}"))?;
        said.push(format!("{resource}/{name} patched: removed {removed}"));
    }
    if said.is_empty() {
        said.push("no OpenKruise webhook configuration found".to_owned());
    }
    Ok(said)
}

/// The flags of the binaries that check at start.
#[derive(Debug, Clone, clap::Args)]
pub struct OpenKruiseFlags {
    /// Run even when OpenKruise serves ImagePullJob, ImageListPullJob and
    /// NodeImage too (its webhooks, its kruise-daemon): for a deliberate
    /// migration window, in which both act on the same objects.
    #[arg(long)]
    pub allow_openkruise: bool,
    /// Where OpenKruise's kruise-daemon DaemonSet would be.
    #[arg(long, default_value = DEFAULT_NAMESPACE)]
    pub openkruise_namespace: String,
}

/// At start: refuses (`Err` with the message) when OpenKruise serves our
/// kinds, unless `allow`; a check that cannot be made is logged and skipped.
pub async fn check_at_start(client: &kube::Client, flags: &OpenKruiseFlags) -> Result<(), String> {
    let found = match Installed::read(client, &flags.openkruise_namespace).await {
        Ok(installed) => installed.found(),
        Err(e) => {
            tracing::warn!(error = %e, "could not look for an OpenKruise install serving the same kinds");
            return Ok(());
        }
    };
    if found.is_empty() {
        return Ok(());
    }
    let message = conflict_message(&found);
    if flags.allow_openkruise {
        tracing::warn!("--allow-openkruise: running next to OpenKruise. {message}");
        return Ok(());
    }
    Err(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(name: &str, group: &str, resource: &str) -> Value {
        json!({"name": name, "rules": [{"apiGroups": [group], "apiVersions": ["v1alpha1"],
            "operations": ["CREATE", "UPDATE"], "resources": [resource]}]})
    }

    fn openkruise_config(template: Option<&Value>) -> Value {
        let webhooks = json!([
            webhook("mpod.kb.io", "", "pods"),
            webhook("mimagelistpulljob.kb.io", GROUP, "imagelistpulljobs"),
            webhook("mimagepulljob.kb.io", GROUP, "imagepulljobs"),
            webhook("mcloneset.kb.io", GROUP, "clonesets"),
            webhook("mnodeimage.kb.io", GROUP, "nodeimages"),
        ]);
        let annotation = template.map_or(String::new(), Value::to_string);
        json!({"metadata": {"name": MUTATING, "annotations": {"template": annotation}}, "webhooks": webhooks})
    }

    #[test]
    fn openkruise_webhooks_and_daemon_are_found_by_what_they_serve() {
        let config = openkruise_config(None);
        let daemon = json!({"metadata": {"namespace": "kruise-system", "name": DAEMON_SET}});
        let found = found(&[("MutatingWebhookConfiguration", &config)], Some(&daemon));
        let objects: Vec<_> = found.iter().map(|f| f.detail.as_str()).collect();
        assert_eq!(
            objects,
            [
                "webhook mimagelistpulljob.kb.io handles imagelistpulljobs of apps.kruise.io",
                "webhook mimagepulljob.kb.io handles imagepulljobs of apps.kruise.io",
                "webhook mnodeimage.kb.io handles nodeimages of apps.kruise.io",
                "OpenKruise's node daemon, which pulls what NodeImages ask",
            ]
        );
        assert_eq!(found[3].object, "DaemonSet kruise-system/kruise-daemon");
        let message = conflict_message(&found);
        for wanted in [
            "MutatingWebhookConfiguration kruise-mutating-webhook-configuration: webhook mimagepulljob.kb.io",
            "KruiseDaemon=false",
            "kubectl prewarm openkruise release",
            "--allow-openkruise",
        ] {
            assert!(message.contains(wanted), "{wanted} in {message}");
        }
    }

    #[test]
    fn wildcards_and_other_kinds_are_not_openkruise_serving_ours() {
        let everything = json!({"metadata": {"name": "policy-engine"}, "webhooks": [
            {"name": "all.policy.example", "rules": [{"apiGroups": ["*"], "resources": ["*"], "operations": ["*"]}]},
            webhook("v.example", GROUP, "clonesets"),
        ]});
        assert!(found(&[("ValidatingWebhookConfiguration", &everything)], None).is_empty());
        assert_eq!(conflict_message(&[]).lines().count(), 2, "no advice without a conflict");
    }

    #[test]
    fn the_release_patch_removes_our_kinds_from_the_list_and_the_template() {
        let template = openkruise_config(None)["webhooks"].clone();
        let mut config = openkruise_config(Some(&template));
        let patch = release_patch(&config).unwrap().unwrap();
        let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
        json_patch::patch(&mut config, &patch).unwrap();
        let names = |webhooks: &Value| -> Vec<String> {
            webhooks
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(names(&config["webhooks"]), ["mpod.kb.io", "mcloneset.kb.io"]);
        let rebuilt: Value =
            serde_json::from_str(config["metadata"]["annotations"]["template"].as_str().unwrap()).unwrap();
        assert_eq!(names(&rebuilt), ["mpod.kb.io", "mcloneset.kb.io"]);
        assert_eq!(release_patch(&config).unwrap(), None, "nothing left to release");
    }

    #[test]
    fn a_configuration_changed_since_it_was_read_is_not_patched() {
        let config = openkruise_config(None);
        let patch = release_patch(&config).unwrap().unwrap();
        let mut changed = config.clone();
        changed["webhooks"].as_array_mut().unwrap().remove(0);
        let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
        assert!(json_patch::patch(&mut changed, &patch).is_err());
    }

    #[test]
    fn a_template_that_is_not_json_is_named() {
        let mut config = openkruise_config(None);
        config["metadata"]["annotations"]["template"] = json!("{not json");
        let error = release_patch(&config).unwrap_err();
        assert!(
            error.contains("kruise-mutating-webhook-configuration: annotation template is not JSON"),
            "{error}"
        );
    }
}
